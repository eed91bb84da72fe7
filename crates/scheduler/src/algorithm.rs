//! One scheduling cycle for one pod: pre-filter, filter (over an adaptive
//! share of the nodes, as upstream's `percentageOfNodesToScore`), pre-score,
//! score, normalize, weigh, and pick the best node (ties broken at random).

use std::collections::BTreeMap;

use crate::cache::{ClusterCache, NodeInfo, PodInfo};

use crate::framework::{Code, CycleState, FilterPlugin, Status};
use crate::profile::Profile;

/// Fewest feasible nodes to look for before scoring (upstream's `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES: usize = 100;

/// The outcome of a cycle.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The chosen node.
    Node(String),
    /// No node fits: how many nodes there were and why each failed.
    Unschedulable {
        /// Nodes considered.
        nodes: usize,
        /// Each reason with the number of nodes it applied to.
        reasons: BTreeMap<String, usize>,
        /// Nodes whose filters failed in a way evicting pods might fix, as
        /// positions for [`ClusterCache::nth_node`]: valid until the cache
        /// next changes, so that a cycle failing on thousands of nodes
        /// copies no names.
        resolvable: Vec<usize>,
    },
}

/// How many feasible nodes to find before stopping, as upstream computes it
/// by default: all of a small cluster, and a share that shrinks from 50% with
/// size (but at least 5%, and at least 100 nodes) of a large one.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES {
        return nodes;
    }
    let percentage = (50 - (nodes / 125) as i64).max(5) as usize;
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES)
}

fn tally(reasons: &mut BTreeMap<String, usize>, status: &Status, count: usize) {
    for r in &status.reasons {
        // Thousands of nodes fail for the same few reasons: look up first,
        // so that only a new reason is copied.
        match reasons.get_mut(r.as_ref()) {
            Some(n) => *n += count,
            None => {
                reasons.insert(r.to_string(), count);
            }
        }
    }
}

/// Nanoseconds of the wall clock: entropy enough to break ties and pick a
/// starting node, which need no cryptographic randomness.
pub(crate) fn clock_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

/// A small xorshift generator for tie-breaking: no need for a cryptographic one.
fn next_random(seed: &mut u64) -> u64 {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *seed = x;
    x
}

/// `status.nominatedNodeName`, if set.
fn nominated_node(pod: &PodInfo) -> Option<&str> {
    let status = pod.pod.status.as_ref()?;
    status
        .nominated_node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// The filters a cycle runs: the profile's, less those whose pre-filter said
/// to skip them, worked out once per cycle rather than once per node.
pub(crate) struct ActiveFilters<'a>(Vec<&'a dyn FilterPlugin>);

impl<'a> ActiveFilters<'a> {
    /// The filters of `profile` that `state` does not skip.
    pub(crate) fn new(profile: &'a Profile, state: &CycleState) -> Self {
        ActiveFilters(
            profile
                .filter
                .iter()
                .filter(|f| !state.skips_filter(f.name()))
                .map(|f| f.as_ref())
                .collect(),
        )
    }

    /// The first filter that refuses exactly this node, if any does.
    pub(crate) fn first_failure(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
    ) -> Option<Status> {
        self.0
            .iter()
            .map(|f| f.filter(state, pod, node))
            .find(|s| !s.is_success())
    }

    /// The first filter that refuses the node, counting the pods nominated
    /// to it ahead of this one. Upstream runs the filters with those pods
    /// and, if they pass, without them: the pod fits only where both pass.
    /// The plain node goes first here, so that a node refused anyway (most,
    /// when a pod fits nowhere) is not copied to add the nominated pods.
    pub(crate) fn first_failure_nominated(
        &self,
        state: &CycleState,
        cache: &ClusterCache,
        pod: &PodInfo,
        node: &NodeInfo,
    ) -> Option<Status> {
        if let Some(failed) = self.first_failure(state, pod, node) {
            return Some(failed);
        }
        let view = cache.with_nominated(node, pod)?;
        self.first_failure(state, pod, &view)
    }
}

/// Runs one cycle. `next_start` rotates the node where filtering begins, so
/// that a partial search does not always favour the same nodes. The cycle's
/// state comes back too, for preemption.
pub fn schedule_pod(
    profile: &Profile,
    cache: &ClusterCache,
    pod: &PodInfo,
    next_start: &mut usize,
) -> (Decision, CycleState) {
    let mut state = CycleState::default();
    let decision = decide(profile, cache, pod, next_start, &mut state);
    (decision, state)
}

fn decide(
    profile: &Profile,
    cache: &ClusterCache,
    pod: &PodInfo,
    next_start: &mut usize,
    state: &mut CycleState,
) -> Decision {
    let count = cache.node_count();
    let mut reasons = BTreeMap::new();
    let mut resolvable = Vec::new();
    if count == 0 {
        return Decision::Unschedulable {
            nodes: 0,
            reasons,
            resolvable,
        };
    }
    for p in &profile.pre_filter {
        let status = p.pre_filter(state, pod, cache);
        match status.code {
            Code::Success => {}
            Code::Skip => state.skip_filter.push(p.name()),
            _ => {
                // A pre-filter's reason stands alone in the message, uncounted.
                tally(&mut reasons, &status, 0);
                return Decision::Unschedulable {
                    nodes: count,
                    reasons,
                    resolvable,
                };
            }
        }
    }
    // A pod nominated by an earlier preemption tries its node first, as
    // upstream's `evaluateNominatedNode` does: where the victims have left,
    // it fits, and no other node need be examined.
    let filters = ActiveFilters::new(profile, state);
    if let Some(node) = nominated_node(pod).and_then(|n| cache.node(n))
        && filters
            .first_failure_nominated(state, cache, pod, node)
            .is_none()
    {
        return Decision::Node(node.name.clone());
    }
    let want = feasible_nodes_to_find(count);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(count));
    let start = *next_start % count;
    let mut examined = 0;
    for i in 0..count {
        let at = (start + i) % count;
        let Some(node) = cache.nth_node(at) else {
            continue;
        };
        examined += 1;
        match filters.first_failure_nominated(state, cache, pod, node) {
            None => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Some(status) => {
                if status.code == Code::Unschedulable {
                    resolvable.push(at);
                }
                tally(&mut reasons, &status, 1);
            }
        }
    }
    *next_start = (start + examined) % count;
    match feasible.len() {
        0 => {
            return Decision::Unschedulable {
                nodes: count,
                reasons,
                resolvable,
            };
        }
        1 => return Decision::Node(feasible[0].name.clone()),
        _ => {}
    }
    for p in &profile.pre_score {
        if p.pre_score(state, pod, &feasible, cache).code == Code::Skip {
            state.skip_score.push(p.name());
        }
    }
    let mut totals = vec![0_i64; feasible.len()];
    let mut scores = vec![0_i64; feasible.len()];
    for (plugin, weight) in &profile.score {
        if state.skips_score(plugin.name()) {
            continue;
        }
        for (s, node) in scores.iter_mut().zip(&feasible) {
            *s = plugin.score(state, pod, node);
        }
        plugin.normalize(state, pod, &mut scores);
        for (t, s) in totals.iter_mut().zip(&scores) {
            *t += s * weight;
        }
    }
    // The best score; among equals, each is equally likely (reservoir sampling).
    let mut seed = (*next_start as u64 ^ 0x9E37_79B9_7F4A_7C15) | 1;
    seed ^= clock_nanos();
    seed |= 1;
    let mut best = 0;
    let mut ties = 0_u64;
    for (i, t) in totals.iter().enumerate() {
        if *t > totals[best] {
            best = i;
            ties = 1;
        } else if *t == totals[best] {
            ties += 1;
            if next_random(&mut seed).is_multiple_of(ties) {
                best = i;
            }
        }
    }
    Decision::Node(feasible[best].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adaptive_share_of_nodes() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
    }

    fn node(name: &str, cpu: &str, taint: bool) -> Arc<k8s_openapi::api::core::v1::Node> {
        let taints = if taint {
            serde_json::json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}])
        } else {
            serde_json::json!([])
        };
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
            }))
            .expect("node"),
        )
    }

    #[test]
    fn picks_a_fitting_node_or_explains() {
        let mut cache = ClusterCache::default();
        cache.upsert_node(node("small", "500m", false));
        cache.upsert_node(node("tainted", "8", true));
        cache.upsert_node(node("big", "8", false));
        let pod = PodInfo::new(Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "d", "uid": "p"},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}
            }))
            .expect("pod"),
        ));
        let profile = Profile::default_named("default-scheduler");
        let mut start = 0;
        assert_eq!(
            schedule_pod(&profile, &cache, &pod, &mut start).0,
            Decision::Node("big".into())
        );
        cache.assume(&pod, "big");
        let mut huge = (*pod.pod).clone();
        huge.metadata.uid = Some("q".into());
        huge.spec.as_mut().expect("spec").containers[0].resources =
            serde_json::from_value(serde_json::json!({"requests": {"cpu": "7500m"}})).expect("r");
        let huge = PodInfo::new(Arc::new(huge));
        let Decision::Unschedulable {
            nodes,
            reasons,
            resolvable,
        } = schedule_pod(&profile, &cache, &huge, &mut start).0
        else {
            panic!("should not fit");
        };
        assert_eq!(nodes, 3);
        let mut names: Vec<&str> = resolvable
            .iter()
            .filter_map(|at| cache.nth_node(*at))
            .map(|n| n.name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["big", "small"], "the taint is not resolvable");
        assert_eq!(
            crate::events::fit_error_message(nodes, &reasons),
            "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 2 Insufficient cpu."
        );
    }

    #[test]
    fn a_nominated_pod_takes_its_node_when_it_fits() {
        let mut cache = ClusterCache::default();
        cache.upsert_node(node("roomy", "8", false));
        cache.upsert_node(node("nominated", "2", false));
        cache.upsert_node(node("tiny", "500m", false));
        let pod = |nominated: Option<&str>| {
            PodInfo::new(Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "p", "namespace": "d", "uid": "p"},
                    "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
                    "status": {"nominatedNodeName": nominated}
                }))
                .expect("pod"),
            ))
        };
        let profile = Profile::default_named("default-scheduler");
        let mut start = 0;
        // Scoring alone prefers the emptier node.
        assert_eq!(
            schedule_pod(&profile, &cache, &pod(None), &mut start).0,
            Decision::Node("roomy".into())
        );
        assert_eq!(
            schedule_pod(&profile, &cache, &pod(Some("nominated")), &mut start).0,
            Decision::Node("nominated".into())
        );
        // A nominated node it does not fit, or one gone, is passed over.
        for gone in ["tiny", "missing"] {
            assert_eq!(
                schedule_pod(&profile, &cache, &pod(Some(gone)), &mut start).0,
                Decision::Node("roomy".into())
            );
        }
    }

    #[test]
    fn pods_nominated_ahead_hold_their_room() {
        let mut cache = ClusterCache::default();
        cache.upsert_node(node("only", "2", false));
        let pod = |uid: &str, cpu: &str, priority: i32| {
            PodInfo::new(Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": uid, "namespace": "d", "uid": uid},
                    "spec": {"priority": priority, "containers": [{"name": "c",
                        "resources": {"requests": {"cpu": cpu}}}]}
                }))
                .expect("pod"),
            ))
        };
        cache.nominate(&pod("waiting", "2", 10), "only");
        let profile = Profile::default_named("default-scheduler");
        let mut start = 0;
        let lower = schedule_pod(&profile, &cache, &pod("lower", "1", 0), &mut start).0;
        assert!(
            matches!(&lower, Decision::Unschedulable { reasons, .. } if reasons.contains_key("Insufficient cpu")),
            "{lower:?}"
        );
        assert_eq!(
            schedule_pod(&profile, &cache, &pod("higher", "1", 20), &mut start).0,
            Decision::Node("only".into())
        );
    }
}
