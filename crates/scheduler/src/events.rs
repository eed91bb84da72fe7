//! What the scheduler tells users: `Scheduled` and `FailedScheduling` Events
//! (through the shared recorder, which folds repeats into a `count`) and the
//! pod's `PodScheduled` condition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
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

/// Posts the scheduler's Events and pod conditions.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    events: kybern_apimachinery::events::EventRecorder,
}

impl EventRecorder {
    /// A recorder reporting as `component` (the scheduler's name).
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventRecorder {
            events: kybern_apimachinery::events::EventRecorder::new(client.clone(), component),
            client,
        }
    }

    /// The component Events are reported as.
    pub fn component(&self) -> &str {
        self.events.component()
    }

    /// Records an Event about a pod. Failures are logged: an Event is advice.
    pub async fn record(&self, pod: &PodInfo, type_: &str, reason: &str, message: &str) {
        let object = kybern_apimachinery::events::reference_to_pod(&pod.pod.metadata, None);
        self.events
            .record(&object, type_, reason, "Scheduling", message)
            .await;
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
