//! Authentication at the API server's TLS door: the admin client certificate,
//! bearer tokens from a token file, and anonymous requests limited to health
//! and version, driven with the real kubectl.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn kubectl() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/kubectl")
        })
}

/// A kubeconfig for the same server and CA as the admin's, but with `user` as the credentials.
fn kubeconfig_with_user(server: &common::Server, name: &str, user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(server.kubeconfig()).expect("admin kubeconfig");
    let cut = admin.find("users:").expect("users section");
    let text = format!(
        "{}users:\n- name: kybern-admin\n  user: {user}\n",
        &admin[..cut]
    );
    let path = server.dir.path().join(name);
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn run(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// kube-rs with the admin kubeconfig's server and CA but no credentials.
async fn anonymous_client(server: &common::Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    config.auth_info = Default::default();
    kube::Client::try_from(config).expect("client")
}

async fn raw_get(client: &kube::Client, path: &str) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get(path).body(Vec::new()).expect("request"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_tokens_and_anonymous() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cr3t-token,alice,1001,\"dev,ops\"\n").expect("tokens");
    let server = common::Server::start_with(&["--token-file", tokens.to_str().expect("path")]);

    // The admin certificate (CN kybern-admin, O system:masters) is accepted.
    let (ok, out) = run(&server.kubeconfig(), &["get", "namespaces", "-o", "name"]);
    assert!(ok && out.contains("namespace/default"), "{out}");

    // No credentials: only health and version.
    let anon = anonymous_client(&server).await;
    match raw_get(&anon, "/api/v1/namespaces").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized")),
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(raw_get(&anon, "/healthz").await.expect("healthz"), "ok");
    let version: serde_json::Value =
        serde_json::from_str(&raw_get(&anon, "/version").await.expect("version")).expect("json");
    assert_eq!(
        (version["major"].as_str(), version["minor"].as_str()),
        (Some("1"), Some("35"))
    );

    // A token from the token file, and a wrong one.
    // (Known, but with no role bound: discovery and who-am-I only.)
    let good = kubeconfig_with_user(&server, "good", "{token: s3cr3t-token}");
    let (ok, out) = run(&good, &["auth", "whoami"]);
    assert!(ok && out.contains("alice"), "{out}");
    let (ok, out) = run(&good, &["get", "configmaps", "-A", "-o", "name"]);
    assert!(
        !ok && out.contains("User \"alice\" cannot list resource \"configmaps\""),
        "{out}"
    );
    let bad = kubeconfig_with_user(&server, "bad", "{token: wrong}");
    let (ok, out) = run(&bad, &["get", "--raw", "/api"]);
    assert!(!ok && out.contains("Unauthorized"), "{out}");
}
