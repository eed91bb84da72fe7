//! The network checks that probes and lifecycle hooks make against a
//! container: HTTP and HTTPS GET, TCP connect, and the gRPC health protocol
//! (`grpc.health.v1.Health/Check`), each as the kubelet makes it.

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kybern_apimachinery::go_text::io_error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The port a probe names: a number, or the name of a container port.
pub(super) fn port_of(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// Whether a GET is sent in clear or over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS without verifying the certificate, as the kubelet does.
    Https,
}

/// Sends `req` and reads the status line; success is 200 to 399. A failure
/// reads as the kubelet words it.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &str) -> Result<(), String> {
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| io_error(&e))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Err(e) => return Err(io_error(&e)),
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
    {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None if head.is_empty() => Err("EOF".into()),
        None => Err("malformed HTTP response".into()),
    }
}

/// A TCP connection to `host:port`, or Go's dial error.
async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port)).await.map_err(|e| {
        format!(
            "dial tcp {}: connect: {}",
            host_port(host, port),
            io_error(&e)
        )
    })
}

/// `host:port`, with an IPv6 host in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn tls() -> Option<tokio_rustls::TlsConnector> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            kybern_apimachinery::tls::unverified_client_config()
                .ok()
                .map(Arc::new)
        })
        .clone()
        .map(tokio_rustls::TlsConnector::from)
}

/// One HTTP(S) GET; success is a status from 200 to 399.
pub(super) async fn http_get(
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!(
        "{}://{}{path}",
        match scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        },
        host_port(host, port)
    );
    let in_get = |why: String| format!("Get {url:?}: {why}");
    let tcp = dial(host, port).await.map_err(in_get)?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let status_failure = |why: String| {
        if why.starts_with("HTTP probe failed") {
            why
        } else {
            in_get(why)
        }
    };
    match scheme {
        Scheme::Http => exchange(tcp, &req).await.map_err(status_failure),
        Scheme::Https => {
            let tls = tls().ok_or_else(|| in_get("no TLS configuration".into()))?;
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| in_get(e.to_string()))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| in_get(format!("tls: {}", io_error(&e))))?;
            exchange(stream, &req).await.map_err(status_failure)
        }
    }
}

/// An `httpGet` action (probe or hook) against container `c` at pod IP `ip`.
pub(super) async fn http_action(
    c: &Container,
    http: &HTTPGetAction,
    ip: &str,
) -> Result<(), String> {
    let port = port_of(c, &http.port).ok_or("no such port")?;
    let host = http.host.clone().filter(|h| !h.is_empty());
    let host = host.unwrap_or_else(|| ip.to_owned());
    let path = http.path.clone().unwrap_or_else(|| "/".into());
    let scheme = match http.scheme.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("HTTPS") => Scheme::Https,
        _ => Scheme::Http,
    };
    let headers: Vec<(String, String)> = http
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    http_get(scheme, &host, port, &path, &headers).await
}

/// A TCP connection to `host:port` opens, or Go's dial error.
pub(super) async fn tcp_open(host: &str, port: u16) -> Result<(), String> {
    dial(host, port).await.map(drop)
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; status 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The largest health answer read; real ones are a few bytes.
const GRPC_ANSWER_LIMIT: usize = 64 * 1024;

fn grpc_status_name(status: i32) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unrecognised",
    }
}

/// One `grpc.health.v1.Health/Check` call over cleartext HTTP/2 (the
/// kubelet's gRPC probe never uses TLS); Ok only for SERVING.
pub(super) async fn grpc_health(host: &str, port: u16, service: &str) -> Result<(), String> {
    use prost::Message;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {host}:{port}: {e}"))?;
    // The connection task ends when the client side is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{host}:{port}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.35")
        .body(())
        .map_err(|e| e.to_string())?;
    let (answer, mut send) = client
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    let message = HealthCheckRequest {
        service: service.to_owned(),
    }
    .encode_to_vec();
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&message);
    send.send_data(frame.into(), true)
        .map_err(|e| e.to_string())?;
    let answer = answer.await.map_err(|e| e.to_string())?;
    if answer.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", answer.status()));
    }
    let header_status = answer
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = answer.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > GRPC_ANSWER_LIMIT {
            return Err("health answer too large".into());
        }
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    let trailer = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // A trailers-only answer carries grpc-status in its headers.
    let code = trailer("grpc-status").or(header_status).unwrap_or_default();
    if code != "0" {
        let message = trailer("grpc-message").unwrap_or_default();
        return Err(format!("rpc error: code = {code} desc = {message}"));
    }
    let message = data.get(5..).ok_or("health answer without a message")?;
    let status = HealthCheckResponse::decode(message)
        .map_err(|e| format!("health answer: {e}"))?
        .status;
    if status == 1 {
        Ok(())
    } else {
        Err(format!(
            "service unhealthy (responded with \"{}\")",
            grpc_status_name(status)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "a",
            "ports": [{"name": "http", "containerPort": 8080}]}))
        .expect("container");
        assert_eq!(port_of(&c, &IntOrString::String("http".into())), Some(8080));
        assert_eq!(port_of(&c, &IntOrString::Int(81)), Some(81));
        assert_eq!(port_of(&c, &IntOrString::String("nope".into())), None);
    }

    #[tokio::test]
    async fn http_probes_succeed_on_2xx_and_3xx_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for status in ["200 OK", "302 Found", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let get = || http_get(Scheme::Http, "127.0.0.1", port, "/", &[]);
        assert_eq!(get().await, Ok(()));
        assert_eq!(get().await, Ok(()));
        assert_eq!(
            get().await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            http_get(Scheme::Http, "127.0.0.1", 1, "/", &[]).await,
            Err(
                r#"Get "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused"#
                    .into()
            )
        );
        assert_eq!(
            tcp_open("127.0.0.1", 1).await,
            Err("dial tcp 127.0.0.1:1: connect: connection refused".into())
        );
    }

    #[tokio::test]
    async fn https_probes_fail_against_a_plain_http_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let err = http_get(Scheme::Https, "127.0.0.1", port, "/", &[])
            .await
            .expect_err("no TLS there");
        assert!(err.starts_with(r#"Get "https://127.0.0.1:"#), "{err}");
    }

    #[test]
    fn health_messages_round_trip_through_protobuf() {
        use prost::Message;
        let bytes = HealthCheckRequest {
            service: "db".into(),
        }
        .encode_to_vec();
        assert_eq!(bytes, b"\x0a\x02db");
        let answer = HealthCheckResponse::decode(&b"\x08\x02"[..]).expect("decode");
        assert_eq!(grpc_status_name(answer.status), "NOT_SERVING");
    }
}
