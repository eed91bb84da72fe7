//! `kybern scheduler`: the scheduler alone, against any cluster's API through
//! a kubeconfig; `kybern server` runs the same scheduler in its own process.

use std::path::{Path, PathBuf};

use anyhow::Context;
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

/// A client for the cluster a kubeconfig names.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Runs the scheduler until interrupted.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let profiles = load_profiles(args.config.as_deref())?;
    let client = client_from_kubeconfig(&args.kubeconfig).await?;
    let names: Vec<&str> = profiles.iter().map(|p| p.scheduler_name.as_str()).collect();
    println!("kybern scheduler: scheduling pods for {}", names.join(", "));
    let scheduler = Scheduler::new(client, profiles, SchedulerMetrics::default());
    tokio::select! {
        _ = scheduler.run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}
