//! An admission webhook server as a user would run one: HTTPS with its own
//! CA, `AdmissionReview` v1 in and out, on its own thread and runtime. It
//! records every review it receives and answers by path:
//! `/validate` refuses objects labelled `deny: "yes"` (403), `/mutate`
//! labels objects `mutated-by: test-webhook` with a warning, `/slow`
//! answers after three seconds, `/bad-uid` answers another request's uid,
//! `/deny-all` refuses everything.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A running webhook server.
pub struct WebhookServer {
    /// Port it listens on (all addresses).
    pub port: u16,
    /// Its CA, PEM, base64-encoded as a `caBundle`.
    pub ca_bundle: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A CA and a serving certificate for `names` (DNS names or IPs), PEM.
fn certificates(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test-webhook-ca");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names).expect("leaf params");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn answer_for(path: &str, review: &Value) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let object = match &request["object"] {
        Value::Null => &request["oldObject"],
        o => o,
    };
    let response = match path {
        "/validate" if object.pointer("/metadata/labels/deny") == Some(&json!("yes")) => {
            json!({"uid": uid, "allowed": false, "status": {"code": 403, "reason": "Forbidden",
                "message": "objects labelled deny=yes are refused"}})
        }
        "/mutate" => {
            let patch = if object
                .pointer("/metadata/labels")
                .is_some_and(Value::is_object)
            {
                json!([{"op": "add", "path": "/metadata/labels/mutated-by", "value": "test-webhook"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels",
                    "value": {"mutated-by": "test-webhook"}}])
            };
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
                "warnings": ["labelled by the test webhook"],
                "auditAnnotations": {"labelled": "true"}})
        }
        "/bad-uid" => json!({"uid": "not-the-request", "allowed": true}),
        "/deny-all" => json!({"uid": uid, "allowed": false, "status": {"message": "no entry"}}),
        _ => json!({"uid": uid, "allowed": true}),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    reviews: Arc<Mutex<Vec<Value>>>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut r) = reviews.lock() {
        r.push(json!({"path": path, "review": review}));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let answer = answer_for(&path, &review).to_string();
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer)))
        .expect("response"))
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    reviews: Arc<Mutex<Vec<Value>>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let (tls, reviews) = (tls.clone(), reviews.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(req, reviews.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl WebhookServer {
    /// Starts the server with a certificate for `names` on a free port.
    pub fn start(names: &[&str]) -> Self {
        use rustls::pki_types::pem::PemObject;
        let (ca, cert, key) = certificates(names);
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        // Port 0: the kernel picks one nobody holds, with no window for
        // another test's server to take it first.
        let listener =
            std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], 0))).expect("bind");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let recorded = reviews.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serve(listener, acceptor, recorded, stopped).await;
            });
        });
        WebhookServer {
            port,
            ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca),
            reviews,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The reviews received on `path` so far, oldest first.
    pub fn reviews(&self, path: &str) -> Vec<Value> {
        self.reviews
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|e| e["path"] == path)
                    .map(|e| e["review"].clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
