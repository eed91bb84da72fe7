//! `NodeResourcesFit` (requests against allocatable; LeastAllocated or
//! MostAllocated scoring) and `NodeResourcesBalancedAllocation`.

use std::borrow::Cow;

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, ScorePlugin, Status};
use crate::resources::Resources;

/// How `NodeResourcesFit` ranks nodes that fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScoringStrategy {
    /// Prefer the emptiest nodes (spreading; upstream's default).
    #[default]
    LeastAllocated,
    /// Prefer the fullest nodes (bin packing).
    MostAllocated,
}

/// `NodeResourcesFit`.
pub struct NodeResourcesFit {
    /// The scoring strategy.
    pub strategy: ScoringStrategy,
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
}

/// The reasons a pod does not fit a node's resources, as upstream words them.
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<Cow<'static, str>> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allowed_pods {
        reasons.push(Cow::Borrowed("Too many pods"));
    }
    let (want, used, have) = (&pod.requests, &node.requested, &node.allocatable);
    let checks = [
        (
            "Insufficient cpu",
            want.milli_cpu,
            used.milli_cpu,
            have.milli_cpu,
        ),
        ("Insufficient memory", want.memory, used.memory, have.memory),
        (
            "Insufficient ephemeral-storage",
            want.ephemeral_storage,
            used.ephemeral_storage,
            have.ephemeral_storage,
        ),
    ];
    for (reason, w, u, h) in checks {
        if w > 0 && w > h - u {
            reasons.push(Cow::Borrowed(reason));
        }
    }
    for (name, w) in &want.scalar {
        if *w > 0 && *w > have.get(name) - used.get(name) {
            reasons.push(Cow::Owned(format!("Insufficient {name}")));
        }
    }
    reasons
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::ok()
        } else {
            Status {
                reasons,
                ..Status::unschedulable("")
            }
        }
    }
}

/// Requested (with the pod) and allocatable CPU and memory, for scoring.
fn cpu_memory(pod: &PodInfo, node: &NodeInfo) -> [(i64, i64); 2] {
    // Only the two sums: a copy of the node's requests (with its map of
    // extended resources) for every node scored showed in profiles.
    let (used, want) = (&node.non_zero_requested, &pod.non_zero);
    let alloc: &Resources = &node.allocatable;
    [
        (used.milli_cpu + want.milli_cpu, alloc.milli_cpu),
        (used.memory + want.memory, alloc.memory),
    ]
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        // Upstream's default resources: cpu and memory, weight 1 each.
        let pairs = cpu_memory(pod, node);
        let per = pairs.iter().map(|&(req, alloc)| {
            if alloc <= 0 {
                return 0;
            }
            match self.strategy {
                ScoringStrategy::LeastAllocated if req > alloc => 0,
                ScoringStrategy::LeastAllocated => (alloc - req) * MAX_NODE_SCORE / alloc,
                ScoringStrategy::MostAllocated => req.min(alloc) * MAX_NODE_SCORE / alloc,
            }
        });
        per.sum::<i64>() / pairs.len() as i64
    }
}

/// `NodeResourcesBalancedAllocation`: prefers nodes whose CPU and memory use
/// stay even after placing the pod.
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let [(cpu, cpu_alloc), (memory, memory_alloc)] = cpu_memory(pod, node);
        if cpu_alloc <= 0 || memory_alloc <= 0 {
            return MAX_NODE_SCORE;
        }
        let fraction = |req: i64, alloc: i64| (req as f64 / alloc as f64).min(1.0);
        let (a, b) = (fraction(cpu, cpu_alloc), fraction(memory, memory_alloc));
        // The standard deviation of two fractions is half their distance.
        let deviation = (a - b).abs() / 2.0;
        ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ClusterCache;
    use std::sync::Arc;

    fn setup(node_cpu: &str, used: &str, want: &str) -> (ClusterCache, PodInfo) {
        let mut cache = ClusterCache::default();
        cache.upsert_node(Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"},
                "status": {"allocatable": {"cpu": node_cpu, "memory": "1Gi", "pods": "2"}}}))
            .expect("node"),
        ));
        let pod = |name: &str, cpu: &str, node: Option<&str>| {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "d", "uid": name},
                    "spec": {"nodeName": node, "containers": [{"name": "c",
                        "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]}}))
                .expect("pod"),
            )
        };
        cache.upsert_pod(pod("old", used, Some("n")));
        (cache, PodInfo::new(pod("new", want, None)))
    }

    #[test]
    fn fit_and_scores() {
        let (cache, pod) = setup("2", "1", "1");
        let node = cache.node("n").expect("node");
        let fit = NodeResourcesFit {
            strategy: ScoringStrategy::LeastAllocated,
        };
        assert!(fit.filter(&CycleState::default(), &pod, node).is_success());
        // cpu: full (0), memory: 512Mi of 1Gi used (50).
        assert_eq!(fit.score(&CycleState::default(), &pod, node), 25);
        let most = NodeResourcesFit {
            strategy: ScoringStrategy::MostAllocated,
        };
        assert_eq!(most.score(&CycleState::default(), &pod, node), 75);
        // cpu 1.0 vs memory 0.5: std dev 0.25.
        assert_eq!(
            BalancedAllocation.score(&CycleState::default(), &pod, node),
            75
        );

        let (cache, pod) = setup("2", "1500m", "1");
        let status = fit.filter(&CycleState::default(), &pod, cache.node("n").expect("n"));
        assert_eq!(status.reasons, vec!["Insufficient cpu"]);
    }
}
