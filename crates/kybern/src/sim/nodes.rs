//! Simulated nodes: their Node objects (capacity, Ready condition, pod CIDR)
//! and the Leases in `kube-node-lease` that say they are alive.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

use super::Sim;

/// The label that stops a node's heartbeat (value `stopped`).
const STOP_LABEL: &str = "sim.kybern.io/heartbeat";

/// Requests in flight while registering or renewing.
const CONCURRENCY: usize = 32;

/// Slices of the nodes renewed in turn through one heartbeat period.
const HEARTBEAT_SLICES: usize = 10;

/// The `/24` pod CIDR of the `index`-th simulated node, in 10.64.0.0/10.
pub fn pod_cidr(index: usize) -> String {
    format!("10.{}.{}.0/24", 64 + (index / 256) % 64, index % 256)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The conditions of a healthy node, as a kubelet reports them.
fn healthy_conditions() -> Value {
    let now = now();
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": reason,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        condition("Ready", "True", "KubeletReady"),
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
    ])
}

/// Whether the node's Ready condition is True.
fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn node_object(sim: &Sim, name: &str, index: usize) -> anyhow::Result<Node> {
    let a = &sim.args;
    let mut labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "type": "kybern-sim",
    });
    if a.zones > 0 {
        labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", index % a.zones));
    }
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels[k] = json!(v);
    }
    let taints: Vec<Value> = a
        .taints
        .iter()
        .map(|t| {
            let (kv, effect) = t.split_once(':').unwrap_or((t, "NoSchedule"));
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            json!({"key": k, "value": v, "effect": effect})
        })
        .collect();
    let resources = json!({"cpu": a.cpu, "memory": a.memory, "pods": a.pods.to_string(),
        "ephemeral-storage": "100Gi"});
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "sim.kybern.io/managed": "true"}},
        "spec": {"podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)], "taints": taints},
        "status": {
            "capacity": resources, "allocatable": resources, "phase": "Running",
            "conditions": healthy_conditions(),
            "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", index / 250, index % 250 + 2)},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "sim",
                "osImage": "kybern sim", "containerRuntimeVersion": "sim://0", "kubeletVersion": crate::KUBERNETES_VERSION,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        }
    }))
    .context("building a node")
}

/// Creates every node (or refreshes one that exists) and its Lease.
pub async fn register_all(sim: &Sim, names: &[String]) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(sim.client.clone());
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let nodes = nodes.clone();
            async move {
                let node = node_object(sim, name, i)?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        let status = json!({"status": node.status});
                        nodes
                            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                            .await?;
                    }
                    Err(e) => return Err(e).context(format!("registering node {name}")),
                }
                renew(sim, name).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Creates or renews one node's Lease as a kubelet does (upstream's
/// `nodelease` controller): an update of the Lease as last written, read
/// again only when that update fails; a missing Lease is created.
async fn renew(sim: &Sim, name: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(sim.client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(name.to_owned()),
        lease_duration_seconds: Some(40),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    let post = PostParams::default();
    let last = sim
        .leases
        .lock()
        .ok()
        .and_then(|mut held| held.remove(name));
    let updated = match last {
        Some(mut lease) => {
            lease.spec = Some(spec.clone());
            match leases.replace(name, &post, &lease).await {
                Ok(lease) => Some(lease),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => None,
                Err(e) => return Err(e).context(format!("renewing the lease of {name}")),
            }
        }
        None => None,
    };
    let lease = match updated {
        Some(lease) => lease,
        None => match leases.get_opt(name).await? {
            Some(mut lease) => {
                lease.spec = Some(spec);
                leases.replace(name, &post, &lease).await?
            }
            None => {
                let lease = Lease {
                    metadata: kube::core::ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace: Some("kube-node-lease".into()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                leases.create(&post, &lease).await?
            }
        },
    };
    if let Ok(mut held) = sim.leases.lock() {
        held.insert(name.to_owned(), lease);
    }
    Ok(())
}

/// The names of the nodes labelled to stop heartbeating, and of the others
/// that are not Ready.
fn node_states(nodes: Vec<Node>) -> (HashSet<String>, HashSet<String>) {
    let (mut stopped, mut not_ready) = (HashSet::new(), HashSet::new());
    for n in nodes {
        let stop = n
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(STOP_LABEL))
            .is_some_and(|v| v == "stopped");
        let ready = is_ready(&n);
        match n.metadata.name {
            Some(name) if stop => stopped.insert(name),
            Some(name) if !ready => not_ready.insert(name),
            _ => false,
        };
    }
    (stopped, not_ready)
}

/// Renews every live node's Lease each heartbeat period, skipping failed
/// nodes; like a kubelet's status loop, reports a live node Ready again when
/// the node lifecycle controller has marked it Unknown (e.g. after the
/// simulator was paused or the control plane too busy to take a renewal).
/// The nodes renew a slice at a time through the period, as independent
/// kubelets would, not all in one burst.
pub async fn heartbeat(sim: Arc<Sim>, names: Vec<String>) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(sim.client.clone());
    let mut tick = tokio::time::interval(sim.args.heartbeat_seconds / HEARTBEAT_SLICES as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // Which nodes are labelled to stop and which are not Ready, read once per
    // period from the watch cache; a failed read renews every node.
    let (mut stopped, mut not_ready) = (HashSet::new(), HashSet::new());
    for slice in (0..HEARTBEAT_SLICES).cycle() {
        tick.tick().await;
        if slice == 0 {
            (stopped, not_ready) = match nodes
                .list(&kube::api::ListParams::default().match_any())
                .await
            {
                Ok(list) => node_states(list.items),
                Err(e) => {
                    tracing::warn!(error = %e, "sim heartbeat: listing nodes");
                    Default::default()
                }
            };
        }
        let live: Vec<String> = names
            .iter()
            .skip(slice)
            .step_by(HEARTBEAT_SLICES)
            .filter(|n| !stopped.contains(*n) && !sim.args.fail_nodes.contains(n))
            .cloned()
            .collect();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(live)
            .map(|n| {
                let (sim, nodes) = (sim.clone(), nodes.clone());
                let recover = not_ready.contains(&n);
                async move {
                    renew(&sim, &n).await?;
                    if recover {
                        let status = json!({"status": {"conditions": healthy_conditions()}});
                        nodes
                            .patch_status(&n, &PatchParams::default(), &Patch::Merge(&status))
                            .await
                            .with_context(|| format!("reporting node {n} Ready"))?;
                    }
                    Ok(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "sim heartbeat");
            }
        }
    }
    Ok(())
}
