//! The watch figure of `kybern bench api`: N concurrent pod watchers, each of
//! which must see every update of one pod; latency from the update's request to
//! its arrival at each watcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use tokio::sync::{Semaphore, mpsc, watch};

use super::stats::{Samples, deliveries};

/// How the benchmark's watchers read their streams.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchClient {
    /// HTTP/2, 250 watches per connection, as client-go does; each watcher
    /// reads lines and takes the event's resourceVersion, doing as little as
    /// it can so that the figure is the server's delivery.
    H2,
    /// The same over HTTP/1.1, one TLS connection per watch, as kube-rs
    /// opens them.
    Http1,
    /// kube-rs typed watches (`Api<Pod>::watch`): every event is deserialized
    /// into a `Pod` in the benchmark process, which shares the machine.
    Kube,
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))?)
}

/// The `resourceVersion` of the object in a MODIFIED watch line, found without
/// parsing the object (metadata precedes the spec in the server's encoding).
fn modified_rv(line: &str) -> Option<String> {
    if !line.starts_with("{\"type\":\"MODIFIED\"") {
        return None;
    }
    let meta = line.find("\"metadata\":")?;
    let at = meta + line[meta..].find("\"resourceVersion\":\"")? + "\"resourceVersion\":\"".len();
    let end = at + line[at..].find('"')?;
    Some(line[at..end].to_owned())
}

impl WatchClient {
    /// How the figure is labelled.
    pub fn label(self) -> &'static str {
        match self {
            WatchClient::H2 => "HTTP/2",
            WatchClient::Http1 => "HTTP/1.1",
            WatchClient::Kube => "kube-rs",
        }
    }
}

/// Where a watcher reads from.
#[derive(Clone)]
enum Source {
    Kube(Box<Api<Pod>>),
    Http1(u16, Arc<rustls::ClientConfig>),
    H2(super::raw_client::Connection),
}

/// How a watcher is told to start and to stop.
struct Signals {
    opening: Arc<Semaphore>,
    ready: mpsc::Sender<()>,
    done: watch::Receiver<bool>,
}

/// The resourceVersions of a watch's MODIFIED events (`None` for other events).
type Modified = futures::stream::BoxStream<'static, anyhow::Result<Option<String>>>;

/// Opens one watch; returns once the server has answered.
async fn open(source: Source, path: &str, rv: &str) -> anyhow::Result<Modified> {
    Ok(match source {
        Source::Kube(api) => api
            .watch(&WatchParams::default().timeout(600), rv)
            .await?
            .map(|e| {
                Ok(match e? {
                    WatchEvent::Modified(o) => o.metadata.resource_version,
                    _ => None,
                })
            })
            .boxed(),
        Source::Http1(port, config) => super::raw_client::get_http1(port, config, path)
            .await?
            .into_stream()
            .map(|l| Ok(modified_rv(&l?)))
            .boxed(),
        Source::H2(send) => super::raw_client::Lines::get(send, path)
            .await?
            .into_stream()
            .map(|l| Ok(modified_rv(&l?)))
            .boxed(),
    })
}

/// One watcher: the resourceVersions of the updates it saw and when.
async fn watch_one(
    source: Source,
    path: String,
    rv: String,
    updates: usize,
    mut signals: Signals,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let mut seen = Vec::with_capacity(updates);
    // Generous: the first watchers wait for all the others to open.
    let deadline = Duration::from_secs(300);
    let permit = signals.opening.acquire_owned().await?;
    let mut events = open(source, &path, &rv).await?;
    drop(permit);
    signals.ready.send(()).await?;
    while seen.len() < updates {
        match tokio::time::timeout(deadline, events.next()).await {
            Ok(Some(Ok(Some(rv)))) => seen.push((rv, Instant::now())),
            Ok(Some(Ok(None))) => {}
            _ => break,
        }
    }
    // Open until every watcher is done: closing early would load the
    // machine while others still receive.
    let _ = signals.done.wait_for(|d| *d).await;
    Ok(seen)
}

/// Opens `watchers` watches on a pod, updates it `updates` times 200 ms apart,
/// and returns the delivery latencies (every watcher must see every update)
/// and the server's RSS with the watchers open.
pub async fn run(
    client: &kube::Client,
    namespace: &str,
    watchers: usize,
    updates: usize,
    mode: WatchClient,
    server: (u16, &std::path::Path),
    server_rss: impl Fn() -> u64,
) -> anyhow::Result<(Samples, u64)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let created = api.create(&PostParams::default(), &pod("target")?).await?;
    let rv = created.metadata.resource_version.unwrap_or_default();
    let mut tasks = Vec::with_capacity(watchers);
    // Watches open 64 at a time (a TLS handshake each); each reports once the
    // server has answered, and the updates start when all have.
    let opening = Arc::new(Semaphore::new(64));
    let (ready, mut opened) = mpsc::channel(watchers.max(1));
    let (done, done_rx) = watch::channel(false);
    let mut connections = Vec::new();
    if mode == WatchClient::H2 {
        for _ in 0..watchers.div_ceil(super::raw_client::STREAMS_PER_CONNECTION) {
            connections.push(super::raw_client::connect(server.0, server.1).await?);
        }
    }
    let http1 = super::raw_client::tls_config(server.1, b"http/1.1")?;
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=600"
    );
    for i in 0..watchers {
        let source = match mode {
            WatchClient::Kube => Source::Kube(Box::new(api.clone())),
            WatchClient::Http1 => Source::Http1(server.0, http1.clone()),
            WatchClient::H2 => {
                Source::H2(connections[i / super::raw_client::STREAMS_PER_CONNECTION].clone())
            }
        };
        let signals = Signals {
            opening: opening.clone(),
            ready: ready.clone(),
            done: done_rx.clone(),
        };
        tasks.push(tokio::spawn(watch_one(
            source,
            path.clone(),
            rv.clone(),
            updates,
            signals,
        )));
    }
    drop(ready);
    for _ in 0..watchers {
        anyhow::ensure!(opened.recv().await.is_some(), "a watcher failed to open");
    }
    let mut sent = HashMap::new();
    for i in 0..updates {
        let t0 = Instant::now();
        let o = api
            .patch(
                "target",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"annotations": {"bench": i.to_string()}}}),
                ),
            )
            .await?;
        sent.insert(o.metadata.resource_version.unwrap_or_default(), t0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = server_rss();
    done.send_replace(true);
    let mut seen = Vec::with_capacity(watchers);
    for t in tasks {
        seen.push(t.await??);
    }
    Ok((deliveries(seen, &sent, watchers * updates)?, rss))
}

#[cfg(test)]
mod tests {
    use super::modified_rv;

    #[test]
    fn finds_the_resource_version_of_modified_lines_only() {
        let line = r#"{"type":"MODIFIED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"managedFields":[],"name":"t","resourceVersion":"42"},"spec":{}}}"#;
        assert_eq!(modified_rv(line).as_deref(), Some("42"));
        assert_eq!(modified_rv(&line.replace("MODIFIED", "ADDED")), None);
        assert_eq!(modified_rv(r#"{"type":"MODIFIED","object":{}}"#), None);
    }
}
