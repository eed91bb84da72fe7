//! `kybern server`: the API server on a store, over TLS with a generated CA, with
//! the system objects bootstrapped and an admin kubeconfig written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kybern_apiserver::auth::Authenticator;
use kybern_apiserver::encryption::{EncryptingStore, EncryptionConfig};
use kybern_apiserver::pki::{Pki, default_hosts};
use kybern_apiserver::{ApiState, bootstrap, tls};
use kybern_store::{Compactor, CompactorOptions, StoreUrl};

use crate::component_cert::ComponentIdentity;

/// Arguments of `kybern server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Directory for the embedded store, certificates and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/kybern")]
    data_dir: PathBuf,
    /// The store: `sqlite://PATH` (default: DATA_DIR/store.db) or `etcd://HOST:PORT,...`.
    #[arg(long)]
    store: Option<String>,
    /// HTTPS address of the API.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// The IP published in the `default/kubernetes` Endpoints, where the
    /// cluster reaches this server (default: the `--listen` address, or the
    /// address of the default route when that is unspecified or loopback).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Extra names or IPs for the serving certificate.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// An upstream `EncryptionConfiguration` (`aesgcm`, `secretbox`, `identity`): the
    /// resources it names are stored sealed.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Static bearer tokens: `token,user,uid[,"group1,group2"]` per line.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Also serve plain HTTP without authentication on this loopback address
    /// (off by default; for debugging).
    #[arg(long)]
    insecure_listen: Option<SocketAddr>,
    /// Do not verify node agents' serving certificates (they must otherwise
    /// be signed by the cluster CA for the node dialed; agents get them
    /// through `kubelet-serving` certificate requests).
    #[arg(long)]
    kubelet_insecure_tls: bool,
    /// Do not run the scheduler in this process (run `kybern scheduler`, or
    /// another scheduler, instead).
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controller manager in this process (run `kybern
    /// controller-manager` instead).
    #[arg(long)]
    disable_controllers: bool,
    /// A `KubeSchedulerConfiguration` file for the scheduler.
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    #[command(flatten)]
    audit: crate::audit_flags::AuditFlags,
    #[command(flatten)]
    controllers: crate::controller_cmd::ControllerFlags,
    #[command(flatten)]
    election: crate::scheduler_cmd::LeaderElectionArgs,
}

/// Arguments of `kybern up`: a server and a node agent in one process.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    agent: crate::agent_cmd::AgentFlags,
}

/// Runs the API server until interrupted.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    serve(args, None).await
}

/// `kybern up`: the API server, controllers, scheduler and a node agent
/// (DATA_DIR/agent) in one process, until interrupted.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    serve(args.server, Some(args.agent)).await
}

async fn serve(
    args: ServerArgs,
    agent: Option<crate::agent_cmd::AgentFlags>,
) -> anyhow::Result<()> {
    if let Some(addr) = args.insecure_listen {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "--insecure-listen must be a loopback address (got {addr})"
        );
    }
    // Read before anything starts, so a bad file stops the server at once.
    let profiles = crate::scheduler_cmd::load_profiles(args.scheduler_config.as_deref())?;
    let auditor = args.audit.auditor()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let url: StoreUrl = match &args.store {
        Some(s) => s.parse()?,
        None => StoreUrl::Sqlite(args.data_dir.join("store.db")),
    };
    let store = url
        .open()
        .await
        .with_context(|| format!("opening store {url:?}"))?;
    // The sqlite store compacts itself; an etcd store is compacted by its API server.
    let _compactor = matches!(url, StoreUrl::Etcd(_)).then(|| {
        let opts = CompactorOptions {
            interval: std::time::Duration::from_secs(300),
            min_retained_revisions: 1000,
        };
        Compactor::spawn(Arc::downgrade(&store), opts)
    });
    // Beneath everything else, so that no path reads or writes around it.
    let encryption = match &args.encryption_provider_config {
        Some(path) => Some(Arc::new(EncryptionConfig::load(path)?)),
        None => None,
    };
    let store: Arc<dyn kybern_store::Store> = match &encryption {
        Some(config) => {
            tracing::info!("encrypting at rest");
            Arc::new(EncryptingStore::new(store, config.clone()))
        }
        None => store,
    };
    let state = ApiState::new(store);
    if let Some(config) = encryption {
        let _ = state.encryption.set(config);
    }
    if let Some(auditor) = auditor {
        let _ = state.audit.set(auditor);
    }
    bootstrap::bootstrap(&state, args.listen.port())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping system objects: {e}"))?;

    state.start_caches();
    tokio::spawn(kybern_apiserver::crd::run(state.clone()));

    let mut hosts = args.tls_sans.clone();
    if !args.listen.ip().is_unspecified() {
        hosts.push(args.listen.ip().to_string());
    }
    let pki = Pki::ensure(&args.data_dir.join("pki"), &default_hosts(&hosts))?;
    let _ = state
        .node_proxy
        .set(kybern_apiserver::node_proxy::NodeProxy::new(
            &pki,
            !args.kubelet_insecure_tls,
        )?);
    let signer = kybern_apiserver::service_account_token::TokenSigner::load_or_create(
        &args.data_dir.join("pki").join("service-account.key"),
    )?;
    let _ = state.token_signer.set(Arc::new(signer));
    let auth = match &args.token_file {
        Some(path) => Authenticator::from_token_file(path)?,
        None => Authenticator::default(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let advertised = kybern_apiserver::kubernetes_endpoints::Advertised {
        ip: args.advertise_address.unwrap_or_else(|| {
            let listen = args.listen.ip();
            if listen.is_unspecified() || listen.is_loopback() {
                crate::agent_cmd::default_ip()
            } else {
                listen
            }
        }),
        port: addr.port(),
    };
    tokio::spawn(kybern_apiserver::kubernetes_endpoints::run(
        state.clone(),
        advertised,
    ));
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let server_url = format!("https://{}", SocketAddr::new(host.parse()?, addr.port()));
    let kubeconfig = args.data_dir.join("admin.kubeconfig");
    pki.write_admin_kubeconfig(&kubeconfig, &server_url)?;
    bootstrap::publish_cluster_info(&state, &server_url, &pki.ca_pem)
        .await
        .map_err(|e| anyhow::anyhow!("publishing cluster-info: {e}"))?;
    // In-process components' certificates, renewed while the server runs.
    let mut components = Vec::new();
    // The controller manager's clients: its own identity (upstream's
    // `system:kube-controller-manager`), and under it each controller as
    // its own ServiceAccount; without those, every controller acts as the
    // cluster admin.
    let controller_clients = if args.disable_controllers {
        None
    } else if args.controllers.use_service_account_credentials {
        let own = args.data_dir.join("controller-manager.kubeconfig");
        let user = "system:kube-controller-manager";
        let (component, config) =
            ComponentIdentity::issue(&pki, &own, &server_url, user, &[]).await?;
        let root = component.client(&config, kybern_controllers::transport::MAX_IDLE_PER_HOST)?;
        components.push(component);
        Some(args.controllers.clients_with(root, config)?)
    } else {
        let config = crate::client_config::config_from_kubeconfig(
            &kubeconfig,
            crate::controller_cmd::MANAGER,
        )
        .await?;
        Some(args.controllers.clients(config)?)
    };
    // With both in this process, the scheduler reads the manager's pod
    // cache rather than holding every pod a second time.
    let shared_pods = match (&controller_clients, args.disable_scheduler) {
        (Some(clients), false) => Some(kybern_controllers::informer::Informer::spawn(
            kube::Api::all(clients.root().clone()),
        )),
        _ => None,
    };
    if !args.disable_scheduler {
        // An API client like any other, with its own identity and only the
        // rights of upstream's `system:kube-scheduler`.
        let own = args.data_dir.join("scheduler.kubeconfig");
        let user = "system:kube-scheduler";
        let (component, config) =
            ComponentIdentity::issue(&pki, &own, &server_url, user, &[]).await?;
        let client = component.client(&config, kybern_scheduler::scheduler::MAX_IN_FLIGHT)?;
        components.push(component);
        let metrics = kybern_scheduler::SchedulerMetrics::default();
        state.metrics.add_registry(metrics.registry());
        let mut scheduler = kybern_scheduler::Scheduler::new(client.clone(), profiles, metrics);
        if let Some(pods) = &shared_pods {
            scheduler = scheduler.with_pod_feed(crate::shared_pods::feed(pods.clone()));
        }
        // Stable across restarts of this server, so it takes its Lease back at once.
        let identity = format!("server-{}", addr.port());
        crate::scheduler_cmd::spawn(scheduler, client, &args.election, &identity);
    }
    if let Some(clients) = controller_clients {
        let mut options = args.controllers.options(Some(pki.ca_pem.clone()));
        // The server's controllers sign with the cluster CA itself.
        options.signing_ca = Some(kybern_controllers::certificates::SigningCa {
            cert_pem: pki.ca_pem.clone(),
            key_pem: std::fs::read_to_string(pki.dir.join("ca.key"))
                .context("reading the cluster CA key")?,
        });
        options.pods = shared_pods;
        state
            .metrics
            .add_registry(kybern_controllers::metrics::registry());
        let identity = format!("server-{}", addr.port());
        crate::controller_cmd::spawn(clients, options, &args.election, &identity);
    }
    let app = kybern_apiserver::server::authenticated_router(state.clone(), Arc::new(auth));
    let serving = tls::ServingCert::new(&pki)?;
    let secure = tls::serve_tls(listener, tls::server_config(&pki, serving.clone())?, app);
    tokio::spawn(renew_certificates(
        pki.clone(),
        default_hosts(&hosts),
        serving,
        state.clone(),
        components,
        (kubeconfig.clone(), server_url.clone()),
    ));
    tracing::info!(%addr, "API server listening (HTTPS)");
    println!("kybern server: serving the Kubernetes API on {server_url}");
    println!(
        "  kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    );

    let insecure = async {
        match args.insecure_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                tracing::warn!(%addr, "also serving plain HTTP without authentication");
                kybern_apiserver::serve(listener, state.clone()).await
            }
            None => std::future::pending().await,
        }
    };
    let node = async {
        match &agent {
            Some(flags) => {
                println!();
                println!("kybern up: a single-node cluster. Use it with:");
                println!("  export KUBECONFIG={}", kubeconfig.display());
                println!("  kubectl get nodes");
                // The node's own identity, which the Node authorizer confines
                // to what its pods need.
                let own = args.data_dir.join("node.kubeconfig");
                let user = format!("system:node:{}", crate::agent_cmd::node_name(flags));
                pki.write_client_kubeconfig(&own, &server_url, &user, &["system:nodes"])?;
                crate::agent_cmd::run_agent(&own, &args.data_dir.join("agent"), flags).await
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = secure => {}
        r = node => r.context("node agent")?,
        r = insecure => r.context("plain HTTP listener")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}

/// How often the server looks whether its certificates are due for renewal.
const RENEWAL_CHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// Renews the server's leaf certificates as they fall due while it runs:
/// the serving certificate from the next handshake on, its client
/// certificate for node agents from the next connection, the admin's
/// (rewriting the admin kubeconfig), and those of the in-process scheduler
/// and controller manager.
async fn renew_certificates(
    mut pki: Pki,
    hosts: Vec<String>,
    serving: Arc<tls::ServingCert>,
    state: Arc<ApiState>,
    components: Vec<ComponentIdentity>,
    (kubeconfig, server_url): (PathBuf, String),
) {
    let admin = |dir: &std::path::Path| std::fs::read_to_string(dir.join("admin.crt")).ok();
    loop {
        tokio::time::sleep(RENEWAL_CHECK).await;
        let before = admin(&pki.dir);
        let fresh = match Pki::ensure(&pki.dir, &hosts) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot renew the server's certificates");
                continue;
            }
        };
        if fresh.server_cert_pem != pki.server_cert_pem
            && let Err(e) = serving.replace(&fresh)
        {
            tracing::error!(error = %e, "cannot serve the renewed certificate");
        }
        if fresh.node_client_cert_pem != pki.node_client_cert_pem
            && let Some(proxy) = state.node_proxy.get()
            && let Err(e) = proxy.replace(&fresh)
        {
            tracing::error!(error = %e, "cannot use the renewed node client certificate");
        }
        if admin(&fresh.dir) != before
            && let Err(e) = fresh.write_admin_kubeconfig(&kubeconfig, &server_url)
        {
            tracing::error!(error = %e, "cannot rewrite the admin kubeconfig");
        }
        for component in &components {
            if let Err(e) = component.renew_if_due(&fresh, &server_url) {
                tracing::error!(error = %format!("{e:#}"), "cannot renew a component's certificate");
            }
        }
        pki = fresh;
    }
}
