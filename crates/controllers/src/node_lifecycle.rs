//! The node lifecycle controller: marks a node whose kubelet stopped
//! heartbeating (Lease and status) `Ready=Unknown`, keeps the
//! `not-ready`/`unreachable`/`unschedulable` taints in step with the node's
//! conditions and `spec.unschedulable`, and evicts pods from `NoExecute`
//! taints they do not tolerate, after their `tolerationSeconds`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::events::reference_to_pod;
use kybern_scheduler::plugins::matching::tolerates;
use serde_json::json;

use crate::events::{EventRecorder, NORMAL, WARNING};
use crate::informer::Informer;
use crate::{ControllerError, Informers, metrics};

/// Taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a cordoned node.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Conditions the kubelet reports, set Unknown when it goes silent.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

struct NodeLifecycleController {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<CachedPod>>,
    /// How long a node may stay silent before it is `Unknown`.
    grace: Duration,
    recorder: EventRecorder,
    /// The taint eviction's own voice, as upstream splits it off.
    evictions: EventRecorder,
    /// The nodes seen so far, to report those that come and go.
    known: Mutex<HashSet<String>>,
}

/// Runs the controller: looks at every node each `grace / 8` (at least every
/// second, at most every five, as upstream's `--node-monitor-period`).
pub async fn run(client: kube::Client, informers: &Informers, grace: Duration) {
    let ctl = NodeLifecycleController {
        recorder: EventRecorder::new(client.clone(), "node-controller"),
        evictions: EventRecorder::new(client.clone(), "taint-eviction-controller"),
        known: Mutex::default(),
        client,
        nodes: informers.nodes.clone(),
        leases: informers.node_leases.clone(),
        pods: informers.pods.clone(),
        grace,
    };
    ctl.nodes.synced().await;
    ctl.leases.synced().await;
    ctl.pods.synced().await;
    let period = (grace / 8).clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = ctl.monitor().await {
            tracing::warn!(error = %e, "node lifecycle pass failed");
        }
    }
}

impl NodeLifecycleController {
    async fn monitor(&self) -> Result<(), ControllerError> {
        let now = Timestamp::now();
        let nodes = self.nodes.state();
        self.registered(&nodes);
        let mut first_err = None;
        for node in &nodes {
            if let Err(e) = self.check_node(node, now).await {
                first_err.get_or_insert(e);
            }
        }
        census(&nodes);
        let tainted: HashMap<&str, (&[Taint], String)> = nodes
            .iter()
            .filter_map(|n| {
                let taints = n.spec.as_ref()?.taints.as_deref()?;
                let name = n.metadata.name.as_deref().unwrap_or_default();
                taints
                    .iter()
                    .any(|t| t.effect == "NoExecute")
                    .then(|| (name, (taints, zone_of(n))))
            })
            .collect();
        if !tainted.is_empty() {
            for pod in self.pods.state() {
                let Some((taints, zone)) = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .and_then(|n| tainted.get(n))
                else {
                    continue;
                };
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if eviction_due(&pod, taints, now)
                    && let Err(e) = self.evict(&pod, zone).await
                {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Marks a silent node Unknown and puts its taints in step.
    async fn check_node(&self, node: &Node, now: Timestamp) -> Result<(), ControllerError> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        let mut conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let heard = last_heard(
            node,
            self.leases.get(Some("kube-node-lease"), name).as_deref(),
        );
        let silent = heard.is_none_or(|t| {
            Duration::try_from(now.duration_since(t)).unwrap_or_default() > self.grace
        });
        let ready_unknown = |c: &[NodeCondition]| {
            c.iter()
                .find(|c| c.type_ == "Ready")
                .is_some_and(|c| c.status == "Unknown")
        };
        if silent && !ready_unknown(&conditions) {
            mark_unknown(&mut conditions, now);
            let patch = json!({"status": {"conditions": conditions}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            tracing::info!(node = name, "node stopped posting status; marked Unknown");
            let message = format!("Node {name} status is now: NodeNotReady");
            self.recorder
                .post(node_reference(name), NORMAL, "NodeNotReady", message);
            self.mark_pods_not_ready(name, now).await?;
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        let wanted = desired_taints(&taints, &conditions, unschedulable, now);
        if wanted != taints {
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": wanted}});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Pods on an unreachable node are no longer Ready (so endpoints drop
    /// them), as upstream's `MarkPodsNotReady`.
    async fn mark_pods_not_ready(&self, node: &str, now: Timestamp) -> Result<(), ControllerError> {
        for pod in self.pods.state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let Some(mut conditions) = pod.status.as_ref().and_then(|s| s.conditions.clone())
            else {
                continue;
            };
            let Some(ready) = conditions
                .iter_mut()
                .find(|c| c.type_ == "Ready" && c.status != "False")
            else {
                continue;
            };
            ready.status = "False".into();
            ready.last_transition_time = Some(Time(now));
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let patch = json!({"status": {"conditions": conditions}});
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    let object = reference_to_pod(&pod.metadata, None);
                    let message = "Node is not ready".to_owned();
                    self.recorder.post(object, WARNING, "NodeNotReady", message);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reports the nodes that appeared since the last pass, and those gone.
    fn registered(&self, nodes: &[Arc<Node>]) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        let now: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for name in now.difference(&known) {
            let message = format!("Node {name} event: Registered Node {name} in Controller");
            self.recorder
                .post(node_reference(name), NORMAL, "RegisteredNode", message);
        }
        for name in known.difference(&now) {
            let message = format!("Node {name} event: Removing Node {name} from Controller");
            self.recorder
                .post(node_reference(name), NORMAL, "RemovingNode", message);
        }
        *known = now;
    }

    async fn evict(&self, pod: &CachedPod, zone: &str) -> Result<(), ControllerError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        tracing::info!(
            pod = name,
            namespace = ns,
            "evicting pod for a NoExecute taint"
        );
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                metrics::node_evicted(zone);
                let object = reference_to_pod(&pod.metadata, None);
                let message = format!("Marking for deletion Pod {ns}/{name}");
                self.evictions
                    .post(object, NORMAL, "TaintManagerEviction", message);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A node's zone as upstream keys it, from the topology labels (or their
/// deprecated `failure-domain.beta` forms): `<region>:<zone>`, or empty
/// when the node has neither. (Upstream joins them with `:\0:`; a NUL
/// byte in a metric label would only get in the way.)
fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let label = |key: &str, old: &str| {
        labels
            .and_then(|l| l.get(key).or_else(|| l.get(old)))
            .map_or("", String::as_str)
    };
    let region = label(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = label(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:{zone}")
    }
}

/// Reports each zone's nodes and how many of them are not Ready.
fn census(nodes: &[Arc<Node>]) {
    let mut zones: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for node in nodes {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let entry = zones.entry(zone_of(node)).or_default();
        entry.0 += 1;
        entry.1 += usize::from(!ready);
    }
    metrics::zone_census(zones.iter().map(|(z, n)| (z.as_str(), *n)));
}

/// A reference to a node as upstream's node Events make one: its name
/// stands in for its uid.
fn node_reference(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(name.into()),
        ..ObjectReference::default()
    }
}

/// The last sign of life: the Lease's renewal or the Ready heartbeat.
fn last_heard(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    renewed.max(status).max(created)
}

/// Sets the kubelet's conditions Unknown, as upstream does.
fn mark_unknown(conditions: &mut Vec<NodeCondition>, now: Timestamp) {
    for kind in KUBELET_CONDITIONS {
        let (reason, message) = match conditions.iter().any(|c| c.type_ == kind) {
            true => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
            false => (
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            ),
        };
        let fresh = NodeCondition {
            type_: kind.into(),
            status: "Unknown".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: None,
            last_transition_time: Some(Time(now)),
        };
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) => {
                let heartbeat = c.last_heartbeat_time.clone();
                *c = NodeCondition {
                    last_heartbeat_time: heartbeat,
                    ..fresh
                };
            }
            None => conditions.push(fresh),
        }
    }
}

/// The node's taints with the controller's own set from its conditions:
/// other taints are kept, and a kept taint keeps its `timeAdded`.
fn desired_taints(
    taints: &[Taint],
    conditions: &[NodeCondition],
    unschedulable: bool,
    now: Timestamp,
) -> Vec<Taint> {
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str());
    let mut own: Vec<(&str, &str)> = match ready {
        Some("False") => vec![(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")],
        Some("Unknown") => vec![(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")],
        _ => Vec::new(),
    };
    if unschedulable {
        own.push((UNSCHEDULABLE, "NoSchedule"));
    }
    let managed = |t: &Taint| [NOT_READY, UNREACHABLE, UNSCHEDULABLE].contains(&t.key.as_str());
    let mut out: Vec<Taint> = taints
        .iter()
        .filter(|t| !managed(t) || own.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in own {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    out
}

/// Whether a pod must go now: a `NoExecute` taint it does not tolerate, or
/// one whose tolerance (`tolerationSeconds` from the taint's `timeAdded`)
/// ran out.
fn eviction_due(pod: &CachedPod, taints: &[Taint], now: Timestamp) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(|taint| {
            let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
            if matching.is_empty() {
                return true;
            }
            // Tolerated forever unless every matching toleration has a limit;
            // then the shortest one counts.
            let Some(seconds) = matching
                .iter()
                .map(|t| t.toleration_seconds)
                .collect::<Option<Vec<i64>>>()
                .and_then(|s| s.into_iter().min())
            else {
                return false;
            };
            let since = taint.time_added.as_ref().map_or(now, |t| t.0);
            let waited = now.duration_since(since).as_secs();
            waited >= seconds.max(0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(status: &str) -> Vec<NodeCondition> {
        vec![NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            ..Default::default()
        }]
    }

    #[test]
    fn conditions_and_cordons_map_to_taints() {
        let now = Timestamp::now();
        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let t = desired_taints(std::slice::from_ref(&other), &cond("Unknown"), true, now);
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute"),
                (UNSCHEDULABLE, "NoSchedule")
            ]
        );
        // Back to Ready: only the foreign taint stays.
        assert_eq!(desired_taints(&t, &cond("True"), false, now), [other]);
    }

    #[test]
    fn a_zone_is_keyed_by_region_and_zone() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels}}))
                .expect("node")
        };
        assert_eq!(zone_of(&node(json!({}))), "");
        assert_eq!(
            zone_of(&node(json!({"topology.kubernetes.io/region": "eu",
                "topology.kubernetes.io/zone": "eu-1a"}))),
            "eu:eu-1a"
        );
        assert_eq!(
            zone_of(&node(
                json!({"failure-domain.beta.kubernetes.io/zone": "z"})
            )),
            ":z"
        );
    }

    #[test]
    fn toleration_seconds_delay_eviction() {
        let now = Timestamp::now();
        let taint = Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(
                now.checked_sub(Duration::from_secs(10)).expect("time"),
            )),
        };
        let pod = |tolerations: serde_json::Value| -> CachedPod {
            serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
                .expect("pod")
        };
        let taints = [taint];
        assert!(eviction_due(&pod(json!([])), &taints, now));
        let short = json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]);
        assert!(eviction_due(&pod(short), &taints, now));
        let long = json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]);
        assert!(!eviction_due(&pod(long), &taints, now));
        let forever = json!([{"operator": "Exists"}]);
        assert!(!eviction_due(&pod(forever), &taints, now));
    }

    #[test]
    fn a_silent_node_turns_unknown_keeping_its_last_heartbeat() {
        let now = Timestamp::now();
        let mut c = cond("True");
        mark_unknown(&mut c, now);
        assert_eq!(c.len(), 4);
        assert!(c.iter().all(|c| c.status == "Unknown"));
        assert_eq!(c[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(c[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
    }
}
