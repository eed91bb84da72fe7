//! `PodTopologySpread`: `DoNotSchedule` constraints filter nodes whose domain
//! would exceed `maxSkew` (with `minDomains`); `ScheduleAnyway` constraints
//! score nodes toward the emptier domains.

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use kybern_apimachinery::labels::{Operator, Requirement, Selector};

use super::matching::{label_selector, selector_matches};
use super::node_affinity::Required;
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::topology::{DomainCounts, LabelInterner};

const FILTER: &str = "PodTopologySpread/filter";
const SCORE: &str = "PodTopologySpread/score";

/// `PodTopologySpread`.
pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
}

/// One constraint with its matching pods counted per domain.
struct Spread {
    max_skew: i64,
    selector: Selector,
    /// Whether the incoming pod matches its own selector (it will count once placed).
    self_match: i64,
    /// Per domain of the constraint's topology key.
    counts: DomainCounts,
    min: i64,
    /// The largest count over the domains.
    max: i64,
}

fn constraints<'a>(pod: &'a PodInfo, when: &str) -> Vec<&'a TopologySpreadConstraint> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .collect()
}

/// Counts, for each constraint, the pods it selects in each domain of the
/// nodes the pod could go to (its node affinity honoured, as upstream's default).
fn count(
    pod: &PodInfo,
    list: &[&TopologySpreadConstraint],
    nodes: &mut dyn Iterator<Item = &NodeInfo>,
    table: &LabelInterner,
) -> Vec<Spread> {
    let mut spreads: Vec<Spread> = list
        .iter()
        .map(|c| {
            let mut selector = c
                .label_selector
                .as_ref()
                .and_then(label_selector)
                .unwrap_or_default();
            // matchLabelKeys: the pod's own values for those keys join the selector.
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = pod.labels.get(key) {
                    selector.requirements.push(Requirement {
                        key: key.clone(),
                        op: Operator::Equals,
                        values: vec![v.clone()],
                    });
                }
            }
            // No selector selects nothing here, as upstream.
            let self_match =
                i64::from(c.label_selector.is_some() && selector_matches(&selector, &pod.labels));
            Spread {
                max_skew: i64::from(c.max_skew),
                selector,
                self_match,
                counts: DomainCounts::new(&c.topology_key, table),
                min: 0,
                max: 0,
            }
        })
        .collect();
    let required = Required::for_pod(pod);
    for node in nodes {
        if required.as_ref().is_some_and(|r| !r.matches(node)) {
            continue;
        }
        for s in &mut spreads {
            let Some(value) = s.counts.domain(&node.label_ids) else {
                continue;
            };
            let n = node
                .pods
                .iter()
                .filter(|p| {
                    p.namespace == pod.namespace
                        && p.pod.metadata.deletion_timestamp.is_none()
                        && selector_matches(&s.selector, &p.labels)
                })
                .count() as i64;
            s.counts.add(value, n);
        }
    }
    for (s, c) in spreads.iter_mut().zip(list) {
        let domains = s.counts.domains() as i64;
        let (min, max) = s.counts.min_max().unwrap_or((0, 0));
        s.min = if domains < i64::from(c.min_domains.unwrap_or(1)) {
            0
        } else {
            min
        };
        s.max = max;
    }
    spreads
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cache: &ClusterCache) -> Status {
        let list = constraints(pod, "DoNotSchedule");
        if list.is_empty() {
            return Status::skip();
        }
        state.write(
            FILTER,
            count(pod, &list, &mut cache.nodes(), cache.label_table()),
        );
        Status::ok()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        for s in state.read::<Vec<Spread>>(FILTER).into_iter().flatten() {
            let Some(value) = s.counts.domain(&node.label_ids) else {
                return Status::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
            let here = s.counts.get(value).unwrap_or(0);
            if here + s.self_match - s.min > s.max_skew {
                return Status::unschedulable(
                    "node(s) didn't match pod topology spread constraints",
                );
            }
        }
        Status::ok()
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        cache: &ClusterCache,
    ) -> Status {
        let list = constraints(pod, "ScheduleAnyway");
        if list.is_empty() {
            return Status::skip();
        }
        // Per-node domains count only the feasible nodes; wider domains count all.
        let spreads = if list
            .iter()
            .all(|c| c.topology_key == "kubernetes.io/hostname")
        {
            count(pod, &list, &mut nodes.iter().copied(), cache.label_table())
        } else {
            count(pod, &list, &mut cache.nodes(), cache.label_table())
        };
        state.write(SCORE, spreads);
        Status::ok()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        state
            .read::<Vec<Spread>>(SCORE)
            .into_iter()
            .flatten()
            .map(|s| {
                let here = s
                    .counts
                    .domain(&node.label_ids)
                    .and_then(|v| s.counts.get(v));
                // A node outside every domain gets the worst count.
                here.unwrap_or(s.max + 1) + s.max_skew - 1
            })
            .sum()
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        // Fewer matching pods is better: upstream's `max + min - score` over `max`.
        let (Some(max), Some(min)) = (scores.iter().max().copied(), scores.iter().min().copied())
        else {
            return;
        };
        for s in scores.iter_mut() {
            *s = if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}
