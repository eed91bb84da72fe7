//! `DefaultPreemption`: when a pod fits nowhere, find the node where evicting
//! the fewest, least important lower-priority pods (disruption budgets
//! respected where possible) would make it fit, as upstream's post-filter does.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::algorithm::ActiveFilters;
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::CycleState;
use crate::plugins::matching::{label_selector, selector_matches};
use crate::profile::Profile;

/// What preemption found.
#[derive(Debug)]
pub enum Outcome {
    /// Evict these pods on this node; the pod is nominated to it.
    Preempt {
        /// The node.
        node: String,
        /// The pods to evict.
        victims: Vec<PodInfo>,
    },
    /// No node helps; reasons counted over nodes, as upstream words them.
    NotHelpful(BTreeMap<String, usize>),
    /// The pod may not preempt (policy `Never`, or victims of its last
    /// preemption are still leaving its nominated node), with upstream's words.
    NotEligible(&'static str),
}

/// Why the pod may not preempt, if it may not.
fn ineligible(pod: &PodInfo, cache: &ClusterCache) -> Option<&'static str> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    // Victims of an earlier preemption still terminating on the nominated node:
    // wait for them rather than evict more.
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    if let Some(node) = nominated.and_then(|n| cache.node(n)) {
        let leaving = node
            .pods
            .iter()
            .any(|p| p.pod.metadata.deletion_timestamp.is_some() && p.priority < pod.priority);
        if leaving {
            return Some("not eligible due to a terminating pod on the nominated node.");
        }
    }
    None
}

/// How many evictions each budget still allows, by budget index.
fn budgets_left(pdbs: &[PodDisruptionBudget]) -> Vec<i32> {
    pdbs.iter()
        .map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect()
}

fn budgets_of(pod: &PodInfo, pdbs: &[PodDisruptionBudget]) -> Vec<usize> {
    pdbs.iter()
        .enumerate()
        .filter(|(_, b)| b.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .filter(|(_, b)| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(label_selector)
                // In policy/v1 an empty selector selects every pod of the namespace.
                .is_some_and(|sel| selector_matches(&sel, &pod.labels))
        })
        .map(|(i, _)| i)
        .collect()
}

/// The victims on one node, and how many budgets they break; `None` if even
/// evicting every lower-priority pod would not make room.
fn victims_on(
    filters: &ActiveFilters,
    state: &CycleState,
    pod: &PodInfo,
    node: Cow<'_, NodeInfo>,
    pdbs: &[PodDisruptionBudget],
) -> Option<(Vec<PodInfo>, usize)> {
    let mut lower: Vec<PodInfo> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    // The node without every lower-priority pod; reprieves add them back one
    // at a time, so that the node is copied at most once per candidate (not
    // at all when it is already a copy with nominated pods).
    let mut trial = node.into_owned();
    for p in &lower {
        trial.remove_pod(&p.uid);
    }
    if filters.first_failure(state, pod, &trial).is_some() {
        return None;
    }
    // Reprieve as many as possible, most important first; pods whose eviction
    // would break a budget get their reprieve tried before the others.
    let mut left = budgets_left(pdbs);
    let breaks = |p: &PodInfo, left: &[i32]| budgets_of(p, pdbs).iter().any(|i| left[*i] <= 0);
    lower.sort_by(|a, b| {
        breaks(b, &left)
            .cmp(&breaks(a, &left))
            .then(b.priority.cmp(&a.priority))
    });
    let mut victims = Vec::new();
    for p in lower {
        trial.add_pod(p.clone());
        if filters.first_failure(state, pod, &trial).is_some() {
            trial.remove_pod(&p.uid);
            victims.push(p);
        }
    }
    let mut violations = 0;
    for v in &victims {
        let budgets = budgets_of(v, pdbs);
        if budgets.iter().any(|i| left[*i] <= 0) {
            violations += 1;
        }
        for i in budgets {
            left[i] -= 1;
        }
    }
    Some((victims, violations))
}

/// Fewest candidate nodes preemption looks for (upstream's `minCandidateNodesAbsolute`).
const MIN_CANDIDATES: usize = 100;

/// Where to start looking for candidates among `n` nodes.
fn random_start(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (crate::algorithm::clock_nanos() % n as u64) as usize
    }
}

/// How a candidate node ranks (lower is better): budget violations, highest
/// victim priority, sum of victim priorities, number of victims.
type Rank = (usize, i32, i64, usize);

/// Runs preemption for a pod that fits nowhere. `resolvable` are the nodes
/// (positions for [`ClusterCache::nth_node`]) whose filters failed in a way
/// evicting pods might fix.
pub fn preempt(
    profile: &Profile,
    state: &CycleState,
    cache: &ClusterCache,
    pod: &PodInfo,
    resolvable: &[usize],
    pdbs: &[PodDisruptionBudget],
) -> Outcome {
    if let Some(why) = ineligible(pod, cache) {
        return Outcome::NotEligible(why);
    }
    let filters = ActiveFilters::new(profile, state);
    let total = cache.node_count();
    let mut best: Option<(String, Vec<PodInfo>, Rank)> = None;
    let mut no_victims = 0;
    // Upstream looks for a share of the nodes as candidates (10%, at least
    // 100), from a random start, rather than evaluate every node.
    let wanted = (total / 10).max(MIN_CANDIDATES);
    let mut found = 0;
    let start = random_start(resolvable.len());
    for i in 0..resolvable.len() {
        if found >= wanted {
            break;
        }
        let Some(node) = cache.nth_node(resolvable[(start + i) % resolvable.len()]) else {
            continue;
        };
        let view = cache
            .with_nominated(node, pod)
            .map_or(Cow::Borrowed(node), Cow::Owned);
        let Some((victims, violations)) = victims_on(&filters, state, pod, view, pdbs) else {
            no_victims += 1;
            continue;
        };
        found += 1;
        // Upstream's order: fewest budget violations, lowest highest victim
        // priority, smallest priority sum, fewest victims.
        let key = (
            violations,
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(_, _, k)| key < *k) {
            best = Some((node.name.clone(), victims, key));
        }
    }
    match best {
        Some((node, victims, _)) => Outcome::Preempt { node, victims },
        None => {
            let mut reasons = BTreeMap::new();
            if no_victims > 0 {
                reasons.insert(
                    "No preemption victims found for incoming pod".to_owned(),
                    no_victims,
                );
            }
            let unhelpful = total.saturating_sub(no_victims);
            if unhelpful > 0 {
                reasons.insert(
                    "Preemption is not helpful for scheduling".to_owned(),
                    unhelpful,
                );
            }
            Outcome::NotHelpful(reasons)
        }
    }
}

/// Carries out a preemption through the API: nominates the node on the
/// preemptor, marks each victim with a `DisruptionTarget` condition, records a
/// `Preempted` Event on it and deletes it (with its own grace period).
pub async fn evict(
    client: &kube::Client,
    recorder: &crate::events::EventRecorder,
    preemptor: &PodInfo,
    node: &str,
    victims: &[PodInfo],
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
    use serde_json::json;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &preemptor.namespace);
    let nominate = json!({"status": {"nominatedNodeName": node}});
    if let Err(e) = pods
        .patch_status(
            &preemptor.name,
            &PatchParams::default(),
            &Patch::Merge(&nominate),
        )
        .await
    {
        tracing::debug!(error = %e, pod = %preemptor.key(), "nominating a node");
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for v in victims {
        let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
        let condition = json!({"status": {"conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "PreemptionByScheduler", "lastTransitionTime": now,
            "message": format!("{}: preempting to accommodate a higher priority pod",
                recorder.component())}]}});
        if let Err(e) = api
            .patch_status(
                &v.name,
                &PatchParams::default(),
                &Patch::Strategic(&condition),
            )
            .await
        {
            tracing::debug!(error = %e, pod = %v.key(), "marking a victim");
        }
        let message = format!("Preempted by pod {} on node {node}", preemptor.uid);
        recorder.record(v, "Normal", "Preempted", &message).await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(v.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&v.name, &dp).await {
            tracing::debug!(error = %e, pod = %v.key(), "deleting a victim");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pod(uid: &str, cpu: &str, priority: i32, node: Option<&str>) -> PodInfo {
        PodInfo::new(Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": uid, "namespace": "d", "uid": uid},
                "spec": {"nodeName": node, "priority": priority, "containers": [{"name": "c",
                    "resources": {"requests": {"cpu": cpu}}}]}
            }))
            .expect("pod"),
        ))
    }

    /// A pod placed in a test: uid, cpu request, priority.
    type Placed<'a> = (&'a str, &'a str, i32);

    fn cache_with(nodes: &[(&str, &[Placed])]) -> ClusterCache {
        let mut cache = ClusterCache::default();
        for (name, pods) in nodes {
            cache.upsert_node(Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
                }))
                .expect("node"),
            ));
            for (uid, cpu, priority) in *pods {
                cache.upsert_pod(pod(uid, cpu, *priority, Some(name)).pod.clone());
            }
        }
        cache
    }

    fn run(cache: &ClusterCache, preemptor: &PodInfo) -> Outcome {
        let profile = Profile::default_named("default-scheduler");
        let resolvable: Vec<usize> = (0..cache.node_count()).collect();
        preempt(
            &profile,
            &CycleState::default(),
            cache,
            preemptor,
            &resolvable,
            &[],
        )
    }

    fn victim_names(outcome: &Outcome) -> (String, Vec<String>) {
        let Outcome::Preempt { node, victims } = outcome else {
            panic!("expected a preemption, got {outcome:?}");
        };
        let mut names: Vec<String> = victims.iter().map(|v| v.name.clone()).collect();
        names.sort();
        (node.clone(), names)
    }

    #[test]
    fn evicts_only_what_makes_room_least_important_first() {
        // 4 CPUs full; the newcomer needs 2: evicting the two lowest-priority
        // 1-CPU pods is enough, and the higher ones are reprieved.
        let cache = cache_with(&[(
            "n1",
            &[("a", "1", 1), ("b", "1", 2), ("c", "1", 3), ("d", "1", 4)],
        )]);
        let outcome = run(&cache, &pod("new", "2", 100, None));
        assert_eq!(
            victim_names(&outcome),
            ("n1".into(), vec!["a".into(), "b".into()])
        );
        // The cache itself is untouched by the trial.
        assert_eq!(cache.node("n1").map(|n| n.requested.milli_cpu), Some(4000));
        assert_eq!(cache.node("n1").map(|n| n.pods.len()), Some(4));
    }

    #[test]
    fn prefers_the_node_with_the_least_important_victims() {
        let cache = cache_with(&[("n1", &[("high", "4", 50)]), ("n2", &[("low", "4", 10)])]);
        let outcome = run(&cache, &pod("new", "1", 100, None));
        assert_eq!(victim_names(&outcome), ("n2".into(), vec!["low".into()]));
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let cache = cache_with(&[("n1", &[("peer", "4", 100)])]);
        let outcome = run(&cache, &pod("new", "1", 100, None));
        assert!(
            matches!(&outcome, Outcome::NotHelpful(r) if r.contains_key("No preemption victims found for incoming pod")),
            "{outcome:?}"
        );
    }
}
