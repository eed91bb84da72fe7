//! The agent's own HTTPS endpoint (the kubelet's port 10250): the API server
//! fetches container logs from it and passes exec and port-forward sessions
//! through to it. Only clients with a certificate signed by the cluster CA
//! get in, and only for what the API server authorizes them to do on this
//! node (`authz`); the agent serves with a certificate the cluster signs
//! (`serving_cert`), so that the API server can verify it.

mod authz;
pub mod logs;
pub mod serving_cert;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;

use crate::worker::state::{PodDir, Run, history};
use crate::{AgentError, NodeContext};

fn text(status: StatusCode, message: String) -> Response {
    (status, [("content-type", "text/plain")], message).into_response()
}

async fn container_logs(
    State(ctx): State<Arc<NodeContext>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let opts = match logs::LogOptions::parse(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let uid = ctx.pod_uid(&namespace, &pod);
    let Some(uid) = uid else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not on this node"),
        );
    };
    let dir = PodDir {
        root: ctx.data_dir.join("pods").join(&uid),
        uid,
    };
    let h = history(&dir, &container);
    let attempt = match (&h.latest, opts.previous) {
        (Some((a, _)), false) => *a,
        (Some((a, _)), true) if *a > 0 && h.previous.is_some() => *a - 1,
        (_, true) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            );
        }
        (None, false) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                ),
            );
        }
    };
    let mut opts = opts;
    // A run that has ended has nothing more to follow.
    if !opts.previous && matches!(h.latest, Some((_, Run::Exited { .. }))) {
        opts.follow = false;
    }
    let source = logs::LogSource {
        file: dir.log(&container, attempt),
        exit_file: dir.attempt(&container, attempt).join("exit"),
    };
    let body = axum::body::Body::from_stream(logs::stream(source, opts));
    (StatusCode::OK, [("content-type", "text/plain")], body).into_response()
}

/// `/stats/summary`: CPU and memory of the node, its pods and containers.
async fn stats_summary(State(ctx): State<Arc<NodeContext>>) -> Response {
    let summary = ctx.stats.summary(&ctx);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        summary.to_string(),
    )
        .into_response()
}

/// `DELETE /localPath/{dir}`: removes a local-path volume's directory
/// (authorized as `nodes/proxy` delete, which only the provisioner has).
async fn remove_local_path(
    State(ctx): State<Arc<NodeContext>>,
    Path(dir): Path<String>,
) -> Response {
    let root = crate::local_path::root(&ctx.data_dir);
    let removed = tokio::task::spawn_blocking(move || crate::local_path::remove(&root, &dir)).await;
    match removed {
        Ok(Ok(())) => text(StatusCode::OK, String::new()),
        Ok(Err(AgentError::Config(why))) => text(StatusCode::BAD_REQUEST, why),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// How long a handshake waits for the first signed serving certificate
/// before it gets the self-signed one.
const FIRST_CERTIFICATE: Duration = Duration::from_secs(10);

/// Serves the endpoint on `0.0.0.0:port` with `serving` until the future
/// is dropped; clients must present a certificate signed by one of
/// `client_cas` (DER).
pub async fn serve(
    ctx: Arc<NodeContext>,
    client_cas: Vec<Vec<u8>>,
    serving: Arc<serving_cert::ServingCert>,
) -> Result<(), AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in client_cas {
        roots
            .add(CertificateDer::from(ca))
            .map_err(|e| AgentError::Runtime(format!("cluster CA: {e}")))?;
    }
    let tls_err = |e: &dyn std::fmt::Display| AgentError::Runtime(format!("agent TLS: {e}"));
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls_err(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let bootstrapping = ctx.server_tls_bootstrap;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", ctx.port))
        .await
        .map_err(|e| AgentError::Runtime(format!("binding the agent port {}: {e}", ctx.port)))?;
    let app = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(streams::exec))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            any(streams::attach),
        )
        .route("/portForward/{namespace}/{pod}", any(streams::port_forward))
        .route("/stats/summary", get(stats_summary))
        .route("/localPath/{dir}", delete(remove_local_path))
        .layer(axum::middleware::from_fn_with_state(
            authz::Gate {
                ctx: ctx.clone(),
                cache: Arc::default(),
            },
            authz::authorize,
        ))
        .with_state(ctx);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "agent endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // As the kubelet (Go) does: exec and log streams write small frames.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "agent endpoint TCP_NODELAY");
        }
        let (acceptor, app) = (acceptor.clone(), app.clone());
        let awaited = bootstrapping.then(|| serving.clone());
        tokio::spawn(async move {
            if let Some(serving) = awaited {
                serving.signed_within(FIRST_CERTIFICATE).await;
            }
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let caller = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| kybern_apimachinery::x509::subject_identity(cert))
                .map(|(user, groups)| authz::Caller { user, groups });
            let app = match caller {
                Some(caller) => app.layer(axum::Extension(caller)),
                None => app,
            };
            let service = TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}
