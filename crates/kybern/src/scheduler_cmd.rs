//! `kybern scheduler`: the scheduler alone, against any cluster's API through
//! a kubeconfig; `kybern server` runs the same scheduler in its own process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kybern_scheduler::leader::{ElectionTimings, LeaseElector};
use kybern_scheduler::{DEFAULT_SCHEDULER_NAME, Profile, Scheduler, SchedulerMetrics};

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

/// A client for the cluster a kubeconfig names, as `component`.
pub async fn client_from_kubeconfig(path: &Path, component: &str) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(
        config_from_kubeconfig(path, component).await?,
    )?)
}

/// The client settings of the kubeconfig at `path` (its current context),
/// for requests that name `component` in their `User-Agent`.
pub async fn config_from_kubeconfig(path: &Path, component: &str) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    set_user_agent(&mut config, component);
    Ok(config)
}

/// Names `component` in the `User-Agent` of `config`'s requests, as
/// upstream's components do (`kube-scheduler/v1.35.0 (linux/amd64) ...`).
/// The API server takes a write's field manager from the part before the
/// first `/`, so server-side apply and `managedFields` name the component,
/// not "unknown".
pub fn set_user_agent(config: &mut kube::Config, component: &str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let agent = format!(
        "{component}/{} ({}/{arch}) kybern/{}",
        crate::KUBERNETES_VERSION,
        std::env::consts::OS,
        env!("CARGO_PKG_VERSION")
    );
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config
            .headers
            .retain(|(name, _)| name != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, value));
    }
}

/// Runs the scheduler until interrupted.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let profiles = load_profiles(args.config.as_deref())?;
    let client = client_from_kubeconfig(&args.kubeconfig, "kube-scheduler").await?;
    let names: Vec<&str> = profiles.iter().map(|p| p.scheduler_name.as_str()).collect();
    println!("kybern scheduler: scheduling pods for {}", names.join(", "));
    let scheduler = Scheduler::new(client.clone(), profiles, SchedulerMetrics::default());
    let identity = format!("scheduler-{}", std::process::id());
    let task = spawn(scheduler, client, &args.election, &identity);
    tokio::select! {
        _ = task => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_names_the_component_once() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().expect("url"));
        set_user_agent(&mut config, "kube-scheduler");
        set_user_agent(&mut config, "kubelet");
        let agents: Vec<&str> = config
            .headers
            .iter()
            .filter(|(name, _)| name == http::header::USER_AGENT)
            .filter_map(|(_, v)| v.to_str().ok())
            .collect();
        assert_eq!(agents.len(), 1, "{agents:?}");
        assert!(agents[0].starts_with("kubelet/v1.35.0 ("), "{agents:?}");
        // What the API server takes as the field manager.
        assert_eq!(agents[0].split('/').next(), Some("kubelet"));
    }
}
