//! Recording core/v1 Events about objects, for API clients (the scheduler,
//! the node agent, the controllers): what `kubectl describe` and `kubectl
//! get events` show. Before anything is written, [`correlator`] folds
//! repeats into a `count`, combines many similar Events, and limits what
//! each source says about each object, as client-go's recorder does.

pub mod correlator;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::de::IgnoredAny;
use serde_json::json;
use tokio::sync::mpsc;

use self::correlator::{EventCorrelator, EventFacts};

/// Events [`EventRecorder::post`] holds while earlier ones are written;
/// more are dropped (client-go's broadcaster queue is as long).
const QUEUED: usize = 1000;

/// An Event waiting to be written.
struct Queued {
    object: ObjectReference,
    type_: &'static str,
    reason: Cow<'static, str>,
    message: String,
}

/// Posts Events as one component, through client-go's correlation.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    correlator: Arc<Mutex<EventCorrelator>>,
    /// The writer of posted Events, started by the first post.
    queue: Arc<OnceLock<mpsc::Sender<Queued>>>,
}

impl EventRecorder {
    /// A recorder reporting as `component` (`default-scheduler`, `kubelet`).
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventRecorder {
            client,
            component: component.to_owned(),
            host: None,
            correlator: Arc::default(),
            queue: Arc::default(),
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

    /// Queues an Event to be written in the background, so that the caller
    /// (a controller's sync) never waits on it; when the queue is full the
    /// Event is dropped, as client-go drops it. Must be called within a
    /// Tokio runtime.
    pub fn post(
        &self,
        object: ObjectReference,
        type_: &'static str,
        reason: impl Into<Cow<'static, str>>,
        message: String,
    ) {
        let reason = reason.into();
        let queue = self.queue.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Queued>(QUEUED);
            // The writer's own copy has no queue: holding this one would
            // keep the channel open, and the task alive, forever.
            let recorder = EventRecorder {
                queue: Arc::default(),
                ..self.clone()
            };
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    recorder
                        .record(&e.object, e.type_, &e.reason, "", &e.message)
                        .await;
                }
            });
            tx
        });
        let event = Queued {
            object,
            type_,
            reason,
            message,
        };
        if let Err(e) = queue.try_send(event) {
            let reason = e.into_inner().reason;
            tracing::debug!(component = %self.component, %reason, "Event queue full; dropped");
        }
    }

    /// Records an Event about `object` (`Normal` or `Warning`) and waits for
    /// the write; `action` may be empty, as the kubelet leaves it. Failures
    /// are logged, not returned: an Event is advice.
    pub async fn record(
        &self,
        object: &ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let facts = EventFacts {
            component: &self.component,
            host: self.host.as_deref().unwrap_or_default(),
            object,
            type_,
            reason,
            message,
        };
        let Some(c) = self
            .correlator
            .lock()
            .ok()
            .and_then(|mut c| c.correlate(&facts, Instant::now()))
        else {
            return;
        };
        // Cluster-scoped objects' Events live in `default`, as upstream's.
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // The written Event that comes back is not read: only whether the
        // write succeeded, which spares decoding it (with its managedFields).
        let requests = kube::core::Request::new(api.resource_url());
        if let Some((name, count)) = c.previous {
            let patch = json!({"count": count + 1, "lastTimestamp": now, "message": c.message});
            let request = requests.patch(&name, &PatchParams::default(), &Patch::Merge(&patch));
            if self.send(request).await.is_ok() {
                self.written(c.key, name, count + 1);
                return;
            }
            // The Event is gone (expired, deleted): start it afresh.
        }
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("object"),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let mut event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": object,
            "reason": reason, "message": c.message, "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.host.as_deref().unwrap_or(&self.component),
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        // Absent, not null, as a typed Event would have sent them.
        if let Some(host) = &self.host {
            event["source"]["host"] = json!(host);
        }
        if !action.is_empty() {
            event["action"] = json!(action);
        }
        // A `Value` always serializes.
        let body = serde_json::to_vec(&event).unwrap_or_default();
        match self
            .send(requests.create(&PostParams::default(), body))
            .await
        {
            Ok(_) => self.written(c.key, name, 1),
            Err(e) => {
                if let Ok(mut m) = self.correlator.lock() {
                    m.forget(&c.key);
                }
                tracing::debug!(error = %e, %reason, "recording an Event");
            }
        }
    }

    /// Sends a built request; whether the API took it. The Event that
    /// comes back is not decoded.
    async fn send(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<(), kube::Error> {
        send_unread(&self.client, request).await
    }

    fn written(&self, key: String, name: String, count: i32) {
        if let Ok(mut m) = self.correlator.lock() {
            m.written(key, name, count);
        }
    }
}

/// A reference to `object`, as an Event's `involvedObject`.
pub fn reference_to<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
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

/// Sends a built write whose reply the caller does not read: whether the
/// API took it, without decoding the object that comes back.
pub async fn send_unread(
    client: &kube::Client,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<(), kube::Error> {
    let request = request.map_err(kube::Error::BuildRequest)?;
    client.request::<IgnoredAny>(request).await.map(drop)
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
