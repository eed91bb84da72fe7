//! Serving the API over TLS (rustls): one task per connection, HTTP/1.1 and
//! HTTP/2 by ALPN, with the verified client certificate's identity attached to
//! every request of the connection.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::{PeerIdentity, identity_from_cert};
use crate::pki::Pki;
use crate::write_coalescer::CoalescingStream;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be parsed.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The server's certificate, replaceable while it serves: each new
/// connection gets the one current at its handshake.
#[derive(Debug)]
pub struct ServingCert {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServingCert {
    /// The serving certificate of `pki`.
    pub fn new(pki: &Pki) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = std::sync::RwLock::new(Arc::new(certified(pki, &provider)?));
        Ok(Arc::new(ServingCert { current, provider }))
    }

    /// Serves `pki`'s certificate from the next handshake on.
    pub fn replace(&self, pki: &Pki) -> Result<(), TlsError> {
        let fresh = Arc::new(certified(pki, &self.provider)?);
        if let Ok(mut slot) = self.current.write() {
            *slot = fresh;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn certified(
    pki: &Pki,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let certified = CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(certified)
}

/// The server's TLS configuration: its certificate (from `serving`), and
/// client certificates verified against the cluster CA but not required
/// (tokens are the other way in).
pub fn server_config(
    pki: &Pki,
    serving: Arc<ServingCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = serving.provider.clone();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| TlsError::Pem(e.to_string()))?)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Streams a client may open on one HTTP/2 connection.
const HTTP2_MAX_STREAMS: u32 = 250;

/// Serves `app` over TLS on `listener` until the future is dropped.
pub async fn serve_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Go's net/http, which kube-apiserver serves with, turns Nagle's
        // algorithm off: with it on, the last small write of a streamed
        // response (a list's tail, a watch event) waits for the client's
        // delayed ACK, up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY");
        }
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            // HTTP/2 carries many streams on one connection; their frames are
            // coalesced into shared writes (see `write_coalescer`).
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let tls = CoalescingStream::new(tls, h2);
            let identity = tls
                .get_ref()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| identity_from_cert(c));
            // The connection's facts go into each request's extensions. Layering
            // the router instead would rebuild every route per connection.
            let peer_identity = PeerIdentity(identity);
            let service = TowerToHyperService::new(app.map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer_identity.clone());
                    req.extensions_mut().insert(crate::audit::ClientAddr(peer));
                    req
                },
            ));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Go's default, which kube-apiserver keeps: client-go opens another
            // connection when one reaches it.
            builder.http2().max_concurrent_streams(HTTP2_MAX_STREAMS);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
