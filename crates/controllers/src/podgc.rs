//! The pod garbage collector: force-deletes pods bound to nodes that no
//! longer exist and unscheduled pods being deleted, and keeps the number of
//! finished pods under a threshold by deleting the oldest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kybern_apimachinery::cached_pod::CachedPod;

use crate::informer::{Change, Informer, next_change};
use crate::{ControllerError, Informers, metrics};

/// Upstream's `--terminated-pod-gc-threshold` default.
pub const TERMINATED_POD_THRESHOLD: usize = 12_500;
/// How often the collector looks (upstream's gcCheckPeriod).
const PERIOD: Duration = Duration::from_secs(20);

/// Runs the collector: every 20 s, and at once when a node is deleted.
pub async fn run(client: kube::Client, informers: &Informers) {
    let nodes = informers.nodes.clone();
    let pods = informers.pods.clone();
    let mut node_changes = nodes.subscribe();
    nodes.synced().await;
    pods.synced().await;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            change = next_change(&mut node_changes) => match change {
                Some(Change::Deleted(_) | Change::Resync) => {}
                Some(_) => continue,
                None => return,
            },
        }
        if let Err(e) = collect(&client, &nodes, &pods, TERMINATED_POD_THRESHOLD).await {
            tracing::warn!(error = %e, "pod garbage collection failed");
        }
    }
}

async fn collect(
    client: &kube::Client,
    nodes: &Informer<Node>,
    pods: &Informer<CachedPod>,
    threshold: usize,
) -> Result<(), ControllerError> {
    let known: HashSet<String> = nodes
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let all = pods.state();
    let node_api: Api<Node> = Api::all(client.clone());
    // The cache may not have a new node yet: ask the API before acting.
    let mut gone: HashMap<String, bool> = HashMap::new();
    // Each with upstream's reason, for the metrics.
    let mut victims: Vec<(Arc<CachedPod>, &str)> = Vec::new();
    for pod in &all {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) if !known.contains(node) => {
                let absent = match gone.get(node) {
                    Some(a) => *a,
                    None => {
                        let a = node_api.get_opt(node).await?.is_none();
                        gone.insert(node.to_owned(), a);
                        a
                    }
                };
                if absent {
                    victims.push((pod.clone(), "orphaned"));
                }
            }
            None if pod.metadata.deletion_timestamp.is_some() => {
                victims.push((pod.clone(), "unscheduled_terminating"));
            }
            _ => {}
        }
    }
    let mut finished: Vec<&Arc<CachedPod>> = all
        .iter()
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ) && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if finished.len() > threshold {
        finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let surplus = finished.len() - threshold;
        let oldest = finished.into_iter().take(surplus);
        victims.extend(oldest.map(|p| (p.clone(), "terminated")));
    }
    let mut first_err = None;
    for (pod, reason) in victims {
        let result = force_delete(client, &pod).await;
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        metrics::pod_force_deleted(ns, reason, result.is_ok());
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn force_delete(client: &kube::Client, pod: &CachedPod) -> Result<(), ControllerError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    tracing::info!(pod = name, namespace = ns, "garbage-collecting pod");
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
