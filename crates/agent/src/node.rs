//! The agent's Node: registration with capacity and system info read from
//! the machine, the heartbeat Lease in `kube-node-lease`, and the status
//! (conditions, images) it reports.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{AgentError, NodeContext};

/// Seconds between Lease renewals (the kubelet's default).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How long a Lease holds (the kubelet's default).
const LEASE_SECONDS: i32 = 40;
/// Full status reports at least this often, changed or not.
const STATUS_REPORT: Duration = Duration::from_secs(60);

/// Facts about the machine for the Node object.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory: u64,
    /// Bytes on the filesystem of the data directory.
    pub disk: u64,
    /// Bytes free there.
    pub disk_free: u64,
    /// Bytes of memory available.
    pub memory_available: u64,
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Machine {
    /// Reads the machine's facts.
    pub fn read(data_dir: &std::path::Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (disk, disk_free) = nix::sys::statvfs::statvfs(data_dir)
            .map(|s| {
                let frag = s.fragment_size();
                (s.blocks() * frag, s.blocks_available() * frag)
            })
            .unwrap_or((0, 0));
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: meminfo_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
            memory_available: meminfo_kib(&meminfo, "MemAvailable:").unwrap_or(0) * 1024,
            disk,
            disk_free,
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The Node's conditions for the machine's state.
pub fn conditions(m: &Machine, previous: Option<&Node>) -> Value {
    let now = now();
    let since = |type_: &str, status: &str| {
        previous
            .and_then(|n| n.status.as_ref()?.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| now.clone())
    };
    let cond = |type_: &str, pressure: bool, ok_reason: &str, bad_reason: &str, msg: &str| {
        let (status, reason) = if type_ == "Ready" {
            ("True", ok_reason)
        } else if pressure {
            ("True", bad_reason)
        } else {
            ("False", ok_reason)
        };
        json!({"type": type_, "status": status, "reason": reason, "message": msg,
            "lastHeartbeatTime": now, "lastTransitionTime": since(type_, status)})
    };
    // The kubelet's default hard eviction thresholds.
    let memory_pressure = m.memory_available > 0 && m.memory_available < 100 << 20;
    let disk_pressure = m.disk > 0 && m.disk_free * 10 < m.disk;
    json!([
        cond(
            "MemoryPressure",
            memory_pressure,
            "KubeletHasSufficientMemory",
            "KubeletHasInsufficientMemory",
            "kubelet has sufficient memory available"
        ),
        cond(
            "DiskPressure",
            disk_pressure,
            "KubeletHasNoDiskPressure",
            "KubeletHasDiskPressure",
            "kubelet has no disk pressure"
        ),
        cond(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "KubeletHasInsufficientPID",
            "kubelet has sufficient PID available"
        ),
        cond(
            "Ready",
            false,
            "KubeletReady",
            "",
            "kubelet is posting ready status"
        ),
    ])
}

/// The Node's status (capacity, addresses, info, conditions, images).
pub fn node_status(ctx: &NodeContext, m: &Machine, previous: Option<&Node>) -> Value {
    let capacity = json!({"cpu": m.cpus.to_string(), "memory": format!("{}Ki", m.memory / 1024),
        "pods": ctx.max_pods.to_string(), "ephemeral-storage": format!("{}Ki", m.disk / 1024)});
    let images: Vec<Value> = ctx
        .images
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|(name, size)| json!({"names": [name], "sizeBytes": size}))
        .collect();
    let hostname = read_trimmed("/proc/sys/kernel/hostname");
    json!({
        "capacity": capacity, "allocatable": capacity,
        "conditions": conditions(m, previous),
        "addresses": [{"type": "InternalIP", "address": ctx.node_ip.to_string()},
            {"type": "Hostname", "address": hostname}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": ctx.port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("runc://{}", ctx.runtime_version),
            "kubeletVersion": crate::KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": kybern_apimachinery::go_arch(),
        },
        "images": images,
        "runtimeHandlers": ctx.runtimes.names().iter()
            .map(|h| json!({"name": h, "features": {"recursiveReadOnlyMounts": false, "userNamespaces": false}}))
            .collect::<Vec<_>>(),
    })
}

/// Registers the Node (or takes over the one of the same name).
pub async fn register(ctx: &NodeContext) -> Result<(), AgentError> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let m = Machine::read(&ctx.data_dir);
    let name = &ctx.node_name;
    if api.get_opt(name).await?.is_none() {
        let arch = kybern_apimachinery::go_arch();
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch}},
            "spec": {"podCIDR": ctx.pod_cidr, "podCIDRs": [ctx.pod_cidr]},
        }))
        .map_err(|e| AgentError::Config(e.to_string()))?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => tracing::info!(node = %name, "registered node"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Where local-path volumes live here (the Node may have been made by
    // someone else, or by an agent with another data directory).
    let root = std::path::absolute(crate::local_path::root(&ctx.data_dir))?;
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            crate::local_path::ROOT_ANNOTATION: root.to_string_lossy()}}})),
    )
    .await?;
    report_status(ctx, &m).await
}

async fn report_status(ctx: &NodeContext, m: &Machine) -> Result<(), AgentError> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let previous = api.get_status(&ctx.node_name).await.ok();
    let status = node_status(ctx, m, previous.as_ref());
    api.patch_status(
        &ctx.node_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

async fn renew_lease(ctx: &NodeContext) -> Result<(), AgentError> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": ctx.node_name},
        "spec": {"holderIdentity": ctx.node_name, "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now}});
    let params = PatchParams::apply("kybern-agent").force();
    api.patch(&ctx.node_name, &params, &Patch::Apply(lease))
        .await?;
    Ok(())
}

/// Renews the Lease every 10 s and reports status when its conditions or
/// images change, or every minute; runs until the task is dropped.
pub async fn heartbeat(ctx: std::sync::Arc<NodeContext>) {
    let mut last_report = tokio::time::Instant::now();
    let mut last_conditions = None;
    loop {
        if let Err(e) = renew_lease(&ctx).await {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        let m = Machine::read(&ctx.data_dir);
        let conditions: Vec<(String, String)> = conditions(&m, None)
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["type"].to_string(), c["status"].to_string()))
            .collect();
        // New images (pulled or imported) are reported at the next beat.
        let images = ctx.images.names().unwrap_or_default();
        let conditions = (conditions, images);
        let changed = last_conditions.as_ref() != Some(&conditions);
        if changed || last_report.elapsed() >= STATUS_REPORT {
            match report_status(&ctx, &m).await {
                Ok(()) => {
                    last_report = tokio::time::Instant::now();
                    last_conditions = Some(conditions);
                }
                Err(e) => tracing::warn!(error = %e, "reporting node status"),
            }
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_conditions_follow_the_machine() {
        let mut m = Machine {
            cpus: 2,
            memory: 8 << 30,
            disk: 100 << 30,
            disk_free: 50 << 30,
            memory_available: 4 << 30,
        };
        let status = |c: &Value, t: &str| {
            c.as_array()
                .expect("test setup")
                .iter()
                .find(|x| x["type"] == t)
                .expect("test setup")["status"]
                .clone()
        };
        let c = conditions(&m, None);
        assert_eq!(status(&c, "Ready"), "True");
        assert_eq!(status(&c, "MemoryPressure"), "False");
        assert_eq!(status(&c, "DiskPressure"), "False");
        m.memory_available = 50 << 20;
        m.disk_free = 5 << 30;
        let c = conditions(&m, None);
        assert_eq!(status(&c, "MemoryPressure"), "True");
        assert_eq!(status(&c, "DiskPressure"), "True");
        assert_eq!(meminfo_kib("MemTotal:  1024 kB\n", "MemTotal:"), Some(1024));
    }
}
