//! `NodeAffinity`: `nodeSelector` and required node affinity filter nodes;
//! preferred node affinity scores them.

use kybern_apimachinery::labels::Requirement;

use super::matching::{compile_term, term_matches};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::framework::{
    CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin, Status,
    normalize_scores,
};

const REQUIRED: &str = "NodeAffinity/required";
const PREFERRED: &str = "NodeAffinity/preferred";

/// `NodeAffinity`.
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
}

/// The pod's node constraints, compiled once per cycle.
pub(crate) struct Required {
    /// `nodeSelector` as `key=value` requirements.
    selector: Vec<(String, String)>,
    /// Required terms (any one must match); `None` when the pod has none.
    terms: Option<Vec<Vec<Requirement>>>,
}

impl Required {
    /// The pod's `nodeSelector` and required node affinity; `None` if it has neither.
    pub(crate) fn for_pod(pod: &PodInfo) -> Option<Self> {
        let spec = pod.pod.spec.as_ref();
        let selector: Vec<(String, String)> = spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| {
                r.node_selector_terms
                    .iter()
                    .filter_map(compile_term)
                    .collect::<Vec<_>>()
            });
        (!selector.is_empty() || terms.is_some()).then_some(Required { selector, terms })
    }

    /// Whether a node satisfies them.
    pub(crate) fn matches(&self, node: &NodeInfo) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && self.terms.as_ref().is_none_or(|terms| {
                terms
                    .iter()
                    .any(|t| term_matches(t, &node.name, &node.labels))
            })
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _: &ClusterCache) -> Status {
        match Required::for_pod(pod) {
            Some(required) => {
                state.write(REQUIRED, required);
                Status::ok()
            }
            None => Status::skip(),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        match state.read::<Required>(REQUIRED) {
            Some(r) if !r.matches(node) => {
                Status::unresolvable("node(s) didn't match Pod's node affinity/selector")
            }
            _ => Status::ok(),
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        _: &ClusterCache,
    ) -> Status {
        let preferred: Vec<(i64, Vec<Requirement>)> = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter_map(|p| Some((i64::from(p.weight), compile_term(&p.preference)?)))
            .collect();
        if preferred.is_empty() {
            return Status::skip();
        }
        state.write(PREFERRED, preferred);
        Status::ok()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        state
            .read::<Vec<(i64, Vec<Requirement>)>>(PREFERRED)
            .into_iter()
            .flatten()
            .filter(|(_, t)| term_matches(t, &node.name, &node.labels))
            .map(|(w, _)| w)
            .sum()
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        normalize_scores(scores, false);
    }
}
