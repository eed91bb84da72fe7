//! Authentication at the API server's TLS door: the admin client certificate,
//! bearer tokens from a token file, and anonymous requests limited to health
//! and version, driven with the real kubectl.

use crate::common;
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
    // And the one object a joining node reads before it may trust anyone:
    // cluster-info, naming the cluster's CA. Nothing else of kube-public.
    let info: serde_json::Value = serde_json::from_str(
        &raw_get(
            &anon,
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        )
        .await
        .expect("cluster-info"),
    )
    .expect("json");
    let kubeconfig = info["data"]["kubeconfig"].as_str().expect("kubeconfig");
    let ca = std::fs::read_to_string(server.dir.path().join("pki/ca.crt")).expect("ca");
    {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&ca);
        assert!(kubeconfig.contains(&encoded), "{kubeconfig}");
    }
    for path in [
        "/api/v1/namespaces/kube-public/configmaps",
        "/api/v1/watch/namespaces/kube-public/configmaps/cluster-info",
        "/api/v1/namespaces/kube-public/configmaps?fieldSelector=metadata.name%3Dcluster-info",
    ] {
        match raw_get(&anon, path).await {
            Err(kube::Error::Api(s)) => assert!(
                matches!(
                    (s.code, s.reason.as_str()),
                    (401, "Unauthorized") | (403, "Forbidden")
                ),
                "{path}: {s:?}"
            ),
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }

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

/// A bootstrap token Secret in kube-system for `id.secret`, expiring at `expiration`.
fn bootstrap_secret(id: &str, secret: &str, expiration: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": {"token-id": id, "token-secret": secret, "expiration": expiration,
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:bootstrappers:kybern:default-node-token"},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_authenticate_until_they_expire() {
    // With the controllers: the token cleaner removes expired tokens.
    let server = common::Server::start_cluster(&["--disable-scheduler"]);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for (id, secret, at) in [
        ("abcdef", "0123456789abcdef", future.as_str()),
        ("expird", "0123456789abcdef", past.as_str()),
    ] {
        let path = server.dir.path().join(format!("{id}.json"));
        std::fs::write(&path, bootstrap_secret(id, secret, at)).expect("secret");
        let (ok, out) = run(
            &server.kubeconfig(),
            &["apply", "-f", path.to_str().expect("path")],
        );
        assert!(ok, "{out}");
    }

    let live = kubeconfig_with_user(&server, "live", "{token: abcdef.0123456789abcdef}");
    let (ok, out) = run(&live, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{out}");
    let who: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:bootstrap:abcdef"
    );
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:bootstrappers",
            "system:bootstrappers:kybern:default-node-token",
            "system:authenticated"
        ])
    );
    // The right id with a wrong secret, and an expired token: 401.
    for (name, token) in [
        ("wrong", "abcdef.0123456789abcdee"),
        ("expired", "expird.0123456789abcdef"),
    ] {
        let kc = kubeconfig_with_user(&server, name, &format!("{{token: {token}}}"));
        let (ok, out) = run(&kc, &["auth", "whoami"]);
        assert!(!ok && out.contains("Unauthorized"), "{name}: {out}");
    }
    // The cleaner deletes the expired token's Secret and keeps the live one.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(server.client().await, "kube-system");
    common::wait_for("the expired token deleted", async || {
        match secrets.get_opt("bootstrap-token-expird").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        secrets
            .get_opt("bootstrap-token-abcdef")
            .await
            .expect("get")
            .is_some()
    );
}
