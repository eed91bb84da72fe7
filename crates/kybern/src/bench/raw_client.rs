//! A minimal HTTP client for the API benchmark, so that its figures are the
//! server's: HTTP/2 requests multiplexed over a few TLS connections, as
//! client-go does (Go opens another connection when one reaches the
//! server's stream limit), and HTTP/1.1 watches one per TLS connection, as
//! kube-rs makes them, read without kube-rs's layers.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Streams per connection: Go's default server limit, which kube-apiserver keeps.
pub const STREAMS_PER_CONNECTION: usize = 250;

/// The sending half of one HTTP/2 connection.
pub type Connection = SendRequest<Full<Bytes>>;

/// TLS settings that trust the server's CA and present the admin
/// certificate, offering `alpn`.
pub fn tls_config(pki: &Path, alpn: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
        roots.add(ca?)?;
    }
    let certs =
        CertificateDer::pem_file_iter(pki.join("admin.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection to the server on loopback.
async fn dial(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await
        .context("TLS handshake")?;
    Ok(TokioIo::new(tls))
}

/// One HTTP/2 connection to the server, authenticated with the admin certificate.
pub async fn connect(port: u16, pki: &Path) -> anyhow::Result<Connection> {
    let io = dial(port, tls_config(pki, b"h2")?).await?;
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(conn);
    Ok(send)
}

/// Opens an HTTP/1.1 connection (with `config`, from [`tls_config`]) and
/// sends a GET for `path` on it: one watch per connection.
pub async fn get_http1(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> anyhow::Result<Lines> {
    let io = dial(port, config).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(Full::<Bytes>::default())?;
    Lines::of(send.send_request(request).await?)
}

/// A watch stream read line by line.
pub struct Lines {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// Sends a GET for `path` on an HTTP/2 connection.
    pub async fn get(mut send: Connection, path: &str) -> anyhow::Result<Self> {
        send.ready().await?;
        let request =
            http::Request::get(format!("https://127.0.0.1{path}")).body(Full::default())?;
        Lines::of(send.send_request(request).await?)
    }

    /// The body of `response`, once it is known to have succeeded.
    fn of(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            response.status().is_success(),
            "watch failed: {}",
            response.status()
        );
        Ok(Lines {
            body: response.into_body(),
            buf: Vec::new(),
        })
    }

    /// The lines as a stream.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = anyhow::Result<String>> + Send + 'static {
        futures::stream::unfold(self, |mut lines| async move {
            lines.next().await.transpose().map(|l| (l, lines))
        })
    }

    /// The next line, without its newline; `None` at the end of the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(Some(String::from_utf8(line)?));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None => return Ok(None),
            }
        }
    }
}

/// Creates `per_client * clients` ConfigMaps named `<client>-<i>` in
/// `namespace` from `clients` concurrent streams over one connection, each
/// waiting for its `201 Created` and reading the whole answer before the next;
/// returns creates per second. The bodies are JSON written by hand, and the
/// answers are not decoded, so that the figure is the server's.
pub async fn creates(
    send: &Connection,
    namespace: &str,
    clients: usize,
    per_client: usize,
    payload: &str,
) -> anyhow::Result<f64> {
    let start = std::time::Instant::now();
    let path = format!("https://127.0.0.1/api/v1/namespaces/{namespace}/configmaps");
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (mut send, path) = (send.clone(), path.clone());
            let payload = payload.to_owned();
            tokio::spawn(async move {
                for i in 0..per_client {
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{c}-{i}"}},"data":{{"payload":"{payload}"}}}}"#
                    );
                    send.ready().await?;
                    let request = http::Request::post(&path)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))?;
                    let response = send.send_request(request).await?;
                    let status = response.status();
                    let answer = response.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(
                        status == http::StatusCode::CREATED,
                        "create answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((clients * per_client) as f64 / start.elapsed().as_secs_f64())
}
