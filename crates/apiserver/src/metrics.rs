//! Prometheus metrics of the API server (`/metrics`): requests by verb, group,
//! resource and code, and request latency by verb, group and resource, named
//! as upstream names them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::request::{Query, ResourcePath};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    group: String,
    resource: String,
}

/// The server's metrics.
pub struct ApiMetrics {
    registry: Arc<Registry>,
    /// Registries of components running in this process (the scheduler),
    /// served on the same `/metrics`.
    others: std::sync::Mutex<Vec<Arc<Registry>>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "apiserver_request",
            "Requests by verb, group, resource, subresource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to the response's headers, by verb, group and resource",
            latency.clone(),
        );
        ApiMetrics {
            registry: Arc::new(registry),
            others: Default::default(),
            requests,
            latency,
        }
    }
}

impl ApiMetrics {
    /// Serves another component's metrics on this server's `/metrics`.
    pub fn add_registry(&self, registry: Arc<Registry>) {
        if let Ok(mut others) = self.others.lock() {
            others.push(registry);
        }
    }

    fn registries(&self) -> Vec<Arc<Registry>> {
        let mut all = vec![self.registry.clone()];
        if let Ok(others) = self.others.lock() {
            all.extend(others.iter().cloned());
        }
        all
    }
}

/// Upstream's verb for a request: get, list, watch, create, update, patch, delete, deletecollection.
fn verb(method: &Method, path: &ResourcePath, query: &Query) -> &'static str {
    match (method.as_str(), path.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if query.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

/// Middleware: counts and times every resource request.
pub async fn record(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let Some(path) = ResourcePath::parse(req.uri().path()) else {
        return next.run(req).await;
    };
    let v = verb(req.method(), &path, &Query::parse(req.uri().query())).to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let latency = LatencyLabels {
        verb: v.clone(),
        group: path.group.clone(),
        resource: path.resource.clone(),
    };
    metrics
        .latency
        .get_or_create(&latency)
        .observe(start.elapsed().as_secs_f64());
    let labels = RequestLabels {
        verb: v,
        group: path.group,
        resource: path.resource,
        subresource: path.subresource.unwrap_or_default(),
        code: resp.status().as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    resp
}

/// GET `/metrics` in the Prometheus text format.
pub async fn serve(State(state): State<Arc<crate::server::ApiState>>) -> Response {
    text_response(&state.metrics.registries())
}

/// `registries` as a `/metrics` response in the OpenMetrics text format; also
/// what a standalone component serves.
pub fn text_response(registries: &[Arc<Registry>]) -> Response {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut text = String::new();
    let encoded = registries
        .iter()
        .try_for_each(|r| encode_registry(&mut text, r))
        .and_then(|()| encode_eof(&mut text));
    if encoded.is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
