//! `InterPodAffinity`: required pod affinity and anti-affinity (the pod's own,
//! and existing pods' anti-affinity against it) filter nodes by topology
//! domain; preferred terms score them.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm};
use kybern_apimachinery::labels::Selector;

use super::matching::{label_selector, selector_matches};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status,
};

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

/// What the filter checks, computed once per cycle.
#[derive(Default)]
struct Domains {
    /// Per affinity term: the domains holding a matching pod.
    affinity: Vec<(String, HashSet<String>)>,
    /// Whether no pod matches the affinity terms but the pod matches them itself.
    affinity_self_only: bool,
    /// Per anti-affinity term: the domains holding a matching pod.
    anti: Vec<(String, HashSet<String>)>,
    /// Domains barred by existing pods' anti-affinity: values by topology key.
    existing_anti: HashMap<String, HashSet<String>>,
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cache: &ClusterCache) -> Status {
        let aff = required_terms(pod, false);
        let anti = required_terms(pod, true);
        let mut d = Domains {
            affinity: aff
                .iter()
                .map(|t| (t.key.clone(), HashSet::new()))
                .collect(),
            anti: anti
                .iter()
                .map(|t| (t.key.clone(), HashSet::new()))
                .collect(),
            ..Default::default()
        };
        // The pod's own terms look at every placed pod; existing pods' terms
        // come only from the few pods that have required anti-affinity.
        if !aff.is_empty() || !anti.is_empty() {
            let terms: Vec<&Term> = aff.iter().chain(&anti).collect();
            let mut sets: Vec<&mut HashSet<String>> = d
                .affinity
                .iter_mut()
                .chain(&mut d.anti)
                .map(|(_, set)| set)
                .collect();
            // Each node's domain per term is looked up once, not per pod.
            let mut domains: Vec<Option<&String>> = Vec::with_capacity(terms.len());
            for node in cache.nodes().filter(|n| !n.pods.is_empty()) {
                domains.clear();
                domains.extend(terms.iter().map(|t| node.labels.get(&t.key)));
                for ((t, set), domain) in terms.iter().zip(&mut sets).zip(&domains) {
                    let Some(v) = domain else { continue };
                    if !set.contains(*v) && node.pods.iter().any(|other| t.matches(other)) {
                        set.insert((*v).clone());
                    }
                }
            }
        }
        let mut any_existing_anti = false;
        for (other, node) in cache.anti_affinity_pods() {
            for t in other.required_anti.iter() {
                if let Some(v) = node.labels.get(&t.key)
                    && t.matches(pod)
                {
                    any_existing_anti = true;
                    // Keys and values are cloned only when first seen.
                    match d.existing_anti.get_mut(&t.key) {
                        Some(values) if values.contains(v) => {}
                        Some(values) => {
                            values.insert(v.clone());
                        }
                        None => {
                            d.existing_anti
                                .insert(t.key.clone(), HashSet::from([v.clone()]));
                        }
                    }
                }
            }
        }
        d.affinity_self_only = !aff.is_empty()
            && d.affinity.iter().all(|(_, set)| set.is_empty())
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
        // Upstream's order: the pod's affinity, its anti-affinity, then the
        // existing pods' anti-affinity.
        let affinity_ok = d.affinity.iter().all(|(k, set)| {
            node.labels
                .get(k)
                .is_some_and(|v| d.affinity_self_only || set.contains(v))
        });
        if !affinity_ok {
            return Status::unresolvable("node(s) didn't match pod affinity rules");
        }
        if d.anti
            .iter()
            .any(|(k, set)| node.labels.get(k).is_some_and(|v| set.contains(v)))
        {
            return Status::unschedulable("node(s) didn't match pod anti-affinity rules");
        }
        if d.existing_anti
            .iter()
            .any(|(k, values)| node.labels.get(k).is_some_and(|v| values.contains(v)))
        {
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
        let mut by_domain: HashMap<(String, String), i64> = HashMap::new();
        for node in cache.nodes() {
            for other in &node.pods {
                for (w, t) in &terms {
                    if let Some(v) = node.labels.get(&t.key)
                        && t.matches(other)
                    {
                        *by_domain.entry((t.key.clone(), v.clone())).or_default() += w;
                    }
                }
            }
        }
        state.write(SCORE, by_domain);
        Status::ok()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        state
            .read::<HashMap<(String, String), i64>>(SCORE)
            .into_iter()
            .flatten()
            .filter(|((k, v), _)| node.labels.get(k) == Some(v))
            .map(|(_, w)| w)
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
