//! `pods/{id}/proxy/{path}` and `services/{id}/proxy/{path}`: a request
//! passed on over HTTP or HTTPS to the pod's IP, or to a ready pod behind
//! the service, as upstream's proxy subresources pass it (`kubectl proxy`
//! users reach cluster services this way). The method, path, query, headers
//! and body go through, less the hop-by-hop headers and the caller's
//! credentials; the backend's status, headers and body come back, streamed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use kybern_apimachinery::ApiError;
use serde_json::Value;

use super::Ctx;
use super::pod_log::core_resource;
use crate::proxy_location::{self, Location};
use crate::response::ApiResult;

/// How long the backend gets to accept the connection (and the TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the next service request starts its search among the endpoints,
/// so that requests spread over the ready pods (upstream picks at random).
static NEXT_ENDPOINT: AtomicUsize = AtomicUsize::new(0);

/// Any method on `.../{pods|services}/{id}/proxy[/{path}]`.
pub async fn proxy(ctx: &Ctx, method: Method, request: Body) -> ApiResult {
    let id = ctx.name();
    let kind = if ctx.info.plural == "pods" {
        "pod"
    } else {
        "service"
    };
    let Some((scheme, name, port)) = proxy_location::split_id(id) else {
        return Err(ApiError::bad_request(format!("invalid {kind} request {id:?}")).into());
    };
    let Some(path) = ctx.path.proxy_path.clone() else {
        // As upstream: a bare `.../proxy` is sent on to `.../proxy/`, so that
        // relative links in what the backend serves resolve under it.
        let query = if ctx.raw_query.is_empty() {
            String::new()
        } else {
            format!("?{}", ctx.raw_query)
        };
        let to = format!(
            "/api/v1/namespaces/{}/{}/{id}/proxy/{query}",
            ctx.namespace(),
            ctx.info.plural
        );
        let to = HeaderValue::try_from(to).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return Ok((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response());
    };
    let location = if kind == "pod" {
        let pod = ctx
            .state
            .objects
            .get(&ctx.info, ctx.namespace(), name)
            .await?;
        proxy_location::pod_location(&pod, scheme, port)?
    } else {
        service_location(ctx, scheme, name, port).await?
    };
    let target = if ctx.raw_query.is_empty() {
        path
    } else {
        format!("{path}?{}", ctx.raw_query)
    };
    let body = super::body::read(request).await?;
    let response = send(&location, method, &target, &ctx.headers, body)
        .await
        .map_err(|e| proxy_location::unavailable(format!("error trying to reach service: {e}")))?;
    Ok(passed_back(response))
}

/// A ready pod behind service `name` in the request's namespace.
async fn service_location(
    ctx: &Ctx,
    scheme: &str,
    name: &str,
    port: &str,
) -> Result<Location, ApiError> {
    let namespace = ctx.namespace();
    let service = ctx.state.objects.get(&ctx.info, namespace, name).await?;
    let port_name = proxy_location::service_port_name(&service, port)?;
    let endpoints = ctx
        .state
        .objects
        .get(&*core_resource(ctx, "endpoints")?, namespace, name)
        .await?;
    let pods = core_resource(ctx, "pods")?;
    // Only addresses that are pods of this namespace holding that IP.
    let is_pod = |address: &Value| {
        let target = &address["targetRef"];
        let Some(pod) = target["name"].as_str() else {
            return false;
        };
        if target["kind"] != "Pod" || target["namespace"].as_str().is_some_and(|n| n != namespace) {
            return false;
        }
        let ip = &address["ip"];
        ctx.state
            .cached_copy(&pods, namespace, pod)
            .is_some_and(|p| {
                p["status"]["podIP"] == *ip
                    || p["status"]["podIPs"]
                        .as_array()
                        .is_some_and(|ips| ips.iter().any(|i| i["ip"] == *ip))
            })
    };
    let start = NEXT_ENDPOINT.fetch_add(1, Ordering::Relaxed);
    proxy_location::service_location(&endpoints, scheme, &port_name, start, is_pod)
}

/// Headers that belong to one connection, not to the request or answer.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `headers` less the hop-by-hop ones and those `Connection` names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if HOP_BY_HOP.contains(name) || named.iter().any(|n| n == name.as_str()) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The headers the backend sees: the caller's, without its credentials
/// (upstream's authentication and impersonation filters remove them before
/// any handler runs) and with the backend as `Host`.
fn backend_headers(caller: &HeaderMap, location: &Location) -> HeaderMap {
    let mut headers = end_to_end(caller);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    let impersonation: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in impersonation {
        headers.remove(name);
    }
    if let Ok(host) = HeaderValue::try_from(location.authority()) {
        headers.insert(header::HOST, host);
    }
    headers
}

/// Why the backend could not be reached.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("dial tcp {0}: {1}")]
    Dial(String, String),
    #[error("tls with {0}: {1}")]
    Tls(String, String),
    #[error("{0}")]
    Http(String),
}

/// Sends the request to `location` on a connection of its own.
async fn send(
    location: &Location,
    method: Method,
    target: &str,
    caller: &HeaderMap,
    body: Bytes,
) -> Result<hyper::Response<hyper::body::Incoming>, BackendError> {
    let addr = std::net::SocketAddr::new(location.ip, location.dial_port());
    let dial = |e: &dyn std::fmt::Display| BackendError::Dial(addr.to_string(), e.to_string());
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|e| dial(&e))?
        .map_err(|e| dial(&e))?;
    let mut request = hyper::Request::builder().method(method).uri(target);
    if let Some(headers) = request.headers_mut() {
        *headers = backend_headers(caller, location);
    }
    let request = request
        .body(http_body_util::Full::new(body))
        .map_err(|e| BackendError::Http(e.to_string()))?;
    if location.scheme == "https" {
        // As upstream, a pod's or service's certificate is not verified: it
        // is named for no address the API server could check.
        let tls_err =
            |e: &dyn std::fmt::Display| BackendError::Tls(addr.to_string(), e.to_string());
        let config =
            kybern_apimachinery::tls::unverified_client_config().map_err(|e| tls_err(&e))?;
        let name = rustls::pki_types::ServerName::IpAddress(location.ip.into());
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|e| tls_err(&e))?
        .map_err(|e| tls_err(&e))?;
        exchange(tls, request).await
    } else {
        exchange(tcp, request).await
    }
}

/// Sends `request` as the only one on an HTTP/1.1 connection over `io`.
async fn exchange<S>(
    io: S,
    request: hyper::Request<http_body_util::Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, BackendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let http = |e: hyper::Error| BackendError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    sender.send_request(request).await.map_err(http)
}

/// The backend's answer as the caller's: status, end-to-end headers, and
/// the body streamed as it comes.
fn passed_back(response: hyper::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = response.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    *out.headers_mut() = end_to_end(&parts.headers);
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn the_backend_sees_no_credentials_and_no_hop_by_hop_headers() {
        let mut caller = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("upgrade", "websocket"),
            ("host", "apiserver:6443"),
            ("accept", "text/html"),
            ("x-trace", "abc"),
        ] {
            caller.append(k, HeaderValue::from_static(v));
        }
        let location = Location {
            scheme: "http".into(),
            ip: IpAddr::from([10, 42, 0, 7]),
            port: Some(8080),
        };
        let seen = backend_headers(&caller, &location);
        let mut names: Vec<&str> = seen.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "host", "x-trace"]);
        assert_eq!(seen[header::HOST], "10.42.0.7:8080");
    }
}
