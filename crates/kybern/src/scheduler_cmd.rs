//! `kybern scheduler`: the scheduler alone, against any cluster's API through
//! a kubeconfig; `kybern server` runs the same scheduler in its own process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kybern_scheduler::leader::{ElectionTimings, LeaseElector};
use kybern_scheduler::{DEFAULT_SCHEDULER_NAME, Profile, Scheduler, SchedulerMetrics};

use crate::client_config::client_from_kubeconfig;
use crate::metrics_endpoint::MetricsArgs;

/// Arguments of `kybern scheduler`.
#[derive(clap::Args, Debug)]
pub struct SchedulerArgs {
    /// Kubeconfig of the cluster to schedule for.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// A `KubeSchedulerConfiguration` file (profiles, plugins, scoring strategy).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    election: LeaderElectionArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Leader election flags, as kube-scheduler spells them.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderElectionArgs {
    /// Run only while holding the `kube-system/kube-scheduler` Lease, so that
    /// one of several schedulers is active.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long the Lease holds without renewal.
    #[arg(long, value_parser = seconds, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before it stops scheduling.
    #[arg(long, value_parser = seconds, default_value = "10s")]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire or renew.
    #[arg(long, value_parser = seconds, default_value = "2s")]
    pub leader_elect_retry_period: Duration,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

/// This machine's name, for leader identities.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Starts the scheduler: under leader election as `identity`, or at once.
pub fn spawn(
    scheduler: Scheduler,
    client: kube::Client,
    election: &LeaderElectionArgs,
    identity: &str,
) -> tokio::task::JoinHandle<()> {
    if !election.leader_elect {
        return tokio::spawn(async move { scheduler.run().await });
    }
    let timings = ElectionTimings {
        lease_duration: election.leader_elect_lease_duration,
        renew_deadline: election.leader_elect_renew_deadline,
        retry_period: election.leader_elect_retry_period,
    };
    let identity = format!("{}_{identity}", hostname());
    let elector = LeaseElector::new(client, "kube-system", "kube-scheduler", &identity, timings);
    tokio::spawn(elector.run(move || {
        let scheduler = scheduler.clone();
        async move { scheduler.run().await }
    }))
}

/// The profiles a configuration file describes, or the default profile.
pub fn load_profiles(path: Option<&Path>) -> anyhow::Result<Vec<Profile>> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading scheduler configuration {}", p.display()))?;
            Ok(Profile::from_config(&text)?)
        }
        None => Ok(vec![Profile::default_named(DEFAULT_SCHEDULER_NAME)]),
    }
}

/// Runs the scheduler until interrupted.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let profiles = load_profiles(args.config.as_deref())?;
    let client = client_from_kubeconfig(&args.kubeconfig, "kube-scheduler").await?;
    let names: Vec<&str> = profiles.iter().map(|p| p.scheduler_name.as_str()).collect();
    println!("kybern scheduler: scheduling pods for {}", names.join(", "));
    let metrics = SchedulerMetrics::default();
    args.metrics.spawn(vec![metrics.registry()]).await?;
    let scheduler = Scheduler::new(client.clone(), profiles, metrics);
    let identity = format!("scheduler-{}", std::process::id());
    let task = spawn(scheduler, client, &args.election, &identity);
    tokio::select! {
        _ = task => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}
