//! `InterPodAffinity`: required pod affinity and anti-affinity (the pod's own,
//! and existing pods' anti-affinity against it) filter nodes by topology
//! domain; preferred terms score them.

use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm};
use kybern_apimachinery::labels::Selector;

use super::matching::{label_selector, selector_matches};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::topology::{DomainCounts, DomainSet};

const FILTER: &str = "InterPodAffinity/filter";
const SCORE: &str = "InterPodAffinity/score";

/// `InterPodAffinity`.
pub struct InterPodAffinity;

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
}

/// A pod affinity term compiled for matching against other pods.
#[derive(Clone, Debug)]
pub struct Term {
    key: String,
    selector: Selector,
    /// Namespaces the term looks in; `None` for all (an empty `namespaceSelector`).
    namespaces: Option<Vec<String>>,
}

impl Term {
    /// Compiles a term of a pod in `namespace`; a term without a selector matches no pod.
    fn new(t: &PodAffinityTerm, namespace: &str) -> Option<Self> {
        let selector = label_selector(t.label_selector.as_ref()?)?;
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let all = t
            .namespace_selector
            .as_ref()
            .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none());
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(namespace.to_owned());
        }
        Some(Term {
            key: t.topology_key.clone(),
            selector,
            namespaces: (!all).then_some(namespaces),
        })
    }

    fn matches(&self, pod: &PodInfo) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|ns| ns.contains(&pod.namespace))
            && selector_matches(&self.selector, &pod.labels)
    }
}

/// A pod's required anti-affinity terms, compiled once when the pod is seen
/// (existing pods' terms are checked against every newcomer).
pub fn compile_required_anti(
    pod: &kybern_apimachinery::cached_pod::CachedPod,
    namespace: &str,
) -> Vec<Term> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter_map(|t| Term::new(t, namespace))
        .collect()
}

fn affinity(pod: &PodInfo) -> Option<&Affinity> {
    pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref())
}

fn required_terms(pod: &PodInfo, anti: bool) -> Vec<Term> {
    let a = affinity(pod);
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    };
    terms
        .into_iter()
        .flatten()
        .filter_map(|t| Term::new(t, &pod.namespace))
        .collect()
}

/// Domains of one topology key named by the terms that barred them.
struct KeyedSet {
    key_name: String,
    set: DomainSet,
}

/// What the filter checks, computed once per cycle.
#[derive(Default)]
struct Domains {
    /// Per affinity term: the domains holding a matching pod.
    affinity: Vec<DomainSet>,
    /// Whether no pod matches the affinity terms but the pod matches them itself.
    affinity_self_only: bool,
    /// Per anti-affinity term: the domains holding a matching pod.
    anti: Vec<DomainSet>,
    /// Domains barred by existing pods' anti-affinity, one set per topology key.
    existing_anti: Vec<KeyedSet>,
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cache: &ClusterCache) -> Status {
        let aff = required_terms(pod, false);
        let anti = required_terms(pod, true);
        let table = cache.label_table();
        let mut d = Domains {
            affinity: aff.iter().map(|t| DomainSet::new(&t.key, table)).collect(),
            anti: anti.iter().map(|t| DomainSet::new(&t.key, table)).collect(),
            ..Default::default()
        };
        // The pod's own terms look at every placed pod; existing pods' terms
        // come only from the few pods that have required anti-affinity.
        if !aff.is_empty() || !anti.is_empty() {
            let terms: Vec<&Term> = aff.iter().chain(&anti).collect();
            let mut sets: Vec<&mut DomainSet> = d.affinity.iter_mut().chain(&mut d.anti).collect();
            for node in cache.occupied_nodes() {
                for (t, set) in terms.iter().zip(&mut sets) {
                    let Some(v) = set.domain(&node.label_ids) else {
                        continue;
                    };
                    if !set.contains(v) && node.pods.iter().any(|other| t.matches(other)) {
                        set.insert(v);
                    }
                }
            }
        }
        let mut any_existing_anti = false;
        for (other, node) in cache.anti_affinity_pods() {
            for t in other.required_anti.iter() {
                if !t.matches(pod) {
                    continue;
                }
                // One set per topology key; there are few keys.
                let at = match d.existing_anti.iter().position(|s| s.key_name == t.key) {
                    Some(i) => i,
                    None => {
                        d.existing_anti.push(KeyedSet {
                            key_name: t.key.clone(),
                            set: DomainSet::new(&t.key, table),
                        });
                        d.existing_anti.len() - 1
                    }
                };
                let set = &mut d.existing_anti[at].set;
                if let Some(v) = set.domain(&node.label_ids) {
                    any_existing_anti = true;
                    set.insert(v);
                }
            }
        }
        d.affinity_self_only = !aff.is_empty()
            && d.affinity.iter().all(DomainSet::is_empty)
            && aff.iter().all(|t| t.matches(pod));
        if aff.is_empty() && anti.is_empty() && !any_existing_anti {
            return Status::skip();
        }
        state.write(FILTER, d);
        Status::ok()
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(d) = state.read::<Domains>(FILTER) else {
            return Status::ok();
        };
        let ids = &node.label_ids;
        // Upstream's order: the pod's affinity, its anti-affinity, then the
        // existing pods' anti-affinity.
        let affinity_ok = d.affinity.iter().all(|set| {
            set.domain(ids)
                .is_some_and(|v| d.affinity_self_only || set.contains(v))
        });
        if !affinity_ok {
            return Status::unresolvable("node(s) didn't match pod affinity rules");
        }
        if d.anti.iter().any(|set| set.holds_node(ids)) {
            return Status::unschedulable("node(s) didn't match pod anti-affinity rules");
        }
        if d.existing_anti.iter().any(|k| k.set.holds_node(ids)) {
            return Status::unschedulable(
                "node(s) didn't satisfy existing pods anti-affinity rules",
            );
        }
        Status::ok()
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        cache: &ClusterCache,
    ) -> Status {
        let a = affinity(pod);
        let weighted =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>,
             sign: i64| {
                terms
                    .into_iter()
                    .flatten()
                    .filter_map(|w| {
                        Some((
                            sign * i64::from(w.weight),
                            Term::new(&w.pod_affinity_term, &pod.namespace)?,
                        ))
                    })
                    .collect::<Vec<_>>()
            };
        let mut terms = weighted(
            a.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            1,
        );
        terms.extend(weighted(
            a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            -1,
        ));
        if terms.is_empty() {
            return Status::skip();
        }
        let table = cache.label_table();
        let mut weights: Vec<DomainCounts> = terms
            .iter()
            .map(|(_, t)| DomainCounts::new(&t.key, table))
            .collect();
        for node in cache.occupied_nodes() {
            for ((w, t), counts) in terms.iter().zip(&mut weights) {
                let Some(v) = counts.domain(&node.label_ids) else {
                    continue;
                };
                let matching = node.pods.iter().filter(|other| t.matches(other)).count() as i64;
                if matching > 0 {
                    counts.add(v, w * matching);
                }
            }
        }
        state.write(SCORE, weights);
        Status::ok()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        state
            .read::<Vec<DomainCounts>>(SCORE)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get(c.domain(&node.label_ids)?))
            .sum()
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let (Some(max), Some(min)) = (scores.iter().max().copied(), scores.iter().min().copied())
        else {
            return;
        };
        for s in scores.iter_mut() {
            *s = if max > min {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn node(name: &str, zone: &str) -> Arc<k8s_openapi::api::core::v1::Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"zone": zone, "host": name}},
                "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "10"}}
            }))
            .expect("node"),
        )
    }

    fn pod(uid: &str, app: &str, node: Option<&str>, affinity: serde_json::Value) -> PodInfo {
        let cached: kybern_apimachinery::cached_pod::CachedPod = serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid, "labels": {"app": app}},
            "spec": {"nodeName": node, "affinity": affinity, "containers": [{"name": "c"}]}
        }))
        .expect("pod");
        PodInfo::new(Arc::new(cached))
    }

    fn anti(app: &str, key: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
    }

    /// Nodes a1, a2 in zone a and b1 in zone b.
    fn cluster() -> ClusterCache {
        let mut cache = ClusterCache::default();
        for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            cache.upsert_node(node(n, z));
        }
        cache
    }

    fn verdicts(cache: &ClusterCache, incoming: &PodInfo) -> Vec<(String, bool)> {
        let mut state = CycleState::default();
        let pre = InterPodAffinity.pre_filter(&mut state, incoming, cache);
        cache
            .nodes()
            .map(|n| {
                let ok = pre.code == crate::framework::Code::Skip
                    || InterPodAffinity.filter(&state, incoming, n).is_success();
                (n.name.clone(), ok)
            })
            .collect()
    }

    #[test]
    fn anti_affinity_bars_the_domains_of_matching_pods_both_ways() {
        let mut cache = cluster();
        cache.assume(&pod("db", "db", None, json!(null)), "a1");
        // The newcomer's own term: no zone that holds a db pod.
        let incoming = pod("web", "web", None, anti("db", "zone"));
        assert_eq!(
            verdicts(&cache, &incoming),
            [
                ("a1".into(), false),
                ("a2".into(), false),
                ("b1".into(), true)
            ]
        );
        // An existing pod's term against the newcomer bars its own host only.
        cache.assume(&pod("cache", "cache", None, anti("web", "host")), "b1");
        let plain = pod("web2", "web", None, json!(null));
        assert_eq!(
            verdicts(&cache, &plain),
            [
                ("a1".into(), true),
                ("a2".into(), true),
                ("b1".into(), false)
            ]
        );
        // A key no node carries bars nothing.
        let nowhere = pod("other", "other", None, anti("db", "rack"));
        assert!(verdicts(&cache, &nowhere).iter().all(|(_, ok)| *ok));
        // The db pod gone, zone a is open again.
        cache.remove_pod("db");
        assert_eq!(
            verdicts(&cache, &incoming),
            [
                ("a1".into(), true),
                ("a2".into(), true),
                ("b1".into(), false)
            ]
        );
    }

    #[test]
    fn pods_left_on_a_deleted_node_bar_no_domain() {
        let mut cache = cluster();
        cache.assume(&pod("cache", "cache", None, anti("web", "zone")), "b1");
        let web = pod("web", "web", None, json!(null));
        assert_eq!(
            verdicts(&cache, &web),
            [
                ("a1".into(), true),
                ("a2".into(), true),
                ("b1".into(), false)
            ]
        );
        cache.remove_node("b1");
        cache.upsert_node(node("b2", "b"));
        assert_eq!(
            verdicts(&cache, &web),
            [
                ("a1".into(), true),
                ("a2".into(), true),
                ("b2".into(), true)
            ]
        );
    }

    #[test]
    fn required_affinity_follows_matching_pods_or_lets_the_first_in() {
        let mut cache = cluster();
        let with_db = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}});
        // No db pod anywhere and the pod is no db: nowhere.
        let web = pod("web", "web", None, with_db.clone());
        assert!(verdicts(&cache, &web).iter().all(|(_, ok)| !*ok));
        // The first db pod that wants other db pods goes anywhere.
        let first = pod("db1", "db", None, with_db.clone());
        assert!(verdicts(&cache, &first).iter().all(|(_, ok)| *ok));
        cache.assume(&first, "b1");
        assert_eq!(
            verdicts(&cache, &web),
            [
                ("a1".into(), false),
                ("a2".into(), false),
                ("b1".into(), true)
            ]
        );
    }

    #[test]
    fn preferred_terms_score_each_domain_by_weight_and_matching_pods() {
        let mut cache = cluster();
        cache.assume(&pod("db1", "db", None, json!(null)), "a1");
        cache.assume(&pod("db2", "db", None, json!(null)), "a1");
        cache.assume(&pod("web1", "web", None, json!(null)), "b1");
        let incoming = pod(
            "x",
            "x",
            None,
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                    "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 3,
                    "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "host"}}]}
            }),
        );
        let mut state = CycleState::default();
        let nodes: Vec<&NodeInfo> = cache.nodes().collect();
        InterPodAffinity.pre_score(&mut state, &incoming, &nodes, &cache);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| InterPodAffinity.score(&state, &incoming, n))
            .collect();
        // Zone a holds two db pods (2 × 10); host b1 one web pod (−3).
        assert_eq!(scores, [20, 20, -3]);
    }
}
