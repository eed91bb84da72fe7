//! Watches the pods bound to this node (field selector `spec.nodeName`) and
//! hands each to its [`PodWorker`]; pods found on disk but gone from the API
//! get a worker that cleans them up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::NodeContext;
use crate::worker::PodWorker;

type Workers = HashMap<String, watch::Sender<Option<Arc<Pod>>>>;

fn uid(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

/// Hands `pod` (or its absence) to its worker, starting one if needed.
fn dispatch(ctx: &Arc<NodeContext>, workers: &mut Workers, uid: &str, pod: Option<Arc<Pod>>) {
    workers.retain(|_, tx| !tx.is_closed());
    if let Some(p) = &pod {
        ctx.index_pod(p, true);
    }
    if let Some(tx) = workers.get(uid) {
        let _ = tx.send(pod);
        return;
    }
    let (tx, rx) = watch::channel(pod);
    tokio::spawn(PodWorker::new(ctx.clone(), uid).run(rx));
    workers.insert(uid.to_owned(), tx);
}

/// Pod directories on disk.
fn pods_on_disk(ctx: &NodeContext) -> Vec<String> {
    std::fs::read_dir(ctx.data_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs the pod watch until the task is dropped.
pub async fn run(ctx: Arc<NodeContext>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: Workers = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = uid(&pod) {
                    listed.insert(uid.clone());
                    dispatch(&ctx, &mut workers, &uid, Some(Arc::new(pod)));
                }
            }
            Ok(Event::InitDone) => {
                // Whatever ran here but is no longer in the API goes.
                let known: Vec<String> = workers.keys().cloned().collect();
                for uid in known.into_iter().chain(pods_on_disk(&ctx)) {
                    if !listed.contains(&uid) {
                        dispatch(&ctx, &mut workers, &uid, None);
                    }
                }
            }
            Ok(Event::Apply(pod)) => {
                if let Some(uid) = uid(&pod) {
                    dispatch(&ctx, &mut workers, &uid, Some(Arc::new(pod)));
                }
            }
            Ok(Event::Delete(pod)) => {
                ctx.index_pod(&pod, false);
                if let Some(uid) = uid(&pod) {
                    dispatch(&ctx, &mut workers, &uid, None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
