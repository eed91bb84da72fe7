//! Health endpoints on loopback for the probe tests, switched between
//! healthy and unhealthy by the test: a gRPC health service
//! (`grpc.health.v1.Health/Check` over cleartext HTTP/2) and an HTTPS
//! server with a self-signed certificate (the kubelet does not verify it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Both endpoints, served from tasks on the test's runtime.
pub struct ProbeTargets {
    /// Port of the gRPC health service on 127.0.0.1.
    pub grpc_port: u16,
    /// Port of the HTTPS server on 127.0.0.1.
    pub https_port: u16,
    healthy: Arc<AtomicBool>,
}

async fn serve_grpc(listener: tokio::net::TcpListener, healthy: Arc<AtomicBool>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let healthy = healthy.clone();
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let ok_path = req.uri().path() == "/grpc.health.v1.Health/Check";
                let mut body = req.into_body();
                while let Some(Ok(_)) = body.data().await {}
                let head = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/grpc")
                    .body(())
                    .expect("response head");
                let Ok(mut send) = respond.send_response(head, false) else {
                    continue;
                };
                // HealthCheckResponse{status: SERVING (1) | NOT_SERVING (2)}.
                let status = if healthy.load(Ordering::SeqCst) { 1 } else { 2 };
                let _ = send.send_data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]), false);
                let mut trailers = http::HeaderMap::new();
                let code = if ok_path { "0" } else { "12" };
                trailers.insert("grpc-status", http::HeaderValue::from_static(code));
                let _ = send.send_trailers(trailers);
            }
        });
    }
}

async fn serve_https(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    healthy: Arc<AtomicBool>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (tls, healthy) = (tls.clone(), healthy.clone());
        tokio::spawn(async move {
            let Ok(mut stream) = tls.accept(tcp).await else {
                return;
            };
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf).await;
            let status = if healthy.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

impl ProbeTargets {
    /// Starts both endpoints, unhealthy.
    pub async fn start() -> Self {
        use rustls::pki_types::pem::PemObject;
        let healthy = Arc::new(AtomicBool::new(false));
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("cert params");
        let cert = params.self_signed(&key).expect("self-signed cert");
        let certs = vec![rustls::pki_types::CertificateDer::from(cert.der().to_vec())];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .expect("key der");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind grpc");
        let https = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind https");
        let targets = ProbeTargets {
            grpc_port: grpc.local_addr().expect("addr").port(),
            https_port: https.local_addr().expect("addr").port(),
            healthy: healthy.clone(),
        };
        tokio::spawn(serve_grpc(grpc, healthy.clone()));
        tokio::spawn(serve_https(https, tls, healthy));
        targets
    }

    /// Makes both endpoints answer healthy (true) or unhealthy (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}
