//! Kybern's controller manager: upstream's controllers, each an API client
//! that watches through shared informers (one watch per kind for all of them),
//! reconciles from what it observes, and can be restarted at any moment.

pub mod deployment;
pub mod expectations;
pub mod garbage_collector;
pub mod informer;
pub mod namespace;
pub mod pods;
pub mod queue;
pub mod replicaset;
pub mod serviceaccount;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kybern_apimachinery::labels::Selector;

use crate::informer::Informer;

/// Why a sync failed; the key is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A call to the API server failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// The object cannot be acted on as it is.
    #[error("{0}")]
    Invalid(String),
}

/// The informers controllers share: one watch per kind.
pub struct Informers {
    /// Every pod.
    pub pods: Arc<Informer<Pod>>,
    /// Every ReplicaSet.
    pub replica_sets: Arc<Informer<ReplicaSet>>,
    /// Every Deployment.
    pub deployments: Arc<Informer<Deployment>>,
    /// Every Namespace.
    pub namespaces: Arc<Informer<Namespace>>,
    /// Every ServiceAccount.
    pub service_accounts: Arc<Informer<ServiceAccount>>,
    /// The `kube-root-ca.crt` ConfigMap of every namespace.
    pub root_ca_maps: Arc<Informer<ConfigMap>>,
}

impl Informers {
    /// Starts the watches.
    pub fn start(client: &kube::Client) -> Self {
        Informers {
            pods: Informer::spawn(Api::all(client.clone())),
            replica_sets: Informer::spawn(Api::all(client.clone())),
            deployments: Informer::spawn(Api::all(client.clone())),
            namespaces: Informer::spawn(Api::all(client.clone())),
            service_accounts: Informer::spawn(Api::all(client.clone())),
            root_ca_maps: Informer::spawn_with(
                Api::all(client.clone()),
                kube::runtime::watcher::Config::default().fields(&format!(
                    "metadata.name={}",
                    serviceaccount::ROOT_CA_CONFIG_MAP
                )),
            ),
        }
    }
}

/// Options of the controller manager.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// The cluster CA certificate (PEM) published as `kube-root-ca.crt` in
    /// every namespace.
    pub root_ca_pem: Option<String>,
    /// Concurrent syncs per workload controller (upstream: 5).
    pub workers: usize,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            root_ca_pem: None,
            workers: 5,
        }
    }
}

/// Runs every controller until the process ends.
pub async fn run(client: kube::Client, options: ControllerOptions) {
    let informers = Informers::start(&client);
    let workers = options.workers;
    tokio::join!(
        replicaset::run(client.clone(), &informers, workers),
        deployment::run(client.clone(), &informers, workers),
        garbage_collector::run(client.clone()),
        namespace::run(client.clone(), &informers),
        serviceaccount::run(client.clone(), &informers, options.root_ca_pem.clone()),
    );
}

/// Whether `labels` satisfy `selector`.
pub fn labels_match(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    selector.requirements.iter().all(|r| r.matches(&get))
}

/// The current time as an API timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
