//! Kybern's node agent, the kubelet's role: registers the Node and keeps its
//! Lease, and runs the pods bound to it as Linux containers (OCI bundles on
//! overlayfs, run by runc under a monitor process, attached to the pod
//! network through CNI).
//!
//! It is an API client like any other: it sees only its own pods, through a
//! field selector, and never touches the store. Every kernel call sits behind
//! a seam ([`runtime::ContainerRuntime`], [`network::PodNetwork`],
//! [`host::NodeHost`]).

pub mod csr;
pub mod endpoint;
pub mod host;
pub mod images;
pub mod local_path;
pub mod network;
pub mod node;
mod pods;
pub mod runtime;
pub mod stats;
pub mod streaming;
pub mod worker;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The kubelet version this agent reports.
pub const KUBELET_VERSION: &str = "v1.35.0";

/// What can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The API server refused or could not be reached.
    #[error("API: {0}")]
    Api(#[from] kube::Error),
    /// A file or process operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An image is missing, malformed or cannot be unpacked.
    #[error("image: {0}")]
    Image(String),
    /// The OCI runtime or a kernel call failed.
    #[error("runtime: {0}")]
    Runtime(String),
    /// The pod network failed.
    #[error("network: {0}")]
    Network(String),
    /// A certificate could not be asked for, issued or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The pod's spec asks for something that cannot be given (a missing
    /// ConfigMap key, a volume path that leaves its volume).
    #[error("{0}")]
    Config(String),
}

/// Everything the agent's tasks share.
pub struct NodeContext {
    /// The API client.
    pub client: kube::Client,
    /// This node's name.
    pub node_name: String,
    /// This node's IP (its InternalIP address).
    pub node_ip: IpAddr,
    /// The node's pod CIDR.
    pub pod_cidr: String,
    /// Pods the node takes.
    pub max_pods: u32,
    /// The most processes a pod may have (`None`: unlimited).
    pub pod_pids_limit: Option<i64>,
    /// The port of the agent's own endpoint.
    pub port: u16,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// The image store.
    pub images: images::ImageStore,
    /// When unused images are removed.
    pub image_gc: images::gc::GcPolicy,
    /// Registry mirrors and plain-HTTP registries, for pulls.
    pub registries: images::pull::Registries,
    /// The OCI runtimes, by RuntimeClass handler.
    pub runtimes: runtime::handlers::RuntimeHandlers,
    /// The runtime's version, for `nodeInfo`.
    pub runtime_version: String,
    /// The pod network.
    pub network: Arc<dyn network::PodNetwork>,
    /// Kernel calls.
    pub host: Arc<dyn host::NodeHost>,
    /// Resource use of the node and its containers.
    pub stats: stats::StatsCollector,
    /// Events about the node's pods, reported as `kubelet` from this node.
    pub events: kybern_apimachinery::events::EventRecorder,
    /// Whether to ask the cluster for a signed serving certificate (the
    /// kubelet's `serverTLSBootstrap`); needs the node's own credentials.
    pub server_tls_bootstrap: bool,
    /// The UIDs of the node's pods by `namespace/name`.
    pub pod_index: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl NodeContext {
    /// The UID of the pod `namespace/name` on this node.
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        let index = self.pod_index.lock().ok()?;
        index.get(&format!("{namespace}/{name}")).cloned()
    }

    fn index_pod(&self, pod: &k8s_openapi::api::core::v1::Pod, present: bool) {
        let (Some(ns), Some(name), Some(uid)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
            pod.metadata.uid.as_deref(),
        ) else {
            return;
        };
        if let Ok(mut index) = self.pod_index.lock() {
            let key = format!("{ns}/{name}");
            if present {
                index.insert(key, uid.to_owned());
            } else if index.get(&key).is_some_and(|u| u == uid) {
                index.remove(&key);
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers the node, then runs its heartbeat, its endpoint (for clients
/// with certificates from `client_cas`, DER) and its pods until the future
/// is dropped.
pub async fn run(ctx: Arc<NodeContext>, client_cas: Vec<Vec<u8>>) -> Result<(), AgentError> {
    std::fs::create_dir_all(ctx.data_dir.join("pods"))?;
    ctx.network.prepare().await?;
    node::register(&ctx).await?;
    let heartbeat = tokio::spawn(node::heartbeat(ctx.clone()));
    let names = vec![ctx.node_name.clone(), ctx.node_ip.to_string()];
    let serving = endpoint::serving_cert::ServingCert::load(&ctx.data_dir.join("pki"), names)?;
    // Asked for once the Node (with its addresses) exists: the approver checks them.
    let _serving_rotation = ctx.server_tls_bootstrap.then(|| {
        AbortOnDrop(tokio::spawn(endpoint::serving_cert::rotate(
            ctx.clone(),
            serving.clone(),
        )))
    });
    let endpoint = tokio::spawn(endpoint::serve(ctx.clone(), client_cas, serving));
    let sampler = tokio::spawn(stats::run(ctx.clone()));
    let _stop_sampler = AbortOnDrop(sampler);
    let image_gc = tokio::spawn(images::gc::run(ctx.clone(), ctx.image_gc));
    let _stop_image_gc = AbortOnDrop(image_gc);
    tokio::select! {
        _ = pods::run(ctx) => {}
        r = endpoint => if let Ok(Err(e)) = r {
            heartbeat.abort();
            return Err(e);
        },
    }
    heartbeat.abort();
    Ok(())
}
