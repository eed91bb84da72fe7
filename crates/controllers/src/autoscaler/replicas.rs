//! The autoscaler's replica calculator: from the targeted pods, their usage
//! samples and their requests to a replica count, as upstream's
//! `ReplicaCalculator` decides it (tolerance, pods without samples, pods not
//! yet ready).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kybern_apimachinery::cached_pod::{CachedContainer, CachedPod};
use kybern_apimachinery::quantity::parse_milli;

/// One pod's usage of a resource, in milli-units, as the metrics API reported
/// it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSample {
    /// The usage: millicores, or thousandths of a byte.
    pub value: i64,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// The window the usage was averaged over.
    pub window: Duration,
}

/// Usage samples by pod name.
pub type PodSamples = HashMap<String, PodSample>;

/// The ratio band within which the replica count is left alone: below
/// `1 - down` scales down, above `1 + up` scales up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    /// The scale-down tolerance.
    pub down: f64,
    /// The scale-up tolerance.
    pub up: f64,
}

impl Tolerances {
    fn within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// What the calculator is told besides the pods and samples.
#[derive(Clone, Debug)]
pub struct Calculator {
    /// The band of usage ratios that changes nothing.
    pub tolerances: Tolerances,
    /// After a pod starts, how long its CPU samples count only once it is
    /// ready and a whole window has passed since (upstream's
    /// `--horizontal-pod-autoscaler-cpu-initialization-period`: 5 min).
    pub cpu_initialization_period: Duration,
    /// How long after its start an unready pod is taken as still starting
    /// (upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`:
    /// 30 s).
    pub initial_readiness_delay: Duration,
    /// The time of the pass.
    pub now: Timestamp,
}

/// A replica count a metric proposes, with what it measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    /// The proposed count.
    pub replicas: i32,
    /// The measured utilization in percent of the requests (utilization
    /// targets only).
    pub utilization: Option<i32>,
    /// The measured average usage per pod, in milli-units.
    pub average: i64,
}

/// The targeted pods sorted as upstream's `groupPods` sorts them.
struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    ignored: HashSet<String>,
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

impl Calculator {
    fn group(&self, pods: &[&CachedPod], samples: &PodSamples, resource: &str) -> Groups {
        let mut g = Groups {
            ready: 0,
            unready: HashSet::new(),
            missing: HashSet::new(),
            ignored: HashSet::new(),
        };
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref());
            if pod.metadata.deletion_timestamp.is_some() || phase == Some("Failed") {
                g.ignored.insert(name);
                continue;
            }
            if phase == Some("Pending") {
                g.unready.insert(name);
                continue;
            }
            let Some(sample) = samples.get(&name) else {
                g.missing.insert(name);
                continue;
            };
            if resource == "cpu" && self.cpu_unready(pod, sample) {
                g.unready.insert(name);
                continue;
            }
            g.ready += 1;
        }
        g
    }

    /// Whether a pod's CPU sample is to be set aside: the pod is not ready
    /// yet, or is still starting and the sample may include its start.
    fn cpu_unready(&self, pod: &CachedPod, sample: &PodSample) -> bool {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_deref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let (Some(ready), Some(start)) = (ready, start) else {
            return true;
        };
        let transition = ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        if after(start, self.cpu_initialization_period) > self.now {
            ready.status == "False" || sample.timestamp < after(transition, sample.window)
        } else {
            ready.status == "False" && after(start, self.initial_readiness_delay) > transition
        }
    }

    /// Groups the targeted pods and keeps the samples that count; an error
    /// when there are no pods or no such samples.
    fn usable(
        &self,
        pods: &[&CachedPod],
        samples: &mut PodSamples,
        resource: &str,
    ) -> Result<Groups, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group(pods, samples, resource);
        samples.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
        if samples.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        Ok(g)
    }

    /// The count from the first `ratio`; with pods missing samples (valued
    /// by `fill`, or left out on `None`), or unready pods on a scale-up
    /// (valued at nothing), from the ratio `ratio_of` gives after filling.
    fn decide(
        &self,
        current: i32,
        g: &Groups,
        mut samples: PodSamples,
        ratio: f64,
        fill: impl Fn(&str) -> Option<i64>,
        ratio_of: impl Fn(&PodSamples) -> Result<f64, String>,
    ) -> Result<i32, String> {
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        if !scale_up_with_unready && g.missing.is_empty() {
            if self.tolerances.within(ratio) {
                return Ok(current);
            }
            return Ok(ceil(ratio * g.ready as f64));
        }
        for name in &g.missing {
            if let Some(value) = fill(name) {
                samples.insert(name.clone(), filler(value));
            }
        }
        if scale_up_with_unready {
            for name in &g.unready {
                samples.insert(name.clone(), filler(0));
            }
        }
        let new_ratio = ratio_of(&samples)?;
        Ok(self.settle(current, ratio, new_ratio, samples.len()))
    }

    /// The replicas that bring the pods' average utilization of `resource`
    /// (percent of their requests) to `target`; upstream's
    /// `GetResourceReplicas`.
    pub fn utilization_replicas(
        &self,
        current: i32,
        target: i32,
        resource: &str,
        container: Option<&str>,
        pods: &[&CachedPod],
        mut samples: PodSamples,
    ) -> Result<Proposal, String> {
        let g = self.usable(pods, &mut samples, resource)?;
        let requests = requests(pods, container, resource)?;
        let (ratio, utilization, average) = utilization_ratio(&samples, &requests, target)?;
        // Pods without samples count as using their whole request (or the
        // target, if higher) on a scale-down and nothing on a scale-up.
        let fill = |name: &str| match ratio {
            r if r < 1.0 => {
                let request = requests.get(name).copied().unwrap_or(0);
                Some(request * i64::from(target.max(100)) / 100)
            }
            r if r > 1.0 => Some(0),
            _ => None,
        };
        let ratio_of = |s: &PodSamples| utilization_ratio(s, &requests, target).map(|r| r.0);
        let replicas = self.decide(current, &g, samples, ratio, fill, ratio_of)?;
        Ok(Proposal {
            replicas,
            utilization: Some(utilization),
            average,
        })
    }

    /// The replicas that bring the pods' average usage of `resource` to
    /// `target` milli-units; upstream's `GetRawResourceReplicas`.
    pub fn average_replicas(
        &self,
        current: i32,
        target: i64,
        resource: &str,
        pods: &[&CachedPod],
        mut samples: PodSamples,
    ) -> Result<Proposal, String> {
        let g = self.usable(pods, &mut samples, resource)?;
        let (ratio, average) = usage_ratio(&samples, target);
        let fill = |_: &str| Some(if ratio < 1.0 { target } else { 0 });
        let ratio_of = |s: &PodSamples| Ok(usage_ratio(s, target).0);
        let replicas = self.decide(current, &g, samples, ratio, fill, ratio_of)?;
        Ok(Proposal {
            replicas,
            utilization: None,
            average,
        })
    }

    /// The count after filling in pods without usable samples: unchanged
    /// when the new ratio is within tolerance or turns the direction around.
    fn settle(&self, current: i32, ratio: f64, new_ratio: f64, counted: usize) -> i32 {
        if self.tolerances.within(new_ratio)
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return current;
        }
        let replicas = ceil(new_ratio * counted as f64);
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return current;
        }
        replicas
    }
}

fn filler(value: i64) -> PodSample {
    PodSample {
        value,
        timestamp: Timestamp::UNIX_EPOCH,
        window: Duration::ZERO,
    }
}

fn ceil(x: f64) -> i32 {
    x.ceil().clamp(0.0, f64::from(i32::MAX)) as i32
}

/// Each pod's request of `resource` (its app containers and sidecars, or the
/// one named container), in milli-units; upstream's `calculateRequests`.
pub fn requests(
    pods: &[&CachedPod],
    container: Option<&str>,
    resource: &str,
) -> Result<HashMap<String, i64>, String> {
    let mut out = HashMap::with_capacity(pods.len());
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let sidecars = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let containers: Vec<&CachedContainer> = spec
            .map(|s| s.containers.iter())
            .into_iter()
            .flatten()
            .chain(sidecars)
            .collect();
        let mut sum = 0i64;
        for c in containers {
            if container.is_some_and(|n| n != c.name) {
                continue;
            }
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| parse_milli(&q.0).ok());
            match request {
                Some(v) => sum = sum.saturating_add(v),
                None => {
                    return Err(format!(
                        "missing request for {resource} in container {} of Pod {name}",
                        c.name
                    ));
                }
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// The usage over the requests of the pods that have both, against the
/// target: (ratio, utilization in percent, average usage per pod).
fn utilization_ratio(
    samples: &PodSamples,
    requests: &HashMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut usage, mut requested, mut counted) = (0i64, 0i64, 0i64);
    for (name, sample) in samples {
        if let Some(r) = requests.get(name) {
            usage = usage.saturating_add(sample.value);
            requested = requested.saturating_add(*r);
            counted += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (i128::from(usage) * 100 / i128::from(requested)) as i32;
    Ok((
        f64::from(utilization) / f64::from(target.max(1)),
        utilization,
        usage / counted,
    ))
}

/// The average usage against the target: (ratio, average).
fn usage_ratio(samples: &PodSamples, target: i64) -> (f64, i64) {
    let total: i64 = samples.values().map(|s| s.value).sum();
    let average = total / samples.len().max(1) as i64;
    (average as f64 / target.max(1) as f64, average)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-06-01T12:00:00Z";

    fn calc() -> Calculator {
        Calculator {
            tolerances: Tolerances { down: 0.1, up: 0.1 },
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
            now: NOW.parse().expect("now"),
        }
    }

    /// A running pod, ready since long before `NOW`, requesting `cpu`.
    fn pod(name: &str, cpu: &str) -> CachedPod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Running", "startTime": "2026-06-01T11:00:00Z",
                "conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-06-01T11:00:10Z"}]},
        }))
        .expect("pod")
    }

    fn samples(values: &[(&str, i64)]) -> PodSamples {
        values
            .iter()
            .map(|(n, v)| {
                let sample = PodSample {
                    value: *v,
                    timestamp: NOW.parse().expect("ts"),
                    window: Duration::from_secs(30),
                };
                ((*n).to_owned(), sample)
            })
            .collect()
    }

    #[test]
    fn utilization_scales_by_the_usage_ratio() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let refs: Vec<_> = pods.iter().collect();
        let s = samples(&[("a", 1000), ("b", 900), ("c", 800)]);
        // 90% used against 50% wanted: ceil(1.8 * 3) = 6.
        let p = calc()
            .utilization_replicas(3, 50, "cpu", None, &refs, s)
            .expect("proposal");
        assert_eq!(
            p,
            Proposal {
                replicas: 6,
                utilization: Some(90),
                average: 900
            }
        );
    }

    #[test]
    fn a_small_change_is_within_tolerance() {
        let pods = [pod("a", "1"), pod("b", "1")];
        let refs: Vec<_> = pods.iter().collect();
        let s = samples(&[("a", 540), ("b", 540)]);
        let p = calc()
            .utilization_replicas(2, 50, "cpu", None, &refs, s)
            .expect("proposal");
        assert_eq!(p.replicas, 2);
        assert_eq!(p.utilization, Some(54));
        // With a tighter scale-up tolerance the same use scales up.
        let mut tight = calc();
        tight.tolerances.up = 0.05;
        let s = samples(&[("a", 540), ("b", 540)]);
        let p = tight
            .utilization_replicas(2, 50, "cpu", None, &refs, s)
            .expect("proposal");
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn missing_pods_damp_a_scale_down() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let refs: Vec<_> = pods.iter().collect();
        // Two pods at 10% of a 50% target; the third reports nothing and
        // counts as using its whole request: (100 + 100 + 1000) / 3000 = 40%.
        let s = samples(&[("a", 100), ("b", 100)]);
        let p = calc()
            .utilization_replicas(3, 50, "cpu", None, &refs, s)
            .expect("proposal");
        assert_eq!(p.replicas, 3, "0.8 ratio over 3 pods rounds back to 3");
        assert_eq!(p.utilization, Some(10));
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up() {
        let mut starting = pod("c", "1");
        if let Some(s) = starting.status.as_mut() {
            s.phase = Some("Pending".into());
        }
        let pods = [pod("a", "1"), pod("b", "1"), starting];
        let refs: Vec<_> = pods.iter().collect();
        // 100% against 50%: without the pending pod 2 * 2 = 4; with it as
        // idle, (2000 / 3000) / 0.5 = 1.33 over 3 pods = 4.
        let s = samples(&[("a", 1000), ("b", 1000)]);
        let p = calc()
            .utilization_replicas(3, 50, "cpu", None, &refs, s)
            .expect("proposal");
        assert_eq!(p.replicas, 4);
    }

    #[test]
    fn a_starting_pod_counts_after_a_window_past_readiness() {
        let mut fresh = pod("a", "1");
        if let Some(s) = fresh.status.as_mut() {
            s.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-06-01T11:59:00Z".parse().expect("t"),
            ));
            s.conditions = Some(vec![
                serde_json::from_value(json!({"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-06-01T11:59:50Z"}))
                .expect("condition"),
            ]);
        }
        let c = calc();
        let sample = |secs: i64| PodSample {
            value: 1,
            timestamp: NOW.parse::<Timestamp>().expect("ts") - SignedDuration::from_secs(secs),
            window: Duration::from_secs(5),
        };
        // Ready at 11:59:50 with a 5 s window: a sample at 11:59:52 may hold
        // the start, one at 12:00:00 does not.
        assert!(c.cpu_unready(&fresh, &sample(8)));
        assert!(!c.cpu_unready(&fresh, &sample(0)));
    }

    #[test]
    fn requests_must_cover_every_container() {
        let mut p: CachedPod = pod("a", "250m");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers.push(CachedContainer {
                name: "side".into(),
                ..Default::default()
            });
        }
        let err = requests(&[&p], None, "cpu").expect_err("missing");
        assert_eq!(err, "missing request for cpu in container side of Pod a");
        let only = requests(&[&p], Some("c"), "cpu").expect("one container");
        assert_eq!(only.get("a"), Some(&250));
    }

    #[test]
    fn average_values_scale_by_the_usage_over_the_target() {
        let pods = [pod("a", "1"), pod("b", "1")];
        let refs: Vec<_> = pods.iter().collect();
        let s = samples(&[("a", 300), ("b", 500)]);
        // Average 400m against 200m: ceil(2 * 2) = 4.
        let p = calc()
            .average_replicas(2, 200, "cpu", &refs, s)
            .expect("proposal");
        assert_eq!(p.replicas, 4);
        assert_eq!(p.average, 400);
        assert_eq!(p.utilization, None);
        let none = calc().average_replicas(2, 200, "cpu", &[], PodSamples::new());
        assert_eq!(
            none.expect_err("no pods"),
            "no pods returned by selector while calculating replica count"
        );
    }
}
