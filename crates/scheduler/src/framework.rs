//! The scheduling framework: upstream's extension points as traits, the
//! status a plugin answers with, and the per-cycle state plugins share.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;

use futures::future::BoxFuture;

use crate::cache::{ClusterCache, NodeInfo, PodInfo};

/// Highest score a plugin gives a node, after normalizing.
pub const MAX_NODE_SCORE: i64 = 100;

/// A plugin's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Go on.
    Success,
    /// Not here, but perhaps after preemption or a cluster change.
    Unschedulable,
    /// Not here, and preempting pods on this node would not help.
    UnschedulableAndUnresolvable,
    /// The plugin failed.
    Error,
    /// The plugin has nothing to say about this pod; its later points are skipped.
    Skip,
    /// Permit: hold the pod before binding.
    Wait,
}

/// A plugin's answer: its code, the plugin, and why (the reasons shown in
/// `FailedScheduling` messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The verdict.
    pub code: Code,
    /// Reasons for the user, e.g. `Insufficient cpu`: mostly fixed words,
    /// which a filter failing on thousands of nodes should not allocate.
    pub reasons: Vec<Cow<'static, str>>,
    /// The plugin that answered.
    pub plugin: &'static str,
}

impl Status {
    /// Success.
    pub fn ok() -> Self {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// Skip the plugin's later extension points for this pod.
    pub fn skip() -> Self {
        Status {
            code: Code::Skip,
            ..Status::ok()
        }
    }

    /// A failure with a code and one reason.
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Self {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    /// Unschedulable, for a reason.
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Code::Unschedulable, reason)
    }

    /// Unschedulable, and preemption would not help.
    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// Whether the verdict lets the pod go on.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Names the plugin that answered.
    pub fn with_plugin(mut self, plugin: &'static str) -> Self {
        self.plugin = plugin;
        self
    }
}

/// Data plugins compute once per scheduling cycle (in pre-filter or pre-score)
/// and read on every node.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn Any + Send + Sync>>,
    /// Plugins whose pre-filter said to skip their filter for this pod.
    pub skip_filter: Vec<&'static str>,
    /// Plugins whose pre-score said to skip their score for this pod.
    pub skip_score: Vec<&'static str>,
}

impl CycleState {
    /// Stores a plugin's data.
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    /// Reads a plugin's data.
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key).and_then(|v| v.downcast_ref())
    }

    /// Whether a plugin's filter is skipped for this pod.
    pub fn skips_filter(&self, plugin: &'static str) -> bool {
        self.skip_filter.contains(&plugin)
    }

    /// Whether a plugin's score is skipped for this pod.
    pub fn skips_score(&self, plugin: &'static str) -> bool {
        self.skip_score.contains(&plugin)
    }
}

/// What every plugin has: a name as upstream spells it.
pub trait Plugin: Send + Sync {
    /// The plugin's name (`NodeResourcesFit`).
    fn name(&self) -> &'static str;
}

/// Decides whether a pod may enter the active queue at all.
pub trait PreEnqueuePlugin: Plugin {
    /// `Success` to queue the pod; anything else keeps it waiting.
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

/// Computes per-pod data before nodes are filtered, or rejects the pod early.
pub trait PreFilterPlugin: Plugin {
    /// Runs once per cycle; `Skip` skips this plugin's filter.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cache: &ClusterCache) -> Status;
}

/// Says whether a pod fits one node.
pub trait FilterPlugin: Plugin {
    /// Runs for each candidate node.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Computes per-pod data for scoring.
pub trait PreScorePlugin: Plugin {
    /// Runs once per cycle with the feasible nodes; `Skip` skips this plugin's score.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        cache: &ClusterCache,
    ) -> Status;
}

/// Ranks feasible nodes.
pub trait ScorePlugin: Plugin {
    /// A raw score for one node.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;

    /// Maps raw scores onto `0..=MAX_NODE_SCORE`; the default keeps them.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) {}
}

/// Binds a pod to its node through the API.
pub trait BindPlugin: Plugin {
    /// Creates the binding.
    fn bind<'a>(
        &'a self,
        client: &'a kube::Client,
        pod: &'a PodInfo,
        node: &'a str,
    ) -> BoxFuture<'a, Status>;
}

/// Scales raw scores so the highest becomes `MAX_NODE_SCORE` (or, with
/// `reverse`, so the lowest does), as upstream's default normalizer.
pub fn normalize_scores(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let scaled = MAX_NODE_SCORE * *s / max;
        *s = if reverse {
            MAX_NODE_SCORE - scaled
        } else {
            scaled
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_upstream() {
        let mut s = [10, 5, 0];
        normalize_scores(&mut s, false);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [10, 5, 0];
        normalize_scores(&mut s, true);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 0];
        normalize_scores(&mut s, true);
        assert_eq!(s, [100, 100]);
    }
}
