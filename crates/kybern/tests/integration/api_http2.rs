//! Many watches multiplexed on one HTTP/2 connection, as client-go makes
//! them: the server coalesces the connection's writes, and every stream must
//! still receive every event, with no event left in a buffer until the next.

use crate::common;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::ServerName;

/// Watches on the one connection.
const STREAMS: usize = 40;
/// Updates each watch must see.
const UPDATES: usize = 5;

/// One HTTP/2 connection to `server` as the admin (ALPN `h2`).
async fn connect(server: &common::Server) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let mut config =
        common::admin_tls_config(&server.dir.path().join("pki")).expect("admin TLS settings");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("127.0.0.1").expect("name").to_owned(),
            tcp,
        )
        .await
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"h2".as_slice()),
        "the server speaks HTTP/2"
    );
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

/// The resourceVersions of the MODIFIED events a watch stream delivers, in
/// order, until it has seen `want` of them.
async fn modified_versions(body: hyper::body::Incoming, want: usize) -> Vec<String> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < want {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame.expect("watch frame").into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let event: serde_json::Value = serde_json::from_slice(&line).expect("event JSON");
            if event["type"] == "MODIFIED" {
                let rv = event["object"]["metadata"]["resourceVersion"].as_str();
                seen.push(rv.expect("resourceVersion").to_owned());
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watch_on_one_http2_connection_sees_every_update() {
    let server = common::Server::start();
    // Bytes left in a buffer show as a stall anywhere: the handshake, a
    // response's headers or an event.
    tokio::time::timeout(Duration::from_secs(60), watch_updates(&server))
        .await
        .expect("the HTTP/2 connection stalled");
}

async fn watch_updates(server: &common::Server) {
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut target = ConfigMap::default();
    target.metadata.name = Some("target".into());
    // Big enough that each event is a DATA frame h2 sends on its own.
    target.data = Some([("payload".to_owned(), "x".repeat(2000))].into());
    let created = api
        .create(&PostParams::default(), &target)
        .await
        .expect("create");
    let rv = created.metadata.resource_version.expect("rv");
    let send = connect(server).await;
    let path = format!(
        "https://127.0.0.1/api/v1/namespaces/default/configmaps?watch=true&fieldSelector=metadata.name%3Dtarget&resourceVersion={rv}"
    );
    let mut watches = Vec::new();
    for _ in 0..STREAMS {
        let mut send = send.clone();
        send.ready().await.expect("stream capacity");
        let request = http::Request::get(&path)
            .body(Full::default())
            .expect("request");
        let response = send.send_request(request).await.expect("watch");
        assert!(response.status().is_success(), "{}", response.status());
        watches.push(tokio::spawn(modified_versions(
            response.into_body(),
            UPDATES,
        )));
    }
    let mut written = Vec::new();
    for i in 0..UPDATES {
        let patched = api
            .patch(
                "target",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"labels": {"round": i.to_string()}}}),
                ),
            )
            .await
            .expect("patch");
        written.push(patched.metadata.resource_version.expect("rv"));
        // Apart, so that each update is a round of its own on the connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, watch) in watches.into_iter().enumerate() {
        let seen = watch.await.expect("watch task");
        assert_eq!(seen, written, "watch {i} saw every update in order");
    }
}
