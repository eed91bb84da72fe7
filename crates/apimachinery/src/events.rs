//! Recording core/v1 Events about objects, for API clients (the scheduler,
//! the node agent): what `kubectl describe` and `kubectl get events` show.
//! A repeat of the same reason and message about the same object bumps the
//! first Event's `count` instead of adding another, as client-go's
//! correlator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// How many folded Events a recorder remembers before it starts afresh.
const REMEMBERED: usize = 10_000;

/// An Event's identity for folding repeats: object uid, field, reason, message.
type EventKey = (String, String, String, String);

/// Posts Events as one component, folding repeats into a count.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    /// The last Event name and count for each key.
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

impl EventRecorder {
    /// A recorder reporting as `component` (`default-scheduler`, `kubelet`).
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventRecorder {
            client,
            component: component.to_owned(),
            host: None,
            seen: Arc::default(),
        }
    }

    /// The same, naming the node it reports from (`source.host`).
    pub fn on_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// The component Events are reported as.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Records an Event about `object` (`Normal` or `Warning`); `action` may
    /// be empty, as the kubelet leaves it. Failures are logged, not
    /// returned: an Event is advice.
    pub async fn record(
        &self,
        object: &ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let key = (
            object.uid.clone().unwrap_or_default(),
            object.field_path.clone().unwrap_or_default(),
            reason.to_owned(),
            message.to_owned(),
        );
        let previous = self.seen.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((name, count)) = previous {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.remember(key, name, count + 1);
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("object"),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": object,
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host.as_deref().unwrap_or(&self.component),
            "action": (!action.is_empty()).then_some(action),
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
            Ok(_) => self.remember(key, name, 1),
            Err(e) => tracing::debug!(error = %e, %reason, "recording an Event"),
        }
    }

    fn remember(&self, key: EventKey, name: String, count: i32) {
        if let Ok(mut m) = self.seen.lock() {
            // Forget old entries so the map stays bounded.
            if m.len() > REMEMBERED && !m.contains_key(&key) {
                m.clear();
            }
            m.insert(key, (name, count));
        }
    }
}

/// A reference to a pod, or to one of its containers when `container` is
/// given (`fieldPath: spec.containers{name}`, as the kubelet writes it).
pub fn pod_reference(
    pod: &k8s_openapi::api::core::v1::Pod,
    container: Option<&str>,
) -> ObjectReference {
    let field_path = container.map(|name| {
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.name == name));
        let list = if init { "initContainers" } else { "containers" };
        format!("spec.{list}{{{name}}}")
    });
    reference_to_pod(&pod.metadata, field_path)
}

/// A reference to the pod with `metadata`, and `field_path` within it.
pub fn reference_to_pod(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    field_path: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: metadata.namespace.clone(),
        name: metadata.name.clone(),
        uid: metadata.uid.clone(),
        resource_version: metadata.resource_version.clone(),
        field_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_named_by_its_field_path() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "main"}]}
        }))
        .expect("test setup");
        let whole = pod_reference(&pod, None);
        assert_eq!(whole.field_path, None);
        assert_eq!(whole.uid.as_deref(), Some("u"));
        assert_eq!(
            pod_reference(&pod, Some("main")).field_path.as_deref(),
            Some("spec.containers{main}")
        );
        assert_eq!(
            pod_reference(&pod, Some("setup")).field_path.as_deref(),
            Some("spec.initContainers{setup}")
        );
    }
}
