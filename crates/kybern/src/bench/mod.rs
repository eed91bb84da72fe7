//! `kybern bench`: benchmarks that print figures beside a baseline measured in the same run.

mod api;
mod controllers;
mod pods;
mod raw_client;
mod scheduler;
mod server_process;
mod stats;
mod store;
mod target;
mod watchers;

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The API server against the raw store: create, get, list, watch.
    Api(api::ApiBenchArgs),
    /// The controllers: Deployments rolled out on simulated nodes, beside
    /// bare pods as the baseline.
    Controllers(controllers::ControllerBenchArgs),
    /// Pod startup through the node agent, beside raw runc; the agent's
    /// memory and CPU with many pods (needs root, runc, CNI plugins).
    Pods(pods::PodBenchArgs),
    /// The scheduler and simulated nodes, end to end through the API server.
    Scheduler(scheduler::SchedulerBenchArgs),
    /// The store: sqlite backend, etcd backend, and raw etcd as the baseline.
    Store(store::StoreBenchArgs),
}

/// Runs one benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Store(args) => store::run(args).await,
        BenchCommand::Api(args) => api::run(args).await,
        BenchCommand::Controllers(args) => controllers::run(args).await,
        BenchCommand::Scheduler(args) => scheduler::run(args).await,
        BenchCommand::Pods(args) => pods::run(args).await,
    }
}
