//! `kybern controller-manager`: the controllers alone, against any cluster's
//! API through a kubeconfig; `kybern server` runs the same controllers.

use std::path::PathBuf;
use std::time::Duration;

use kybern_controllers::{AutoscalerOptions, ControllerClients, ControllerOptions};
use kybern_scheduler::leader::{ElectionTimings, LeaseElector};

use crate::client_config::config_from_kubeconfig;
use crate::metrics_endpoint::MetricsArgs;
use crate::scheduler_cmd::{LeaderElectionArgs, hostname};

/// The controller manager's name in its requests' `User-Agent`, and so the
/// field manager of its writes, as upstream.
pub const MANAGER: &str = "kube-controller-manager";

/// Arguments of `kybern controller-manager`.
#[derive(clap::Args, Debug)]
pub struct ControllerManagerArgs {
    /// Kubeconfig of the cluster to manage.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// PEM file of the cluster CA, published as `kube-root-ca.crt` in every namespace.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// PEM certificate of the CA that signs approved certificate requests.
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// PEM private key of that CA.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    #[command(flatten)]
    controllers: ControllerFlags,
    #[command(flatten)]
    election: LeaderElectionArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Controller settings shared by `kybern server` and `kybern controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerFlags {
    /// Concurrent syncs per workload controller.
    #[arg(long, default_value_t = 5)]
    concurrent_syncs: usize,
    /// Seconds a node may go without a heartbeat before it is marked
    /// `Ready=Unknown` and tainted unreachable.
    #[arg(long, default_value_t = 50)]
    node_monitor_grace_period: u64,
    /// Run each controller as its own ServiceAccount in `kube-system`, with
    /// only its `system:controller:*` role (`=false`: every controller acts
    /// with the manager's own credentials).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
        action = clap::ArgAction::Set)]
    pub use_service_account_credentials: bool,
    /// How often the autoscaler reconciles every HorizontalPodAutoscaler (a
    /// Go duration: `15s`, `1m`).
    #[arg(long, default_value = "15s", value_parser = crate::flag_values::duration)]
    horizontal_pod_autoscaler_sync_period: Duration,
    /// How long the autoscaler looks back for a higher recommendation
    /// before it scales down.
    #[arg(long, default_value = "5m", value_parser = crate::flag_values::duration)]
    horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// The fraction by which usage may miss its target without a rescale.
    #[arg(long, default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// After a pod starts, how long its CPU samples count only once it is
    /// ready.
    #[arg(long, default_value = "5m", value_parser = crate::flag_values::duration)]
    horizontal_pod_autoscaler_cpu_initialization_period: Duration,
    /// How long after its start an unready pod is taken as still starting.
    #[arg(long, default_value = "30s", value_parser = crate::flag_values::duration)]
    horizontal_pod_autoscaler_initial_readiness_delay: Duration,
}

impl ControllerFlags {
    /// The controller manager's options from these flags.
    pub fn options(&self, root_ca_pem: Option<String>) -> ControllerOptions {
        ControllerOptions {
            root_ca_pem,
            workers: self.concurrent_syncs.max(1),
            node_monitor_grace_period: std::time::Duration::from_secs(
                self.node_monitor_grace_period.max(1),
            ),
            signing_ca: None,
            pods: None,
            autoscaler: AutoscalerOptions {
                sync_period: self
                    .horizontal_pod_autoscaler_sync_period
                    .max(Duration::from_secs(1)),
                downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
                tolerance: self.horizontal_pod_autoscaler_tolerance.max(0.0),
                cpu_initialization_period: self.horizontal_pod_autoscaler_cpu_initialization_period,
                initial_readiness_delay: self.horizontal_pod_autoscaler_initial_readiness_delay,
            },
        }
    }

    /// The controllers' clients: the manager's own from `config`, and per
    /// controller a ServiceAccount's unless switched off.
    pub fn clients(&self, config: kube::Config) -> anyhow::Result<ControllerClients> {
        let root = kube::Client::try_from(config.clone())?;
        self.clients_with(root, config)
    }

    /// As [`ControllerFlags::clients`], with the manager's own client given.
    pub fn clients_with(
        &self,
        root: kube::Client,
        config: kube::Config,
    ) -> anyhow::Result<ControllerClients> {
        Ok(if self.use_service_account_credentials {
            ControllerClients::service_accounts(root, config)?
        } else {
            ControllerClients::shared(root)
        })
    }
}

/// Starts the controllers: under the `kube-system/kube-controller-manager`
/// Lease as `identity`, or at once.
pub fn spawn(
    clients: ControllerClients,
    options: ControllerOptions,
    election: &LeaderElectionArgs,
    identity: &str,
) -> tokio::task::JoinHandle<()> {
    if !election.leader_elect {
        return tokio::spawn(kybern_controllers::run(clients, options));
    }
    let timings = ElectionTimings {
        lease_duration: election.leader_elect_lease_duration,
        renew_deadline: election.leader_elect_renew_deadline,
        retry_period: election.leader_elect_retry_period,
    };
    let identity = format!("{}_{identity}", hostname());
    let elector = LeaseElector::new(
        clients.root().clone(),
        "kube-system",
        "kube-controller-manager",
        &identity,
        timings,
    );
    tokio::spawn(elector.run(move || kybern_controllers::run(clients.clone(), options.clone())))
}

/// Runs the controller manager until interrupted.
pub async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let clients = args
        .controllers
        .clients(config_from_kubeconfig(&args.kubeconfig, MANAGER).await?)?;
    let root_ca_pem = match &args.root_ca_file {
        Some(p) => Some(std::fs::read_to_string(p)?),
        None => None,
    };
    let mut options = args.controllers.options(root_ca_pem);
    if let (Some(cert), Some(key)) = (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        options.signing_ca = Some(kybern_controllers::certificates::SigningCa {
            cert_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
        });
    }
    args.metrics
        .spawn(vec![kybern_controllers::metrics::registry()])
        .await?;
    println!("kybern controller-manager: running controllers");
    let identity = format!("controller-manager-{}", std::process::id());
    let task = spawn(clients, options, &args.election, &identity);
    tokio::select! {
        _ = task => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}
