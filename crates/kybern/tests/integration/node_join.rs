//! A node agent joining a cluster with a bootstrap token (as root): `kybern
//! token create` makes one and prints the join command; `kybern agent
//! --server --token --discovery-token-ca-cert-hash` learns the CA from the
//! signed cluster-info (and refuses a CA that is not pinned), asks for its
//! client certificate, the controller manager approves and signs it, and the node
//! registers and is Ready under its own identity; its serving certificate
//! comes the same way, and the API server checks it.

use crate::common::{Server, free_port};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};

/// The agent process and what it made, removed when the test ends.
struct JoiningAgent {
    child: std::process::Child,
    bridge: String,
}

impl Drop for JoiningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// kubeadm's recipe for a CA pin: SHA-256 of the DER SubjectPublicKeyInfo,
/// computed here by openssl rather than by the code under test.
fn openssl_pin(ca: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
        )
        .arg("sh")
        .arg(ca)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", hex.split_whitespace().next().expect("digest"))
}

/// Waits up to a minute for a process to exit.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the process did not exit");
}

/// Starts `kybern agent` as `node` with `kubeconfig` and `extra` flags,
/// logging to `dir/agent.log`.
fn spawn_agent(dir: &Path, node: &str, kubeconfig: &Path, extra: &[&str]) -> JoiningAgent {
    let port = free_port();
    let bridge = format!("kbj{port}");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_kybern"))
        .arg("agent")
        .args(extra)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--data-dir")
        .arg(dir.join("agent"))
        .args(["--node-name", node, "--node-ip", "127.0.0.1"])
        .args(["--bridge", &bridge, "--no-ip-masq"])
        .args(["--pod-cidr", &format!("10.202.{}.0/24", port % 250)])
        .args(["--agent-port", &free_port().to_string()])
        .env("KYBERN_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kybern agent");
    JoiningAgent { child, bridge }
}

#[tokio::test]
async fn an_agent_joins_with_a_bootstrap_token() {
    let server = Server::start_cluster(&[]);
    let client = server.client().await;
    let dir = server.dir.path();
    // The administrator makes a token and the command that joins with it.
    let out = Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args(["token", "create", "--kubeconfig"])
        .arg(server.kubeconfig())
        .arg("--print-join-command")
        .output()
        .expect("kybern token create");
    let join = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = join.split_whitespace().collect();
    let after = |flag: &str| {
        let at = words.iter().position(|w| *w == flag).expect(flag);
        words[at + 1].to_owned()
    };
    assert_eq!(after("--server"), server.url, "{join}");
    let token = after("--token");
    let pin = after("--discovery-token-ca-cert-hash");
    assert_eq!(pin, openssl_pin(&dir.join("pki/ca.crt")), "{join}");
    let id = token.split('.').next().expect("token id").to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let secret = secrets
        .get(&format!("bootstrap-token-{id}"))
        .await
        .expect("the token's Secret");
    assert_eq!(
        secret.type_.as_deref(),
        Some("bootstrap.kubernetes.io/token")
    );
    assert!(secret.data.expect("data").contains_key("expiration"));

    // A pin of another key: the agent learns the CA from the signed
    // cluster-info, finds it is not the pinned one, and gives up before
    // sending its token anywhere.
    let stranger_dir = tempfile::tempdir().expect("tempdir");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let mut stranger = spawn_agent(
        stranger_dir.path(),
        "stranger",
        &stranger_dir.path().join("kubeconfig"),
        &[
            "--server",
            &server.url,
            "--token",
            &token,
            "--discovery-token-ca-cert-hash",
            &wrong,
        ],
    );
    let status = wait_exit(&mut stranger.child);
    let log = std::fs::read_to_string(stranger_dir.path().join("agent.log")).unwrap_or_default();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("the cluster CA in cluster-info is not pinned") && log.contains(&pin),
        "{log}"
    );
    assert!(!stranger_dir.path().join("kubeconfig").exists());

    let kubeconfig = dir.join("joiner.kubeconfig");
    let _agent = spawn_agent(
        dir,
        "joiner",
        &kubeconfig,
        &[
            "--server",
            &server.url,
            "--token",
            &token,
            "--discovery-token-ca-cert-hash",
            &pin,
        ],
    );

    let agent_log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    crate::common::node::wait_node_ready(&client, "joiner").await;

    // Its request was approved automatically and signed by the kubelet
    // client signer; it was made by the bootstrap token's identity.
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let list = csrs.list(&ListParams::default()).await.expect("list CSRs");
    let client_requests: Vec<_> = list
        .items
        .iter()
        .filter(|c| c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet")
        .collect();
    assert_eq!(client_requests.len(), 1, "{}", agent_log());
    let csr = client_requests[0];
    assert_eq!(
        csr.spec.username.as_deref(),
        Some(format!("system:bootstrap:{id}").as_str())
    );
    assert_auto_approved(csr);

    // The agent runs as its node, with a kubeconfig only it may read.
    assert_owner_only(&kubeconfig);
    let as_node = client_of(&kubeconfig).await;
    let who: serde_json::Value = as_node
        .request(
            http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1",
                        "kind": "SelfSubjectReview"}))
                    .expect("body"),
                )
                .expect("request"),
        )
        .await
        .expect("whoami");
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:joiner");

    assert_serves_as_itself(&client, dir, "joiner").await;

    // A token that is not one joins nothing.
    let intruder = |trust: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(["agent", "--server", &server.url])
            .args(["--token", &format!("{id}.ffffffffffffffff")])
            .args(trust)
            .arg("--kubeconfig")
            .arg(dir.join("intruder.kubeconfig"))
            .arg("--data-dir")
            .arg(dir.join("intruder"))
            .args(["--node-name", "intruder"])
            .output()
            .expect("run kybern agent")
    };
    let ca = dir.join("pki/ca.crt");
    let refused = intruder(&["--certificate-authority", &ca.to_string_lossy()]);
    assert!(!refused.status.success());
    assert!(!dir.join("intruder.kubeconfig").exists());
    // Nor does it pass token discovery: the signature does not verify.
    let refused = intruder(&["--discovery-token-ca-cert-hash", &pin]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("the signature of cluster-info does not verify"),
        "{stderr}"
    );

    // The token's signature goes with the token.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let signature = format!("jws-kubeconfig-{id}");
    let signed = |m: &ConfigMap| m.data.as_ref().is_some_and(|d| d.contains_key(&signature));
    assert!(signed(
        &maps.get("cluster-info").await.expect("cluster-info")
    ));
    secrets
        .delete(&format!("bootstrap-token-{id}"), &Default::default())
        .await
        .expect("delete the token");
    crate::common::wait_for("the signature to go", async || {
        (!signed(&maps.get("cluster-info").await.ok()?)).then_some(())
    })
    .await;
}

/// The first issued request for `signer`, waited for.
async fn issued(client: &kube::Client, signer: &str) -> CertificateSigningRequest {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    crate::common::wait_for("an issued certificate", async || {
        let list = csrs.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|c| {
            c.spec.signer_name == signer
                && c.status
                    .as_ref()
                    .and_then(|s| s.certificate.as_ref())
                    .is_some()
        })
    })
    .await
}

/// Asserts `node`'s agent asked for its serving certificate as itself, got
/// it approved and signed, and presents it; and that the API server refuses
/// it when it dials the agent for another node.
async fn assert_serves_as_itself(client: &kube::Client, dir: &Path, node: &str) {
    let serving = issued(client, "kubernetes.io/kubelet-serving").await;
    let user = format!("system:node:{node}");
    assert_eq!(serving.spec.username.as_deref(), Some(user.as_str()));
    assert_auto_approved(&serving);
    let nodes: Api<Node> = Api::all(client.clone());
    let port = nodes
        .get(node)
        .await
        .expect("node")
        .status
        .and_then(|s| s.daemon_endpoints)
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .expect("the agent's port");
    let port = u16::try_from(port).expect("port");
    crate::common::wait_for("the agent to present its signed certificate", async || {
        (verified_agent_identity(&dir.join("pki"), port)
            .await
            .as_deref()
            == Some(user.as_str()))
        .then_some(())
    })
    .await;

    // A Node that points at this agent's address gets no logs through it:
    // the agent's certificate names another node.
    let impostor: Node =
        serde_json::from_value(json!({"metadata": {"name": "impostor"}})).expect("node");
    nodes
        .create(&Default::default(), &impostor)
        .await
        .expect("create node");
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    nodes
        .patch_status(
            "impostor",
            &Default::default(),
            &kube::api::Patch::Merge(status),
        )
        .await
        .expect("node status");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "misdirected"},
        "spec": {"nodeName": "impostor", "containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    pods.create(&Default::default(), &pod)
        .await
        .expect("create pod");
    let refused = pods
        .logs("misdirected", &Default::default())
        .await
        .expect_err("no logs from another node's agent");
    assert!(
        refused.to_string().contains("not system:node:impostor"),
        "{refused}"
    );
}

/// The user the certificate of the agent on 127.0.0.1:`port` names, if it
/// verifies against the cluster CA for that address (the admin connects).
async fn verified_agent_identity(pki: &Path, port: u16) -> Option<String> {
    use rustls::pki_types::ServerName;
    let config = crate::common::admin_tls_config(pki).ok()?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = ServerName::try_from("127.0.0.1").ok()?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let cert = tls.get_ref().1.peer_certificates()?.first()?.clone();
    kybern_apimachinery::x509::subject_identity(&cert).map(|(user, _)| user)
}

/// Asserts the request was approved by the controller manager's approver.
fn assert_auto_approved(csr: &CertificateSigningRequest) {
    let approved = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Approved"))
        .expect("an Approved condition");
    assert_eq!(approved.reason.as_deref(), Some("AutoApproved"));
}

/// Asserts only its owner may read or write `path`.
fn assert_owner_only(path: &Path) {
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(path).expect("kubeconfig").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// A client with the identity of the kubeconfig at `path`.
async fn client_of(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// Seconds from now until the client certificate in a kubeconfig expires.
fn remaining_life(kubeconfig: &Path) -> i64 {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let data = kc.auth_infos[0]
        .auth_info
        .as_ref()
        .and_then(|a| a.client_certificate_data.clone())
        .expect("client-certificate-data");
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    let validity = kybern_apimachinery::x509::Validity::of_pem(&String::from_utf8_lossy(&pem))
        .expect("a certificate");
    validity.not_after - kybern_apimachinery::x509::unix_now()
}

#[tokio::test]
async fn an_agent_renews_its_certificate_before_it_expires() {
    let server = Server::start_cluster(&[]);
    let client = server.client().await;
    let dir = server.dir.path();
    // The node's certificate has ten of its 310 days left: due.
    let (cert, key) = crate::common::nearly_expired_certificate(
        dir,
        "system:node:renewer",
        &["system:nodes"],
        &[],
        false,
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let admin = std::fs::read_to_string(server.kubeconfig()).expect("admin kubeconfig");
    let cut = admin.find("users:").expect("users section");
    let kubeconfig = dir.join("renewer.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "{}users:\n- name: kybern-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            &admin[..cut],
            b64(&cert),
            b64(&key)
        ),
    )
    .expect("kubeconfig");
    assert!(remaining_life(&kubeconfig) < 11 * 86400);
    let _agent = spawn_agent(dir, "renewer", &kubeconfig, &[]);
    crate::common::node::wait_node_ready(&client, "renewer").await;

    // The node asked for a new certificate as itself; it was approved as a
    // node renewing itself, signed for a year, and written in place.
    let agent_log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let issued = issued(&client, "kubernetes.io/kube-apiserver-client-kubelet").await;
    assert_eq!(
        issued.spec.username.as_deref(),
        Some("system:node:renewer"),
        "{}",
        agent_log()
    );
    assert_auto_approved(&issued);
    crate::common::wait_for("the rewritten kubeconfig", async || {
        (remaining_life(&kubeconfig) > 300 * 86400).then_some(())
    })
    .await;
    assert_owner_only(&kubeconfig);
    // The rewritten kubeconfig works, as the node.
    let as_node = client_of(&kubeconfig).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(as_node);
    nodes.get("renewer").await.expect("the node reads its Node");
    assert!(
        agent_log().contains("rotated the node's client certificate"),
        "{}",
        agent_log()
    );
}
