//! `kybern agent` (the node agent against a cluster), `kybern monitor` (one
//! container's monitor, started by the agent) and `kybern image` (the node's
//! image store).

use kybern_apimachinery::events::EventRecorder;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kybern_agent::host::LinuxHost;
use kybern_agent::images::ImageStore;
use kybern_agent::images::gc::GcPolicy;
use kybern_agent::images::pull::Registries;
use kybern_agent::network::{BridgeSettings, Cni};
use kybern_agent::runtime::Runc;
use kybern_agent::runtime::handlers::RuntimeHandlers;
use kybern_agent::runtime::log_file::LogPolicy;
use kybern_agent::runtime::monitor::MonitorSpec;
use kybern_agent::runtime::standby::StandbyMonitors;

/// Node settings shared by `kybern agent` and `kybern up`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentFlags {
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's IP (default: the address of the default route).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The node's pod CIDR: pods get their IPs from it.
    #[arg(long, default_value = "10.42.0.0/24")]
    pod_cidr: String,
    /// The Linux bridge of the pod network.
    #[arg(long, default_value = "kybern0")]
    bridge: String,
    /// Do not masquerade traffic from pods to outside the pod network.
    #[arg(long)]
    no_ip_masq: bool,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// The OCI runtime binary (RuntimeClass handler `runc`).
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// More RuntimeClass handlers, as `NAME=BINARY` (an OCI runtime with
    /// runc's command line, e.g. `crun=/usr/bin/crun`); repeatable.
    #[arg(long = "runtime-handler", value_parser = parse_handler)]
    runtime_handlers: Vec<(String, PathBuf)>,
    /// Rotate a container's log once it reaches this size (a quantity:
    /// `10Mi`), as the kubelet's containerLogMaxSize.
    #[arg(long, default_value = "10Mi", value_parser = parse_size)]
    container_log_max_size: u64,
    /// Log files kept per container, the current one included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    container_log_max_files: u32,
    /// Remove unused images once the image filesystem is this full
    /// (percent; 100 never).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// Remove unused images down to this (percent, below the high one).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// Keep images tagged more recently than this (`2m`, `30s`, `1h`).
    #[arg(long, default_value = "2m", value_parser = crate::flag_values::duration)]
    image_minimum_gc_age: std::time::Duration,
    /// How often image usage is checked.
    #[arg(long, default_value = "5m", value_parser = crate::flag_values::duration)]
    image_gc_interval: std::time::Duration,
    /// Pods the node takes.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The most processes one pod may run (the kubelet's podPidsLimit;
    /// -1 for no limit).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pod_max_pids: i64,
    /// Port of the agent's endpoint, published in the Node's `daemonEndpoints`.
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// Registry mirrors and plain-HTTP registries, in k3s's `registries.yaml`
    /// form (`mirrors: {docker.io: {endpoint: ["http://127.0.0.1:5000"]}}`).
    #[arg(long)]
    registries: Option<PathBuf>,
}

/// Arguments of `kybern agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster to join. With `--token`, where the agent
    /// writes the one it obtains, if it does not exist yet.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The API server's URL, to join with `--token`.
    #[arg(long, requires_all = ["token", "trust"])]
    server: Option<String>,
    /// A bootstrap token (`<id>.<secret>`) to join with: the agent asks for
    /// its client certificate with it (TLS bootstrap).
    #[arg(long, requires = "server")]
    token: Option<String>,
    /// The cluster CA certificate (PEM), to trust the server when joining.
    #[arg(long, requires = "server", group = "trust")]
    certificate_authority: Option<PathBuf>,
    /// The pin of the cluster CA's public key (`sha256:<hex>`, as `kybern
    /// token create --print-join-command` prints it): the agent learns the
    /// CA from the cluster's signed `kube-public/cluster-info` and trusts it
    /// only if its key is pinned. Repeat for several.
    #[arg(long, requires = "server", group = "trust")]
    discovery_token_ca_cert_hash: Vec<String>,
    /// Directory for images, pods and runtime state.
    #[arg(long, default_value = "/var/lib/kybern/agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    flags: AgentFlags,
}

/// Arguments of `kybern monitor` (started by the agent, one per container).
#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    #[arg(long)]
    runtime: PathBuf,
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    id: String,
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    exit_file: PathBuf,
    #[arg(long, default_value_t = LogPolicy::default().max_size)]
    log_max_size: u64,
    #[arg(long, default_value_t = LogPolicy::default().max_files)]
    log_max_files: u32,
    #[arg(long)]
    stdin_fifo: Option<PathBuf>,
    #[arg(long)]
    stdin_once: bool,
    #[arg(long)]
    tty: bool,
    #[arg(long)]
    pid_file: PathBuf,
}

/// `kybern image ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Import the images of an OCI image layout (a directory or a tar
    /// archive of one) into the node's store.
    Import {
        /// The layout or archive.
        file: PathBuf,
        /// The image's name when the archive gives only a tag.
        #[arg(long)]
        name: Option<String>,
        /// The agent's data directory.
        #[arg(long, default_value = "/var/lib/kybern/agent")]
        data_dir: PathBuf,
    },
    /// List the images in the node's store.
    List {
        /// The agent's data directory.
        #[arg(long, default_value = "/var/lib/kybern/agent")]
        data_dir: PathBuf,
    },
}

/// A positive byte quantity (`10Mi`, `512Ki`, `1000000`).
fn parse_size(s: &str) -> Result<u64, String> {
    kybern_apimachinery::quantity::parse_value(s)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a positive size"))
}

/// `NAME=BINARY`, NAME a DNS label as RuntimeClass handlers are.
fn parse_handler(s: &str) -> Result<(String, PathBuf), String> {
    let (name, binary) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=BINARY"))?;
    let label = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label || binary.is_empty() {
        return Err(format!(
            "{s:?}: the handler must be a DNS label and the binary a path"
        ));
    }
    Ok((name.to_owned(), PathBuf::from(binary)))
}

/// The IP of the interface the default route leaves by, else loopback.
pub fn default_ip() -> IpAddr {
    // Connecting a UDP socket sends nothing; it only picks a route.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

async fn runc_version(runc: &Path) -> String {
    let out = tokio::process::Command::new(runc)
        .arg("--version")
        .output()
        .await;
    out.ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let first = text.lines().next()?.to_owned();
            first.rsplit(' ').next().map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The node's name: `--node-name`, or the host's name in lower case.
pub fn node_name(flags: &AgentFlags) -> String {
    flags
        .node_name
        .clone()
        .unwrap_or_else(|| crate::scheduler_cmd::hostname().to_ascii_lowercase())
}

/// Runs the node agent against the cluster of `kubeconfig` until the future
/// is dropped.
pub async fn run_agent(
    kubeconfig: &Path,
    data_dir: &Path,
    flags: &AgentFlags,
) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    // The node agent plays the kubelet, and names itself so.
    crate::client_config::set_user_agent(&mut config, "kubelet");
    // The agent's endpoint admits clients with certificates from the cluster CA.
    let client_cas = config.root_cert.clone().unwrap_or_default();
    let node = node_name(flags);
    // A node's own certificate is rotated before it expires; the client
    // presents the current one at each new connection.
    let identity = match crate::client_cert::identity_of(&config.auth_info)? {
        Some((cert, key)) if crate::client_cert::names_node(&cert, &node) => {
            Some(crate::client_cert::RotatingIdentity::new(&cert, &key)?)
        }
        _ => None,
    };
    // Only a node's own identity may ask for its serving certificate.
    let server_tls_bootstrap = identity.is_some();
    let client = match &identity {
        Some(id) => crate::client_cert::client_with(
            &config,
            id.clone(),
            kybern_controllers::transport::MAX_IDLE_PER_HOST,
        )?,
        None => kube::Client::try_from(config)?,
    };
    let _rotation = identity.map(|id| {
        AbortOnDrop(tokio::spawn(crate::client_cert::rotate(
            client.clone(),
            kubeconfig.to_owned(),
            id,
            node.clone(),
        )))
    });
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let monitors = Arc::new(StandbyMonitors::new(std::env::current_exe()?));
    let log_policy = LogPolicy {
        max_size: flags.container_log_max_size,
        max_files: flags.container_log_max_files,
    };
    let mut runtimes = RuntimeHandlers::new(Arc::new(Runc {
        binary: flags.runc.clone(),
        root: data_dir.join("runc"),
        monitors: monitors.clone(),
        log_policy,
    }));
    for (name, binary) in &flags.runtime_handlers {
        // Each handler keeps its state apart: runtimes' state formats differ.
        runtimes.insert(
            name,
            Arc::new(Runc {
                binary: binary.clone(),
                root: data_dir.join("runtimes").join(name),
                monitors: monitors.clone(),
                log_policy,
            }),
        );
    }
    let network = Cni::bridge(
        &flags.cni_bin_dir,
        &BridgeSettings {
            bridge: flags.bridge.clone(),
            subnet: flags.pod_cidr.clone(),
            ipam_dir: data_dir.join("cni/ipam"),
            ip_masq: !flags.no_ip_masq,
        },
    );
    if flags.image_gc_low_threshold >= flags.image_gc_high_threshold
        && flags.image_gc_high_threshold < 100
    {
        anyhow::bail!(
            "--image-gc-low-threshold ({}) must be below --image-gc-high-threshold ({})",
            flags.image_gc_low_threshold,
            flags.image_gc_high_threshold
        );
    }
    let ctx = kybern_agent::NodeContext {
        events: EventRecorder::new(client.clone(), "kubelet").on_host(&node),
        image_gc: GcPolicy {
            high_percent: flags.image_gc_high_threshold,
            low_percent: flags.image_gc_low_threshold,
            min_age: flags.image_minimum_gc_age,
            interval: flags.image_gc_interval,
        },
        client,
        node_name: node,
        node_ip: flags.node_ip.unwrap_or_else(default_ip),
        pod_cidr: flags.pod_cidr.clone(),
        max_pods: flags.max_pods,
        pod_pids_limit: (flags.pod_max_pids > 0).then_some(flags.pod_max_pids),
        port: flags.agent_port,
        images: ImageStore::open(&data_dir.join("images"))?,
        registries: match &flags.registries {
            Some(path) => {
                Registries::load(path).with_context(|| format!("reading {}", path.display()))?
            }
            None => Registries::default(),
        },
        runtime_version: runc_version(&flags.runc).await,
        runtimes,
        network: Arc::new(network),
        host: Arc::new(LinuxHost::default()),
        data_dir,
        stats: Default::default(),
        server_tls_bootstrap,
        pod_index: Default::default(),
    };
    println!(
        "kybern agent: node {} ({}) running pods with {}, pod network {} on bridge {}",
        ctx.node_name,
        ctx.node_ip,
        ctx.runtimes.names().join(", "),
        ctx.pod_cidr,
        flags.bridge
    );
    kybern_agent::run(Arc::new(ctx), client_cas).await?;
    Ok(())
}

/// Ends a background task with the scope that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `kybern agent`: runs until interrupted.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if let (Some(server), Some(token)) = (&args.server, &args.token)
        && !args.kubeconfig.exists()
    {
        let ca_pem = match &args.certificate_authority {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("reading the cluster CA {}", file.display()))?,
            None => {
                crate::agent_discovery::discover_ca(
                    server,
                    token,
                    &args.discovery_token_ca_cert_hash,
                )
                .await?
            }
        };
        let node = node_name(&args.flags);
        crate::agent_join::bootstrap(server, token, &ca_pem, &node, &args.kubeconfig).await?;
    }
    tokio::select! {
        r = run_agent(&args.kubeconfig, &args.data_dir, &args.flags) => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; containers keep running");
            Ok(())
        }
    }
}

/// `kybern monitor`: runs one container to its end.
pub fn monitor(args: MonitorArgs) -> anyhow::Result<()> {
    let spec = MonitorSpec {
        runtime: args.runtime,
        root: args.root,
        bundle: args.bundle,
        id: args.id,
        log: args.log,
        exit_file: args.exit_file,
        log_policy: LogPolicy {
            max_size: args.log_max_size,
            max_files: args.log_max_files,
        },
        stdin_fifo: args.stdin_fifo,
        stdin_once: args.stdin_once,
        tty: args.tty,
        pid_file: args.pid_file,
    };
    kybern_agent::runtime::monitor::run(&spec)?;
    Ok(())
}

/// `kybern monitor-standby`: waits for a container's spec on standard input
/// and runs it; ends quietly if the input closes without one (the agent
/// that started it has gone).
pub fn monitor_standby() -> anyhow::Result<()> {
    if let Some(spec) = kybern_agent::runtime::standby::read_spec(std::io::stdin().lock())? {
        // How a restarted agent tells this monitor's container (see read_spec).
        std::env::set_current_dir(&spec.bundle)
            .with_context(|| format!("entering {}", spec.bundle.display()))?;
        kybern_agent::runtime::monitor::run(&spec)?;
    }
    Ok(())
}

/// Arguments of `kybern gate` (an OCI hook in a container's bundle).
#[derive(clap::Args, Debug)]
pub struct GateArgs {
    /// The gate (a named pipe) the agent opens or closes.
    file: PathBuf,
}

/// `kybern gate`: returns once the gate opens, fails if it closes.
pub fn gate(args: GateArgs) -> anyhow::Result<()> {
    kybern_agent::runtime::gate::wait(&args.file).map_err(|why| anyhow::anyhow!("{why}"))
}

/// `kybern image ...`.
pub fn image(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import {
            file,
            name,
            data_dir,
        } => {
            let store = ImageStore::open(&data_dir.join("images"))?;
            for name in kybern_agent::images::import_archive(&store, &file, name.as_deref())? {
                println!("imported {name}");
            }
        }
        ImageCommand::List { data_dir } => {
            let store = ImageStore::open(&data_dir.join("images"))?;
            for (name, size) in store.list()? {
                println!("{name}\t{size}");
            }
        }
    }
    Ok(())
}
