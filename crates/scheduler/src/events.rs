//! What the scheduler tells users: `Scheduled` and `FailedScheduling` Events
//! (core/v1, so `kubectl describe` and `kubectl get events` show them; a
//! repeated failure bumps the same Event's `count`) and the pod's
//! `PodScheduled` condition.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cache::PodInfo;

/// The failure message upstream writes: `0/5 nodes are available: 3
/// Insufficient cpu, 2 node(s) had untolerated taint {a: b}.` Reasons are
/// counted over nodes and sorted.
pub fn fit_error_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".to_owned();
    }
    // Reasons counted over no node are a pre-filter's: they come first, bare.
    let mut parts: Vec<String> = reasons
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(r, _)| r.clone())
        .collect();
    let mut counted: Vec<String> = reasons
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    counted.sort();
    parts.extend(counted);
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

/// An Event's identity for folding repeats: pod uid, reason, message.
type EventKey = (String, String, String);

/// Posts Events for one scheduler, folding repeats into a count.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    /// The last Event name and count for each (pod uid, reason, message).
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

impl EventRecorder {
    /// A recorder reporting as `component` (the scheduler's name).
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventRecorder {
            client,
            component: component.to_owned(),
            seen: Arc::default(),
        }
    }

    /// The component Events are reported as.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Records an Event about a pod. Failures are logged: an Event is advice.
    pub async fn record(&self, pod: &PodInfo, type_: &str, reason: &str, message: &str) {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let key = (pod.uid.clone(), reason.to_owned(), message.to_owned());
        let previous = self.seen.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((name, count)) = previous {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                if let Ok(mut m) = self.seen.lock() {
                    m.insert(key, (name, count + 1));
                }
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            pod.name,
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": pod.namespace},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": pod.namespace,
                "name": pod.name, "uid": pod.uid,
                "resourceVersion": pod.pod.metadata.resource_version},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.component,
            "action": "Scheduling",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let event: Event = match serde_json::from_value(event) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "building an Event");
                return;
            }
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if let Ok(mut m) = self.seen.lock() {
                    // Forget old entries so the map stays bounded.
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(key, (name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, pod = %pod.key(), "recording an Event"),
        }
    }

    /// Sets `PodScheduled=False` with the reason and message of the failure.
    pub async fn mark_unschedulable(&self, pod: &PodInfo, message: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let already = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message.as_deref() == Some(message)
            });
        if already {
            return;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": now,
        }]}});
        if let Err(e) = api
            .patch_status(
                &pod.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            tracing::debug!(error = %e, pod = %pod.key(), "setting PodScheduled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shape() {
        let reasons = BTreeMap::from([
            ("node(s) had untolerated taint {gpu: true}".to_owned(), 2),
            ("Insufficient cpu".to_owned(), 3),
        ]);
        assert_eq!(
            fit_error_message(5, &reasons),
            "0/5 nodes are available: 2 node(s) had untolerated taint {gpu: true}, 3 Insufficient cpu."
        );
        assert_eq!(
            fit_error_message(0, &reasons),
            "no nodes available to schedule pods"
        );
    }
}
