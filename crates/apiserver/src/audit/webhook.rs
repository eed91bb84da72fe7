//! The audit webhook backend (`--audit-webhook-config-file`, upstream's
//! default `batch` mode): events are buffered and POSTed as `audit.k8s.io/v1`
//! `EventList`s to the server a kubeconfig names. A batch goes when it holds
//! `batch_max_size` events or `batch_max_wait` has passed since its first; a
//! failed POST is retried with doubling back-off up to `retries` times, then
//! the batch is dropped; when the buffer is full new events are dropped.
//! Requests never wait for the webhook.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::admission::webhook::client::{Target, parse_url, post};

/// How the webhook backend batches and retries.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Events held while the webhook is slow or down.
    pub buffer_size: usize,
    /// The most events in one request.
    pub batch_max_size: usize,
    /// The longest an event waits for its batch to fill.
    pub batch_max_wait: Duration,
    /// The first back-off after a failed POST.
    pub initial_backoff: Duration,
    /// POSTs of one batch before it is dropped.
    pub retries: u32,
    /// One POST's time limit.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    /// Upstream's defaults (`--audit-webhook-batch-*`).
    fn default() -> Self {
        WebhookOptions {
            buffer_size: 10_000,
            batch_max_size: 400,
            batch_max_wait: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(10),
            retries: 3,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why the webhook's kubeconfig cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("audit webhook config {path}: {why}")]
pub struct WebhookConfigError {
    path: String,
    why: String,
}

/// Where events go: the first cluster of the kubeconfig (its `server` URL
/// and CA); users in it are not presented.
#[derive(Clone, Debug)]
pub struct Destination {
    target: Target,
    ca_bundle: String,
}

impl Destination {
    /// Reads the kubeconfig at `path`.
    pub fn load(path: &Path) -> Result<Self, WebhookConfigError> {
        let fail = |why: String| WebhookConfigError {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let config: Value = serde_yaml_ng::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let cluster = &config["clusters"][0]["cluster"];
        let server = cluster["server"]
            .as_str()
            .ok_or_else(|| fail("no clusters[0].cluster.server".into()))?;
        let target = parse_url(server).map_err(fail)?;
        let ca_bundle = match (
            cluster["certificate-authority-data"].as_str(),
            cluster["certificate-authority"].as_str(),
        ) {
            (Some(data), _) => data.to_owned(),
            (None, Some(file)) => {
                use base64::Engine;
                let pem = std::fs::read(file).map_err(|e| fail(format!("{file}: {e}")))?;
                base64::engine::general_purpose::STANDARD.encode(pem)
            }
            // The system's roots, as a webhook without a caBundle.
            (None, None) => String::new(),
        };
        Ok(Destination { target, ca_bundle })
    }
}

/// A handle on the sending task; cloning shares it.
#[derive(Clone, Debug)]
pub struct AuditWebhook {
    events: mpsc::Sender<Value>,
}

impl AuditWebhook {
    /// Starts the sending task (on the current Tokio runtime).
    pub fn start(destination: Destination, options: WebhookOptions) -> Self {
        let (events, rx) = mpsc::channel(options.buffer_size.max(1));
        tokio::spawn(send_batches(destination, options, rx));
        AuditWebhook { events }
    }

    /// Queues one event; drops it when the buffer is full.
    pub fn send(&self, event: &Value) {
        if self.events.try_send(event.clone()).is_err() {
            tracing::warn!("audit webhook buffer full or closed; event dropped");
        }
    }
}

/// The body of one request.
pub fn event_list(items: Vec<Value>) -> Value {
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
}

async fn send_batches(
    destination: Destination,
    options: WebhookOptions,
    mut rx: mpsc::Receiver<Value>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + options.batch_max_wait;
        while batch.len() < options.batch_max_size.max(1) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) | Err(_) => break,
            }
        }
        deliver(&destination, &options, batch).await;
    }
}

async fn deliver(destination: &Destination, options: &WebhookOptions, batch: Vec<Value>) {
    let count = batch.len();
    let body = match serde_json::to_vec(&event_list(batch)) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialize audit events");
            return;
        }
    };
    let mut backoff = options.initial_backoff;
    for attempt in 1..=options.retries.max(1) {
        match post(
            &destination.target,
            &destination.ca_bundle,
            body.clone(),
            options.timeout,
        )
        .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, events = count, "audit webhook POST failed");
                if attempt < options.retries.max(1) {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
    tracing::error!(events = count, "audit webhook unreachable; batch dropped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_names_the_destination() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("hook.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: audit\n  cluster:\n    server: https://127.0.0.1:9443/audit\n    certificate-authority-data: QUJD\n",
        )
        .expect("write");
        let d = Destination::load(&path).expect("destination");
        assert_eq!((d.target.host.as_str(), d.target.port), ("127.0.0.1", 9443));
        assert_eq!(d.target.path, "/audit");
        assert_eq!(d.ca_bundle, "QUJD");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\n").expect("write");
        assert!(Destination::load(&path).is_err());
        std::fs::write(&path, "clusters: [{cluster: {server: 'http://x'}}]\n").expect("write");
        assert!(Destination::load(&path).is_err(), "plain HTTP is refused");
    }

    #[test]
    fn batches_are_event_lists() {
        let list = event_list(vec![json!({"auditID": "a"})]);
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(list["items"][0]["auditID"], "a");
    }
}
