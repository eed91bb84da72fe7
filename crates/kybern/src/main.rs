//! `kybern`: the one binary of Kybern. Parses the command line and hands each
//! subcommand to its module; owns no logic of its own.

mod agent_cmd;
mod agent_discovery;
mod agent_join;
mod allocator;
mod audit_flags;
mod bench;
mod client_cert;
mod client_config;
mod component_cert;
mod controller_cmd;
mod flag_values;
mod kubeconfig_cmd;
mod metrics_endpoint;
mod scheduler_cmd;
mod server;
mod shared_pods;
mod sim;
mod store_writer;
mod token_cmd;

use clap::{Parser, Subcommand};

/// Kybern: a Kubernetes-compatible distributed operating system, in one binary.
#[derive(Parser, Debug)]
#[command(name = "kybern", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the version of this binary and of the Kubernetes API it serves.
    Version,
    /// Run the API server (the kernel) on a store.
    Server(Box<server::ServerArgs>),
    /// Run a whole single-node cluster in one process: API server,
    /// controllers, scheduler and node agent, with an admin kubeconfig.
    Up(Box<server::UpArgs>),
    /// Run the node agent (the kubelet's role) against a cluster.
    Agent(Box<agent_cmd::AgentArgs>),
    /// Import and list the node's container images.
    #[command(subcommand)]
    Image(agent_cmd::ImageCommand),
    /// Run one container under the agent (started by the agent, not by hand).
    #[command(hide = true)]
    Monitor(agent_cmd::MonitorArgs),
    /// Wait for a container's spec (JSON) on standard input, then run it as
    /// `monitor` does (started ahead of need by the agent).
    #[command(hide = true, name = "monitor-standby")]
    MonitorStandby,
    /// Hold a container until its pod's network is ready (an OCI hook the
    /// agent puts in the bundle, not run by hand).
    #[command(hide = true)]
    Gate(agent_cmd::GateArgs),
    /// Issue a client certificate from the cluster CA and write a kubeconfig
    /// with it (for a remote node agent: `--client-name system:node:NAME
    /// --org system:nodes`).
    Kubeconfig(kubeconfig_cmd::KubeconfigArgs),
    /// Make bootstrap tokens for agents to join with.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Run the scheduler alone, against a cluster's API.
    Scheduler(scheduler_cmd::SchedulerArgs),
    /// Run the controller manager alone, against a cluster's API.
    ControllerManager(controller_cmd::ControllerManagerArgs),
    /// Simulate nodes (and the kubelet's part for their pods) through the API.
    Sim(sim::SimArgs),
    /// Run a benchmark against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Write to a sqlite store and report each acknowledged write on stdout
    /// (used by the crash-safety test, which kills this process mid-stream).
    #[command(hide = true)]
    StoreWriter(store_writer::StoreWriterArgs),
}

/// The Kubernetes API version this build is compatible with.
pub const KUBERNETES_VERSION: &str = "v1.35.0";

fn main() -> anyhow::Result<()> {
    allocator::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KYBERN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "kybern {} (Kubernetes {KUBERNETES_VERSION} API)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Server(args) => runtime()?.block_on(server::run(*args)),
        Command::Up(args) => runtime()?.block_on(server::up(*args)),
        Command::Agent(args) => runtime()?.block_on(agent_cmd::run(*args)),
        Command::Image(cmd) => agent_cmd::image(cmd),
        Command::Monitor(args) => agent_cmd::monitor(args),
        Command::MonitorStandby => agent_cmd::monitor_standby(),
        Command::Gate(args) => agent_cmd::gate(args),
        Command::Kubeconfig(args) => kubeconfig_cmd::run(args),
        Command::Token(cmd) => runtime()?.block_on(token_cmd::run(cmd)),
        Command::Scheduler(args) => runtime()?.block_on(scheduler_cmd::run(args)),
        Command::ControllerManager(args) => runtime()?.block_on(controller_cmd::run(args)),
        Command::Sim(args) => runtime()?.block_on(sim::run(args)),
        Command::Bench(cmd) => runtime()?.block_on(bench::run(cmd)),
        Command::StoreWriter(args) => runtime()?.block_on(store_writer::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
