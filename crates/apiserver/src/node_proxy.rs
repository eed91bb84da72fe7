//! The API server as a client of node agents: it opens `pods/log`, exec,
//! attach, port-forward and stats on the agent that runs the pod, over TLS
//! with its own client certificate (the agent checks it against the
//! cluster CA), and streams the answer back.
//!
//! It verifies the agent in turn (upstream's `--kubelet-certificate-authority`,
//! here on by default): the agent's certificate must chain to the cluster CA,
//! cover the address dialed, and name `system:node:NODE` for the node the
//! pod runs on, so that no one else's certificate (another node's included)
//! can stand in for it. `--kubelet-insecure-tls` turns this off for agents
//! that serve self-signed certificates.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kybern_apimachinery::tls::AnyServerCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::pki::Pki;

/// TLS client settings for node agents; replaceable when the API server's
/// client certificate is renewed.
#[derive(Clone, Debug)]
pub struct NodeProxy {
    tls: Arc<std::sync::RwLock<Arc<rustls::ClientConfig>>>,
    verify: bool,
}

/// Where a node's agent listens, and which node it must prove to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddress {
    /// The node's name.
    pub node: String,
    /// Its address (the node's InternalIP, else its first).
    pub host: String,
    /// The port it publishes in `daemonEndpoints`.
    pub port: u16,
}

/// Why a node agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum NodeProxyError {
    /// The PKI's PEM could not be used.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Connecting or talking to the agent failed.
    #[error("{0}")]
    Connect(String),
}

/// The agent's answer: its status and a body to stream.
pub struct AgentResponse {
    /// HTTP status from the agent.
    pub status: u16,
    /// The body, streamed.
    pub body: hyper::body::Incoming,
}

impl NodeProxy {
    /// Client settings from the cluster PKI; `verify`: whether agents must
    /// prove themselves with a certificate the cluster CA signed.
    pub fn new(pki: &Pki, verify: bool) -> Result<Self, NodeProxyError> {
        Ok(NodeProxy {
            tls: Arc::new(std::sync::RwLock::new(Self::config(pki, verify)?)),
            verify,
        })
    }

    /// Uses `pki`'s client certificate from the next connection on.
    pub fn replace(&self, pki: &Pki) -> Result<(), NodeProxyError> {
        let fresh = Self::config(pki, self.verify)?;
        if let Ok(mut slot) = self.tls.write() {
            *slot = fresh;
        }
        Ok(())
    }

    fn config(pki: &Pki, verify: bool) -> Result<Arc<rustls::ClientConfig>, NodeProxyError> {
        let bad = |e: &dyn std::fmt::Display| NodeProxyError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.node_client_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(&e))?;
        let key = PrivateKeyDer::from_pem_slice(pki.node_client_key_pem.as_bytes())
            .map_err(|e| bad(&e))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?;
        let builder = if verify {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(ca.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert::new(provider)))
        };
        let config = builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad(&e))?;
        Ok(Arc::new(config))
    }

    /// An HTTP/1.1 connection to the agent at `agent`, able to upgrade.
    async fn connect(
        &self,
        agent: &AgentAddress,
    ) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>, NodeProxyError>
    {
        let (host, port) = (agent.host.as_str(), agent.port);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            NodeProxyError::Connect(format!("{what} node agent {host}:{port}: {e}"))
        };
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|e| fail("connecting to", &e))?
        .map_err(|e| fail("connecting to", &e))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| fail("naming", &e))?;
        let config = self
            .tls
            .read()
            .map(|c| c.clone())
            .map_err(|_| fail("TLS with", &"a poisoned lock"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| fail("TLS with", &e))?;
        if self.verify {
            let named = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| kybern_apimachinery::x509::subject_identity(cert))
                .map(|(user, _)| user);
            let expected = format!("system:node:{}", agent.node);
            if named.as_deref() != Some(expected.as_str()) {
                return Err(fail(
                    "verifying",
                    &format!(
                        "its certificate names {}, not {expected}",
                        named.as_deref().unwrap_or("no one")
                    ),
                ));
            }
        }
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail("HTTP with", &e))?;
        tokio::spawn(conn.with_upgrades());
        Ok(send)
    }

    /// GETs `path_and_query` from `agent`.
    pub async fn get(
        &self,
        agent: &AgentAddress,
        path_and_query: &str,
    ) -> Result<AgentResponse, NodeProxyError> {
        let resp = self
            .request(agent, hyper::Method::GET, path_and_query, &[])
            .await?;
        Ok(AgentResponse {
            status: resp.status().as_u16(),
            body: resp.into_body(),
        })
    }

    /// Sends a body-less request with `headers` to the agent; the answer may
    /// be an upgrade (`101`), to be taken with `hyper::upgrade::on`.
    pub async fn request(
        &self,
        agent: &AgentAddress,
        method: hyper::Method,
        path_and_query: &str,
        headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, NodeProxyError> {
        self.send(agent, method, path_and_query, headers, Bytes::new())
            .await
    }

    /// Sends a request with `headers` and `body` to the agent.
    pub async fn send(
        &self,
        agent: &AgentAddress,
        method: hyper::Method,
        path_and_query: &str,
        headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, NodeProxyError> {
        let (host, port) = (agent.host.as_str(), agent.port);
        let fail = |e: &dyn std::fmt::Display| {
            NodeProxyError::Connect(format!("request to node agent {host}:{port}: {e}"))
        };
        let mut send = self.connect(agent).await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", format!("{host}:{port}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(http_body_util::Full::new(body))
            .map_err(|e| fail(&e))?;
        send.send_request(req).await.map_err(|e| fail(&e))
    }
}

impl AgentResponse {
    /// The whole body as text (for error answers, which are short).
    pub async fn text(self) -> String {
        match self.body.collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(e) => e.to_string(),
        }
    }
}
