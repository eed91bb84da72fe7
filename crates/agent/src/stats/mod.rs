//! Resource use of the node and its containers, cAdvisor's role: sampled
//! every few seconds so that CPU use is a rate, and served as the kubelet's
//! `/stats/summary` for the API server's `metrics.k8s.io` (`kubectl top`).

pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::NodeContext;
use crate::worker::state::{PodDir, Run, history};
use usage::{KernelFiles, Usage};

/// How often usage is sampled: CPU rates are averaged over this window.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Two readings make a rate.
#[derive(Debug, Clone, Default)]
struct Series {
    last: Option<(Instant, DateTime<Utc>, Usage)>,
    nano_cores: Option<u64>,
}

impl Series {
    fn observe(&mut self, at: Instant, time: DateTime<Utc>, usage: Usage) {
        if let Some((before, _, prev)) = self.last {
            let elapsed = at.duration_since(before).as_nanos();
            if elapsed > 0 && usage.cpu_ns >= prev.cpu_ns {
                let used = u128::from(usage.cpu_ns - prev.cpu_ns);
                self.nano_cores = u64::try_from(used * 1_000_000_000 / elapsed).ok();
            }
        }
        self.last = Some((at, time, usage));
    }

    /// The kubelet's `cpu` and `memory` objects; `None` until sampled.
    fn render(&self) -> Option<(Value, Value)> {
        let (_, time, u) = self.last?;
        let time = time.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut cpu = json!({"time": time, "usageCoreNanoSeconds": u.cpu_ns});
        if let Some(n) = self.nano_cores {
            cpu["usageNanoCores"] = json!(n);
        }
        let memory = json!({"time": time, "usageBytes": u.memory_bytes,
            "workingSetBytes": u.working_set_bytes});
        Some((cpu, memory))
    }
}

/// A running container, as found in the pods' directories.
#[derive(Debug, Clone)]
struct Running {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    id: String,
    started_at: DateTime<Utc>,
}

/// The samples; one per node agent.
#[derive(Default)]
pub struct StatsCollector {
    files: KernelFiles,
    node: Mutex<Series>,
    /// The containers running at the last sample, by ID, with their series.
    containers: Mutex<HashMap<String, (Running, Series)>>,
    /// cgroup paths by container ID, read once from each bundle.
    cgroups: Mutex<HashMap<String, String>>,
}

fn running(ctx: &NodeContext) -> Vec<Running> {
    let pods: Vec<(String, String)> = ctx
        .pod_index
        .lock()
        .map(|i| i.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (key, uid) in pods {
        let Some((namespace, pod)) = key.split_once('/') else {
            continue;
        };
        let dir = PodDir {
            root: ctx.data_dir.join("pods").join(&uid),
            uid: uid.clone(),
        };
        let Ok(entries) = std::fs::read_dir(dir.root.join("containers")) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(container) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some((attempt, Run::Running { started_at })) = history(&dir, &container).latest {
                out.push(Running {
                    namespace: namespace.to_owned(),
                    pod: pod.to_owned(),
                    uid: uid.clone(),
                    id: dir.container_id(&container, attempt),
                    container,
                    started_at,
                });
            }
        }
    }
    out
}

impl StatsCollector {
    fn cgroup_of(&self, ctx: &NodeContext, c: &Running) -> Option<String> {
        let mut known = self.cgroups.lock().ok()?;
        if let Some(p) = known.get(&c.id) {
            return Some(p.clone());
        }
        let attempt = c.id.rsplit('-').next()?;
        let config = ctx
            .data_dir
            .join("pods")
            .join(&c.uid)
            .join("containers")
            .join(&c.container)
            .join(attempt)
            .join("bundle/config.json");
        let spec: Value = serde_json::from_slice(&std::fs::read(config).ok()?).ok()?;
        let path = spec["linux"]["cgroupsPath"].as_str()?.to_owned();
        known.insert(c.id.clone(), path.clone());
        Some(path)
    }

    /// Takes one sample of the node and of every running container.
    pub fn sample(&self, ctx: &NodeContext) {
        let (now, time) = (Instant::now(), Utc::now());
        if let (Some((usage, _)), Ok(mut node)) = (self.files.machine(), self.node.lock()) {
            node.observe(now, time, usage);
        }
        let live = running(ctx);
        let readings: Vec<(&Running, Usage)> = live
            .iter()
            .filter_map(|c| {
                let path = self.cgroup_of(ctx, c)?;
                Some((c, self.files.cgroup(&path)?))
            })
            .collect();
        if let Ok(mut known) = self.containers.lock() {
            known.retain(|id, _| live.iter().any(|c| &c.id == id));
            for (c, usage) in readings {
                let entry = known
                    .entry(c.id.clone())
                    .or_insert_with(|| (c.clone(), Series::default()));
                entry.1.observe(now, time, usage);
            }
        }
        if let Ok(mut known) = self.cgroups.lock() {
            known.retain(|id, _| live.iter().any(|c| &c.id == id));
        }
    }

    /// The kubelet's Summary API document (`stats/v1alpha1`), CPU and memory
    /// of what was running at the last sample.
    pub fn summary(&self, ctx: &NodeContext) -> Value {
        let mut node = json!({"nodeName": ctx.node_name});
        if let Some((cpu, memory)) = self.node.lock().ok().and_then(|n| n.render()) {
            node["cpu"] = cpu;
            node["memory"] = memory;
        }
        let known = self
            .containers
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let mut pods: HashMap<String, Value> = HashMap::new();
        for (c, series) in known.values() {
            let Some((cpu, memory)) = series.render() else {
                continue;
            };
            let started = c.started_at.to_rfc3339_opts(SecondsFormat::Secs, true);
            let pod = pods.entry(c.uid.clone()).or_insert_with(|| {
                json!({"podRef": {"name": c.pod, "namespace": c.namespace, "uid": c.uid},
                    "startTime": started, "containers": []})
            });
            if let Some(list) = pod["containers"].as_array_mut() {
                list.push(json!({"name": c.container, "startTime": started,
                    "cpu": cpu, "memory": memory}));
            }
        }
        for pod in pods.values_mut() {
            let sum = |section: &str, field: &str| -> u64 {
                pod["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c[section][field].as_u64())
                    .sum()
            };
            let time = pod["containers"][0]["cpu"]["time"].clone();
            let cpu = json!({"time": time, "usageNanoCores": sum("cpu", "usageNanoCores"),
                "usageCoreNanoSeconds": sum("cpu", "usageCoreNanoSeconds")});
            let memory = json!({"time": time, "usageBytes": sum("memory", "usageBytes"),
                "workingSetBytes": sum("memory", "workingSetBytes")});
            pod["cpu"] = cpu;
            pod["memory"] = memory;
        }
        json!({"node": node, "pods": pods.into_values().collect::<Vec<_>>()})
    }
}

/// Samples every [`INTERVAL`] until the future is dropped.
pub async fn run(ctx: Arc<NodeContext>) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let c = ctx.clone();
        // File reads: off the async threads.
        let _ = tokio::task::spawn_blocking(move || c.stats.sample(&c)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_use_is_the_rate_between_two_samples() {
        let mut s = Series::default();
        let t0 = Instant::now();
        let u = |cpu_ns| Usage {
            cpu_ns,
            memory_bytes: 10,
            working_set_bytes: 5,
        };
        s.observe(t0, Utc::now(), u(1_000_000_000));
        let (cpu, _) = s.render().expect("sampled");
        assert!(cpu.get("usageNanoCores").is_none(), "one sample is no rate");
        // Half a core for two seconds.
        s.observe(t0 + Duration::from_secs(2), Utc::now(), u(2_000_000_000));
        let (cpu, memory) = s.render().expect("sampled");
        assert_eq!(cpu["usageNanoCores"], 500_000_000);
        assert_eq!(memory["workingSetBytes"], 5);
        // A counter that went backwards (a new cgroup) keeps the last rate.
        s.observe(t0 + Duration::from_secs(4), Utc::now(), u(1));
        let (cpu, _) = s.render().expect("sampled");
        assert_eq!(cpu["usageNanoCores"], 500_000_000);
    }
}
