//! Calling a webhook: where its `clientConfig` points (a URL, or a Service
//! resolved through its EndpointSlices), TLS checked against its `caBundle`
//! (or the system's roots), and one POST of the review under its timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::server::ApiState;

/// The largest answer read from a webhook; a bigger one is an error, so a
/// hostile webhook cannot make the server buffer without bound.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Where the system keeps its trusted roots (Debian's `ca-certificates`).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where one webhook call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host (name or IP) to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Name the serving certificate must carry.
    pub server_name: String,
    /// Path of the request.
    pub path: String,
    /// The URL as upstream's errors show it (`https://name.ns.svc:443/path`).
    pub url: String,
}

/// The certificates of a `caBundle` (base64 in JSON, PEM inside).
pub fn ca_certificates(ca_bundle: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle)
        .map_err(|e| e.to_string())?;
    pem_certificates(&pem)
}

fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the bundle".into());
    }
    Ok(certs)
}

/// Splits `https://host[:port][/path]` (validated on write).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("unsupported URL {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad host in {url:?}"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in {url:?}"))?,
        None => 443,
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        server_name: host.to_owned(),
        path: path.to_owned(),
        url: url.to_owned(),
    })
}

/// Where the webhook's `clientConfig` sends its calls. A Service is
/// resolved to one ready endpoint of its EndpointSlices (as upstream's
/// `--enable-aggregator-routing`), so the API server needs no service proxy;
/// the certificate must name `<service>.<namespace>.svc`.
pub async fn resolve(state: &ApiState, client_config: &Value) -> Result<Target, String> {
    if let Some(url) = client_config["url"].as_str() {
        return parse_url(url);
    }
    let svc = &client_config["service"];
    let (name, namespace) = (
        svc["name"].as_str().unwrap_or(""),
        svc["namespace"].as_str().unwrap_or(""),
    );
    let service_port = svc["port"].as_u64().unwrap_or(443);
    let path = match svc["path"].as_str() {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => "/".to_owned(),
    };
    let server_name = format!("{name}.{namespace}.svc");
    let url = format!("https://{server_name}:{service_port}{path}");
    let service = state
        .cached_or_stored("", "services", namespace, name)
        .await
        .map_err(|e| e.message)?;
    let ports = service["spec"]["ports"].as_array();
    let port = ports
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(service_port))
        .ok_or_else(|| format!("no service port {service_port} found for service {name:?}"))?;
    if service["spec"]["type"] == "ExternalName" {
        let host = service["spec"]["externalName"].as_str().unwrap_or("");
        return Ok(Target {
            host: host.to_owned(),
            port: service_port as u16,
            server_name,
            path,
            url,
        });
    }
    let port_name = port["name"].as_str().unwrap_or("");
    let (host, port) = ready_endpoint(state, namespace, name, port_name)
        .await?
        .ok_or_else(|| format!("no endpoints available for service {name:?}"))?;
    Ok(Target {
        host,
        port,
        server_name,
        path,
        url,
    })
}

/// The first ready endpoint of the Service's slices serving `port_name`.
async fn ready_endpoint(
    state: &ApiState,
    namespace: &str,
    service: &str,
    port_name: &str,
) -> Result<Option<(String, u16)>, String> {
    let slices = state
        .cached_objects("discovery.k8s.io", "endpointslices", Some(namespace))
        .await
        .map_err(|e| e.message)?;
    for cached in slices.iter() {
        let Ok(slice) = serde_json::from_slice::<Value>(&cached.json()) else {
            continue;
        };
        if slice.pointer("/metadata/labels/kubernetes.io~1service-name") != Some(&service.into()) {
            continue;
        }
        let port = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        let ready = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e.pointer("/conditions/ready") != Some(&Value::Bool(false)))
            .find_map(|e| e["addresses"][0].as_str());
        if let Some(address) = ready {
            return Ok(Some((address.to_owned(), port)));
        }
    }
    Ok(None)
}

/// TLS settings for a `caBundle` ("" for the system's roots), built once
/// per bundle.
fn tls_config(ca_bundle: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIGS: OnceLock<Mutex<HashMap<String, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    if let Some(c) = configs.lock().ok().and_then(|m| m.get(ca_bundle).cloned()) {
        return Ok(c);
    }
    let certs = if ca_bundle.is_empty() {
        let pem = std::fs::read(SYSTEM_ROOTS).map_err(|e| format!("{SYSTEM_ROOTS}: {e}"))?;
        pem_certificates(&pem)?
    } else {
        ca_certificates(ca_bundle).map_err(|e| format!("invalid caBundle: {e}"))?
    };
    let mut roots = rustls::RootCertStore::empty();
    // Unusable roots in the system bundle are skipped, as Go's pool does.
    roots.add_parsable_certificates(certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    if let Ok(mut m) = configs.lock() {
        // Configurations come and go; a bounded map is enough.
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(ca_bundle.to_owned(), config.clone());
    }
    Ok(config)
}

/// POSTs `body` to the target and returns the answer's body, all within
/// `timeout`. Errors read as upstream's: `Post "URL": why`.
pub async fn post(
    target: &Target,
    ca_bundle: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let secs = timeout.as_secs();
    let query_url = format!("{}?timeout={secs}s", target.url);
    let fail = |why: String| format!("Post {query_url:?}: {why}");
    let exchange = async {
        let tls = tls_config(ca_bundle)?;
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| {
                format!(
                    "dial tcp {}:{}: connect: {}",
                    target.host,
                    target.port,
                    kybern_apimachinery::go_text::io_error(&e)
                )
            })?;
        let name = ServerName::try_from(target.server_name.clone()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = hyper::Request::post(format!("{}?timeout={secs}s", target.path))
            .header("host", format!("{}:{}", target.server_name, target.port))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(format!("the server responded with {status}: {text}"));
        }
        Ok(bytes.to_vec())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail("context deadline exceeded".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let t = parse_url("https://127.0.0.1:9443/validate/x").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9443, "/validate/x")
        );
        let t = parse_url("https://hooks.example.com").expect("url");
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        let t = parse_url("https://[::1]:8443/v").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert!(parse_url("http://a/").is_err());
        assert!(parse_url("https://a:x/").is_err());
    }

    #[test]
    fn bundles_must_hold_certificates() {
        assert!(ca_certificates("not base64!").is_err());
        let empty = base64::engine::general_purpose::STANDARD.encode("no pem here");
        assert!(ca_certificates(&empty).is_err());
    }
}
