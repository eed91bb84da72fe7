//! The kubelet's part for pods bound to simulated nodes: Running and Ready
//! with an IP from the node's pod CIDR, Succeeded after a while for Job pods,
//! removed once a deleted pod's grace period ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::Request;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::events::send_unread;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::Sim;

/// Status writes in flight at once.
const CONCURRENCY: usize = 32;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn node_of(pod: &CachedPod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn owned_by_job(pod: &CachedPod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job")
}

/// The annotation that makes a simulated pod end with the given exit code
/// (for Job failure paths); without it a Job's pod exits 0.
pub const EXIT_CODE_ANNOTATION: &str = "sim.kybern.dev/exit-code";

/// The exit code a finishing pod reports: its annotation's, else 0.
fn exit_code(pod: &CachedPod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXIT_CODE_ANNOTATION))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The status of a pod whose containers all run (or, with `exit`, all ended).
fn status(pod: &CachedPod, ip: &str, host_ip: &str, exit: Option<i32>) -> Value {
    let now = now();
    let spec = pod.spec.as_ref();
    let containers: Vec<Value> = spec
        .into_iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let state = match exit {
                None => json!({"running": {"startedAt": now}}),
                Some(code) => json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": now, "finishedAt": now}}),
            };
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
                "imageID": "", "containerID": format!("sim://{}", c.name),
                "ready": exit.is_none(), "started": exit.is_none(), "restartCount": 0, "state": state})
        })
        .collect();
    let ready = if exit.is_none() { "True" } else { "False" };
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": now});
    let phase = match exit {
        None => "Running",
        Some(0) => "Succeeded",
        Some(_) => "Failed",
    };
    json!({"status": {
        "phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}], "startTime": now,
        "conditions": [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"),
            cond("Ready", ready), cond("ContainersReady", ready), cond("PodScheduled", "True")],
        "containerStatuses": containers,
    }})
}

/// Pod IPs handed out per node, by the node's index.
struct Addresses {
    next: HashMap<String, u32>,
}

impl Addresses {
    fn take(&mut self, node: &str) -> (String, String) {
        let index: usize = node
            .rsplit('-')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let n = self.next.entry(node.to_owned()).or_insert(1);
        *n = *n % 253 + 1;
        let cidr = super::nodes::pod_cidr(index);
        let base = cidr.trim_end_matches("0/24");
        (
            format!("{base}{}", *n + 1),
            format!("10.0.{}.{}", index / 250, index % 250 + 2),
        )
    }
}

/// Watches every bound pod and acts for those on simulated nodes. Pods are
/// decoded as the control plane caches them (no `managedFields`), which is
/// all a simulated kubelet reads; like a kubelet it acts on what its watch
/// shows, so its writes' replies go unread.
pub async fn run(sim: Arc<Sim>) -> anyhow::Result<()> {
    let api: Api<CachedPod> = Api::all(sim.client.clone());
    let bound = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher(api, bound).default_backoff().boxed();
    let mut addresses = Addresses {
        next: HashMap::new(),
    };
    // Pods already handled, by uid, with the phase they were moved to.
    let mut handled: HashMap<String, &'static str> = HashMap::new();
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(ev) = events.next().await {
        let pod = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(watcher::Event::Delete(p)) => {
                handled.remove(&p.metadata.uid.unwrap_or_default());
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "sim pod watch");
                continue;
            }
        };
        let Some(node) = node_of(&pod).filter(|n| sim.names.contains(*n)) else {
            continue;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (ns, name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let pods = Request::new(format!("/api/v1/namespaces/{ns}/pods"));
        let client = sim.client.clone();
        if pod.metadata.deletion_timestamp.is_some() {
            if handled.insert(uid.clone(), "Deleting") == Some("Deleting") {
                continue;
            }
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(0)
                .clamp(0, 30) as u64;
            let limit = limit.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(grace)).await;
                let _permit = limit.acquire().await;
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                if let Err(e) = send_unread(&client, pods.delete(&name, &dp)).await {
                    tracing::debug!(error = %e, pod = %name, "sim: final delete");
                }
            });
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if handled.contains_key(&uid) || matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
            continue;
        }
        handled.insert(uid, "Running");
        let (ip, host_ip) = addresses.take(node);
        let job = owned_by_job(&pod).then(|| (sim.args.job_seconds, exit_code(&pod)));
        let limit = limit.clone();
        tokio::spawn(async move {
            {
                let _permit = limit.acquire().await;
                let running = status(&pod, &ip, &host_ip, None);
                let patch = Patch::Merge(&running);
                let request =
                    pods.patch_subresource("status", &name, &PatchParams::default(), &patch);
                if let Err(e) = send_unread(&client, request).await {
                    tracing::debug!(error = %e, pod = %name, "sim: start");
                    return;
                }
            }
            if let Some((after, code)) = job {
                tokio::time::sleep(after).await;
                let _permit = limit.acquire().await;
                let done = status(&pod, &ip, &host_ip, Some(code));
                let patch = Patch::Merge(&done);
                let request =
                    pods.patch_subresource("status", &name, &PatchParams::default(), &patch);
                if let Err(e) = send_unread(&client, request).await {
                    tracing::debug!(error = %e, pod = %name, "sim: finish");
                }
            }
        });
    }
    Ok(())
}
