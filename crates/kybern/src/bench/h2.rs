//! A minimal HTTP/2 client for the API benchmark: requests multiplexed over a
//! few TLS connections, as client-go does (Go opens another connection when
//! one reaches the server's stream limit). kube-rs speaks HTTP/1.1 only, one
//! connection per request in flight; both shapes are measured.

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

/// One HTTP/2 connection to the server, authenticated with the admin certificate.
pub async fn connect(port: u16, pki: &Path) -> anyhow::Result<Connection> {
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
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await
        .context("TLS handshake")?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
    tokio::spawn(conn);
    Ok(send)
}

/// A watch stream read line by line.
pub struct Lines {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// Sends a GET for `path` and checks that it succeeded.
    pub async fn get(mut send: Connection, path: &str) -> anyhow::Result<Self> {
        send.ready().await?;
        let request =
            http::Request::get(format!("https://127.0.0.1{path}")).body(Full::default())?;
        let response = send.send_request(request).await?;
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
