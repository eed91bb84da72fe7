//! Kybern's controller manager: upstream's controllers, each an API client
//! that watches through shared informers (one watch per kind for all of them),
//! reconciles from what it observes, and can be restarted at any moment.

pub mod autoscaler;
pub mod bootstrap_signer;
pub mod bootstrap_token_cleaner;
pub mod certificates;
pub mod clusterrole_aggregation;
pub mod credentials;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod expectations;
pub mod garbage_collector;
pub mod history;
pub mod informer;
pub mod job;
pub mod local_path;
pub mod metrics;
pub mod namespace;
pub mod node_lifecycle;
pub mod own_writes;
pub mod persistent_volume;
pub mod podgc;
pub mod pods;
pub mod queue;
pub mod replicaset;
pub mod replicated;
pub mod resourcequota;
pub mod service_pods;
pub mod serviceaccount;
pub mod statefulset;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim,
    ReplicationController, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kybern_apimachinery::cached_pod::CachedPod;
use kybern_apimachinery::labels::Selector;

pub use crate::autoscaler::AutoscalerOptions;
pub use crate::credentials::ControllerClients;
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
    pub pods: Arc<Informer<CachedPod>>,
    /// Every ReplicaSet.
    pub replica_sets: Arc<Informer<ReplicaSet>>,
    /// Every ReplicationController.
    pub replication_controllers: Arc<Informer<ReplicationController>>,
    /// Every Deployment.
    pub deployments: Arc<Informer<Deployment>>,
    /// Every CronJob.
    pub cron_jobs: Arc<Informer<CronJob>>,
    /// Every DaemonSet.
    pub daemon_sets: Arc<Informer<DaemonSet>>,
    /// Every StatefulSet.
    pub stateful_sets: Arc<Informer<StatefulSet>>,
    /// Every ControllerRevision.
    pub controller_revisions: Arc<Informer<ControllerRevision>>,
    /// Every Job.
    pub jobs: Arc<Informer<Job>>,
    /// Every Node.
    pub nodes: Arc<Informer<Node>>,
    /// The nodes' heartbeat Leases (namespace `kube-node-lease`).
    pub node_leases: Arc<Informer<Lease>>,
    /// Every PodDisruptionBudget.
    pub disruption_budgets: Arc<Informer<PodDisruptionBudget>>,
    /// Every ResourceQuota.
    pub resource_quotas: Arc<Informer<ResourceQuota>>,
    /// Every HorizontalPodAutoscaler (autoscaling/v2).
    pub autoscalers: Arc<Informer<HorizontalPodAutoscaler>>,
    /// Every Namespace.
    pub namespaces: Arc<Informer<Namespace>>,
    /// Every ServiceAccount.
    pub service_accounts: Arc<Informer<ServiceAccount>>,
    /// Every Service.
    pub services: Arc<Informer<Service>>,
    /// Every EndpointSlice.
    pub endpoint_slices: Arc<Informer<EndpointSlice>>,
    /// Every Endpoints object.
    pub endpoints: Arc<Informer<Endpoints>>,
    /// The `kube-root-ca.crt` ConfigMap of every namespace.
    pub root_ca_maps: Arc<Informer<ConfigMap>>,
    /// Every ClusterRole.
    pub cluster_roles: Arc<Informer<ClusterRole>>,
    /// Every PersistentVolume.
    pub persistent_volumes: Arc<Informer<PersistentVolume>>,
    /// Every PersistentVolumeClaim.
    pub persistent_volume_claims: Arc<Informer<PersistentVolumeClaim>>,
    /// Every StorageClass.
    pub storage_classes: Arc<Informer<StorageClass>>,
}

impl Informers {
    /// Starts the watches; the pods' one unless `pods` is an informer the
    /// process already runs (shared with its scheduler).
    pub fn start(client: &kube::Client, pods: Option<Arc<Informer<CachedPod>>>) -> Self {
        Informers {
            pods: pods.unwrap_or_else(|| Informer::spawn(Api::all(client.clone()))),
            replica_sets: Informer::spawn(Api::all(client.clone())),
            replication_controllers: Informer::spawn(Api::all(client.clone())),
            deployments: Informer::spawn(Api::all(client.clone())),
            cron_jobs: Informer::spawn(Api::all(client.clone())),
            daemon_sets: Informer::spawn(Api::all(client.clone())),
            stateful_sets: Informer::spawn(Api::all(client.clone())),
            controller_revisions: Informer::spawn(Api::all(client.clone())),
            jobs: Informer::spawn(Api::all(client.clone())),
            nodes: Informer::spawn(Api::all(client.clone())),
            node_leases: Informer::spawn(Api::namespaced(client.clone(), "kube-node-lease")),
            disruption_budgets: Informer::spawn(Api::all(client.clone())),
            resource_quotas: Informer::spawn(Api::all(client.clone())),
            autoscalers: Informer::spawn(Api::all(client.clone())),
            namespaces: Informer::spawn(Api::all(client.clone())),
            service_accounts: Informer::spawn(Api::all(client.clone())),
            services: Informer::spawn(Api::all(client.clone())),
            endpoint_slices: Informer::spawn(Api::all(client.clone())),
            endpoints: Informer::spawn(Api::all(client.clone())),
            root_ca_maps: Informer::spawn_with(
                Api::all(client.clone()),
                kube::runtime::watcher::Config::default().fields(&format!(
                    "metadata.name={}",
                    serviceaccount::ROOT_CA_CONFIG_MAP
                )),
            ),
            cluster_roles: Informer::spawn(Api::all(client.clone())),
            persistent_volumes: Informer::spawn(Api::all(client.clone())),
            persistent_volume_claims: Informer::spawn(Api::all(client.clone())),
            storage_classes: Informer::spawn(Api::all(client.clone())),
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
    /// How long a node may go without a heartbeat before it is marked
    /// `Ready=Unknown` (upstream's `--node-monitor-grace-period`: 50 s).
    pub node_monitor_grace_period: Duration,
    /// The CA that signs approved certificate requests (upstream's
    /// `--cluster-signing-{cert,key}-file`); without one nothing is signed.
    pub signing_ca: Option<certificates::SigningCa>,
    /// A pod informer the process shares with other components (its
    /// scheduler), used instead of a watch of the manager's own.
    pub pods: Option<Arc<Informer<CachedPod>>>,
    /// The HorizontalPodAutoscaler controller's settings.
    pub autoscaler: AutoscalerOptions,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            root_ca_pem: None,
            workers: 5,
            node_monitor_grace_period: Duration::from_secs(50),
            signing_ca: None,
            pods: None,
            autoscaler: AutoscalerOptions::default(),
        }
    }
}

/// Runs every controller until the process ends: the informers under the
/// manager's own identity, each controller under the one `clients` gives it.
pub async fn run(clients: ControllerClients, options: ControllerOptions) {
    let informers = Informers::start(clients.root(), options.pods.clone());
    let workers = options.workers;
    let c = |name: &'static str| clients.client(name);
    tokio::join!(
        replicaset::run(c("replicaset-controller").await, &informers, workers),
        replicaset::run_replication_controllers(
            c("replication-controller").await,
            &informers,
            workers
        ),
        deployment::run(c("deployment-controller").await, &informers, workers),
        endpointslice::run(
            c("endpointslice-controller").await,
            c("endpoint-controller").await,
            &informers,
            workers
        ),
        daemonset::run(c("daemon-set-controller").await, &informers, workers),
        statefulset::run(c("statefulset-controller").await, &informers, workers),
        job::run(
            c("job-controller").await,
            c("ttl-after-finished-controller").await,
            &informers,
            workers
        ),
        cronjob::run(c("cronjob-controller").await, &informers, workers),
        disruption::run(c("disruption-controller").await, &informers, workers),
        node_lifecycle::run(
            c("node-controller").await,
            &informers,
            options.node_monitor_grace_period
        ),
        podgc::run(c("pod-garbage-collector").await, &informers),
        autoscaler::run(
            c("horizontal-pod-autoscaler").await,
            &informers,
            options.autoscaler.clone()
        ),
        resourcequota::run(c("resourcequota-controller").await, &informers, workers),
        garbage_collector::run(c("generic-garbage-collector").await),
        namespace::run(c("namespace-controller").await, &informers),
        persistent_volume::run(c("persistent-volume-binder").await, &informers),
        local_path::run(c("local-path-provisioner").await, &informers),
        serviceaccount::run(
            c("service-account-controller").await,
            c("root-ca-cert-publisher").await,
            &informers,
            options.root_ca_pem.clone()
        ),
        clusterrole_aggregation::run(c("clusterrole-aggregation-controller").await, &informers),
        bootstrap_token_cleaner::run(c("token-cleaner").await),
        bootstrap_signer::run(c("bootstrap-signer").await),
        certificates::run(
            c("certificate-controller").await,
            options.signing_ca.clone()
        ),
    );
}

/// Whether `labels` satisfy `selector`.
pub fn labels_match(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    selector.requirements.iter().all(|r| r.matches(&get))
}

/// Writes `updated` (with its new status, and the resourceVersion it was
/// read at) through the status subresource, and returns the resourceVersion
/// written (for [`own_writes::OwnWrites`]). An object gone meanwhile is not
/// an error (`None`); a conflict is, so the key is synced again from fresh
/// state.
pub async fn write_status<K>(
    client: &kube::Client,
    updated: &K,
) -> Result<Option<String>, ControllerError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let meta = updated.meta();
    let api: Api<K> = Api::namespaced(
        client.clone(),
        meta.namespace.as_deref().unwrap_or_default(),
    );
    let name = meta.name.clone().unwrap_or_default();
    match api
        .replace_status(&name, &kube::api::PostParams::default(), updated)
        .await
    {
        Ok(written) => Ok(written.meta().resource_version.clone()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The current time as an API timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
