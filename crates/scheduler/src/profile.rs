//! Scheduling profiles: which plugins run at each extension point and with
//! what score weights, built from upstream's defaults and a
//! `KubeSchedulerConfiguration` (profiles, enabled/disabled plugins, the
//! `NodeResourcesFit` scoring strategy).

use std::sync::Arc;

use serde_json::Value;

use crate::framework::{
    BindPlugin, FilterPlugin, PreEnqueuePlugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
};
use crate::plugins::DefaultBinder;
use crate::plugins::image_locality::ImageLocality;
use crate::plugins::inter_pod_affinity::InterPodAffinity;
use crate::plugins::node_affinity::NodeAffinity;
use crate::plugins::node_basics::{NodeName, NodePorts, NodeUnschedulable, SchedulingGates};
use crate::plugins::node_resources::{BalancedAllocation, NodeResourcesFit, ScoringStrategy};
use crate::plugins::taint_toleration::TaintToleration;
use crate::plugins::topology_spread::PodTopologySpread;
use crate::plugins::volume_binding::VolumeBinding;

/// The scheduler name pods get when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Why a scheduler configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML or JSON of the expected shape.
    #[error("scheduler configuration: {0}")]
    Malformed(String),
}

/// One profile: the plugins at each extension point.
pub struct Profile {
    /// Pods whose `spec.schedulerName` is this are scheduled with this profile.
    pub scheduler_name: String,
    /// Pre-enqueue plugins.
    pub pre_enqueue: Vec<Arc<dyn PreEnqueuePlugin>>,
    /// Pre-filter plugins.
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    /// Filter plugins, in upstream's order.
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    /// Pre-score plugins.
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    /// Score plugins with their weights.
    pub score: Vec<(Arc<dyn ScorePlugin>, i64)>,
    /// The binder.
    pub bind: Arc<dyn BindPlugin>,
}

/// Plugins a configuration turned off, and score weights it set.
#[derive(Default)]
struct Overrides {
    disabled: Vec<(String, String)>,
    weights: Vec<(String, i64)>,
    strategy: ScoringStrategy,
}

impl Overrides {
    fn off(&self, point: &str, plugin: &str) -> bool {
        self.disabled
            .iter()
            .any(|(p, n)| (p == point || p == "multiPoint") && (n == plugin || n == "*"))
    }

    fn weight(&self, plugin: &str, default: i64) -> i64 {
        self.weights
            .iter()
            .find(|(n, _)| n == plugin)
            .map_or(default, |(_, w)| *w)
    }
}

impl Profile {
    /// Upstream's default plugins and weights under `scheduler_name`.
    pub fn default_named(scheduler_name: &str) -> Self {
        Self::build(scheduler_name, &Overrides::default())
    }

    fn build(scheduler_name: &str, o: &Overrides) -> Self {
        let fit = Arc::new(NodeResourcesFit {
            strategy: o.strategy,
        });
        let (affinity, taints) = (Arc::new(NodeAffinity), Arc::new(TaintToleration));
        let (spread, pod_affinity) = (Arc::new(PodTopologySpread), Arc::new(InterPodAffinity));
        let (ports, volumes) = (Arc::new(NodePorts), Arc::new(VolumeBinding));
        let images = Arc::new(ImageLocality);
        let mut p = Profile {
            scheduler_name: scheduler_name.to_owned(),
            pre_enqueue: Vec::new(),
            pre_filter: Vec::new(),
            filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            bind: Arc::new(DefaultBinder),
        };
        let pre_enqueue: [Arc<dyn PreEnqueuePlugin>; 1] = [Arc::new(SchedulingGates)];
        p.pre_enqueue = keep(o, "preEnqueue", pre_enqueue);
        let pre_filter: [Arc<dyn PreFilterPlugin>; 5] = [
            affinity.clone(),
            ports.clone(),
            volumes.clone(),
            spread.clone(),
            pod_affinity.clone(),
        ];
        p.pre_filter = keep(o, "preFilter", pre_filter);
        let filter: [Arc<dyn FilterPlugin>; 9] = [
            Arc::new(NodeUnschedulable),
            Arc::new(NodeName),
            taints.clone(),
            affinity.clone(),
            ports,
            fit.clone(),
            volumes,
            spread.clone(),
            pod_affinity.clone(),
        ];
        p.filter = keep(o, "filter", filter);
        let pre_score: [Arc<dyn PreScorePlugin>; 4] = [
            affinity.clone(),
            spread.clone(),
            pod_affinity.clone(),
            images.clone(),
        ];
        p.pre_score = keep(o, "preScore", pre_score);
        let score: [(Arc<dyn ScorePlugin>, i64); 7] = [
            (taints, 3),
            (affinity, 2),
            (fit, 1),
            (spread, 2),
            (pod_affinity, 2),
            (Arc::new(BalancedAllocation), 1),
            (images, 1),
        ];
        p.score = score
            .into_iter()
            .filter(|(s, _)| !o.off("score", s.name()))
            .map(|(s, w)| {
                let w = o.weight(s.name(), w);
                (s, w)
            })
            .collect();
        p
    }

    /// The profiles a `KubeSchedulerConfiguration` (YAML or JSON) describes;
    /// one default profile when it lists none.
    pub fn from_config(text: &str) -> Result<Vec<Profile>, ConfigError> {
        let cfg: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Malformed(e.to_string()))?;
        let Some(profiles) = cfg.get("profiles").and_then(Value::as_array) else {
            return Ok(vec![Profile::default_named(DEFAULT_SCHEDULER_NAME)]);
        };
        profiles.iter().map(profile_from).collect()
    }
}

fn keep<T: ?Sized + crate::framework::Plugin, const N: usize>(
    o: &Overrides,
    point: &str,
    plugins: [Arc<T>; N],
) -> Vec<Arc<T>> {
    plugins
        .into_iter()
        .filter(|p| !o.off(point, p.name()))
        .collect()
}

fn profile_from(p: &Value) -> Result<Profile, ConfigError> {
    let name = p
        .get("schedulerName")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    let mut o = Overrides::default();
    if let Some(points) = p.get("plugins").and_then(Value::as_object) {
        for (point, set) in points {
            let names = |field: &str| -> Vec<(String, Option<i64>)> {
                set.get(field)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some((
                            e.get("name")?.as_str()?.to_owned(),
                            e.get("weight").and_then(Value::as_i64),
                        ))
                    })
                    .collect()
            };
            let enabled = names("enabled");
            let is_enabled = |n: &str| enabled.iter().any(|(e, _)| e == n);
            for (n, _) in names("disabled") {
                // `*` turns off every default plugin at this point except those enabled.
                let off: Vec<&str> = if n == "*" {
                    ALL_PLUGINS.to_vec()
                } else {
                    vec![n.as_str()]
                };
                for plugin in off.into_iter().filter(|p| !is_enabled(p)) {
                    o.disabled.push((point.clone(), plugin.to_owned()));
                }
            }
            for (n, w) in enabled {
                if let Some(w) = w {
                    o.weights.push((n, w));
                }
            }
        }
    }
    for pc in p
        .get("pluginConfig")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if pc.get("name").and_then(Value::as_str) == Some("NodeResourcesFit") {
            match pc
                .pointer("/args/scoringStrategy/type")
                .and_then(Value::as_str)
            {
                None | Some("LeastAllocated") => {}
                Some("MostAllocated") => o.strategy = ScoringStrategy::MostAllocated,
                Some(other) => {
                    return Err(ConfigError::Malformed(format!(
                        "NodeResourcesFit scoringStrategy {other:?} is not supported"
                    )));
                }
            }
        }
    }
    Ok(Profile::build(name, &o))
}

/// Every plugin a profile can hold, by name.
const ALL_PLUGINS: &[&str] = &[
    "SchedulingGates",
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "VolumeBinding",
    "PodTopologySpread",
    "InterPodAffinity",
    "NodeResourcesBalancedAllocation",
    "ImageLocality",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_profiles_from_a_configuration() {
        let cfg = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#;
        let profiles = Profile::from_config(cfg).expect("parses");
        assert_eq!(profiles.len(), 2);
        assert_eq!(profiles[0].score.len(), 7);
        let packer = &profiles[1];
        assert_eq!(packer.scheduler_name, "bin-packer");
        let scores: Vec<(&str, i64)> = packer.score.iter().map(|(s, w)| (s.name(), *w)).collect();
        assert_eq!(scores, vec![("NodeResourcesFit", 5)]);
        assert_eq!(packer.filter.len(), 9, "filters untouched");
        assert!(Profile::from_config("profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Nope}}}]}]").is_err());
    }
}
