//! `kybern sim`: simulated nodes for testing and benchmarking at scale on one
//! machine (KWOK's idea). It registers Node objects, keeps their Leases
//! fresh, and plays the kubelet's part for pods bound to them: Running and
//! Ready with a pod IP, Succeeded after a while for Job pods, gone after the
//! grace period when deleted. It is an API client like any other and can run
//! beside real nodes.

mod nodes;
mod pods;

use k8s_openapi::api::coordination::v1::Lease;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Arguments of `kybern sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Kubeconfig of the cluster to add nodes to.
    #[arg(long)]
    pub kubeconfig: std::path::PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Node names are PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// CPU each node offers.
    #[arg(long, default_value = "32")]
    pub cpu: String,
    /// Memory each node offers.
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    /// Pods each node takes.
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
    /// Labels for every node: `key=value,...`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Taints for every node: `key=value:Effect,...`.
    #[arg(long, value_delimiter = ',')]
    pub taints: Vec<String>,
    /// How long a Job's pod runs before it ends (exit code 0, or the one its
    /// `sim.kybern.dev/exit-code` annotation names).
    #[arg(long, value_parser = humantime_secs, default_value = "5")]
    pub job_seconds: Duration,
    /// Seconds between Lease renewals (the kubelet renews every 10).
    #[arg(long, value_parser = humantime_secs, default_value = "10")]
    pub heartbeat_seconds: Duration,
    /// Nodes that never heartbeat (simulated failures); a node labelled
    /// `sim.kybern.io/heartbeat=stopped` stops too.
    #[arg(long, value_delimiter = ',')]
    pub fail_nodes: Vec<String>,
    /// Spread the nodes over this many zones (`topology.kubernetes.io/zone`
    /// zone-0, zone-1, ...); 0 for no zone label.
    #[arg(long, default_value_t = 0)]
    pub zones: usize,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("{s:?}: {e}"))
}

/// The simulator's shared view: which nodes are its own.
pub struct Sim {
    client: kube::Client,
    args: SimArgs,
    names: HashSet<String>,
    /// Each node's Lease as last written, which its next renewal updates.
    leases: Mutex<HashMap<String, Lease>>,
}

impl Sim {
    /// A simulator of `args.nodes` nodes, talking to the API through `client`.
    pub fn new(client: kube::Client, args: SimArgs) -> Self {
        let names = (0..args.nodes)
            .map(|i| format!("{}-{i}", args.name_prefix))
            .collect();
        Sim {
            client,
            args,
            names,
            leases: Default::default(),
        }
    }

    /// The nodes' names, in index order.
    fn ordered_names(&self) -> Vec<String> {
        (0..self.args.nodes)
            .map(|i| format!("{}-{i}", self.args.name_prefix))
            .collect()
    }

    /// Registers every node and its Lease.
    pub async fn register(&self) -> anyhow::Result<()> {
        nodes::register_all(self, &self.ordered_names()).await
    }
}

/// Plays the kubelets' part: renews the nodes' Leases (reporting them Ready
/// again if marked otherwise) and runs the pods bound to them, until either
/// loop ends.
pub async fn run_nodes(sim: Arc<Sim>) -> anyhow::Result<()> {
    tokio::try_join!(
        nodes::heartbeat(sim.clone(), sim.ordered_names()),
        pods::run(sim),
    )?;
    Ok(())
}

/// Runs the simulator until interrupted.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let client =
        crate::client_config::client_from_kubeconfig(&args.kubeconfig, "kybern-sim").await?;
    let sim = Arc::new(Sim::new(client, args));
    let started = std::time::Instant::now();
    sim.register().await?;
    println!(
        "kybern sim: {} nodes registered in {:.1} s",
        sim.args.nodes,
        started.elapsed().as_secs_f64()
    );
    tokio::select! {
        r = run_nodes(sim) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
