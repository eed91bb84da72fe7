//! `kybern server`: the API server on a store, with the system objects bootstrapped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kybern_apiserver::{ApiState, bootstrap};
use kybern_store::{Compactor, CompactorOptions, StoreUrl};

/// Arguments of `kybern server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Directory for the embedded store and generated files.
    #[arg(long, default_value = "/var/lib/kybern")]
    data_dir: PathBuf,
    /// The store: `sqlite://PATH` (default: DATA_DIR/store.db) or `etcd://HOST:PORT,...`.
    #[arg(long)]
    store: Option<String>,
    /// Plain-HTTP address to serve the API on, without authentication. Loopback
    /// only: for tests and for this early milestone (TLS comes next).
    #[arg(long, default_value = "127.0.0.1:6443")]
    insecure_listen: SocketAddr,
}

/// Runs the API server until interrupted.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    if !args.insecure_listen.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-listen must be a loopback address (got {})",
            args.insecure_listen
        );
    }
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
        Compactor::spawn(
            Arc::downgrade(&store),
            CompactorOptions {
                interval: std::time::Duration::from_secs(300),
                min_retained_revisions: 1000,
            },
        )
    });
    let state = ApiState::new(store);
    bootstrap::bootstrap(&state, args.insecure_listen.port())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping system objects: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.insecure_listen)
        .await
        .with_context(|| format!("binding {}", args.insecure_listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "API server listening (plain HTTP, loopback)");
    println!("kybern server: serving the Kubernetes API on http://{addr}");
    tokio::select! {
        r = kybern_apiserver::serve(listener, state) => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
    }
    Ok(())
}
