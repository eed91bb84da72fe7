//! The `/metrics` and `/healthz` endpoint of a component run on its own
//! (`kybern controller-manager`, `kybern scheduler`), in plain HTTP on the
//! address `--metrics-bind-address` names; inside `kybern server` the same
//! metrics are on the API server's `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Flag for the endpoint, shared by the standalone components.
#[derive(clap::Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Serve `/metrics` (Prometheus text) and `/healthz` in plain HTTP on
    /// this address, e.g. `127.0.0.1:10257`; unset, nothing is served.
    #[arg(long)]
    pub metrics_bind_address: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds the address, if one was given, and serves `registries` there
    /// in the background. Fails only when the address cannot be bound.
    pub async fn spawn(&self, registries: Vec<Arc<Registry>>) -> anyhow::Result<()> {
        let Some(addr) = self.metrics_bind_address else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(address = %listener.local_addr()?, "serving /metrics");
        let registries = Arc::new(registries);
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/metrics",
                get(move || {
                    let registries = registries.clone();
                    async move { kybern_apiserver::metrics::text_response(&registries) }
                }),
            );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics endpoint stopped");
            }
        });
        Ok(())
    }
}
