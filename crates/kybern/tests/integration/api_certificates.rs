//! The CertificateSigningRequest API with the real `kubectl` and openssl:
//! a user's request approved with `kubectl certificate approve`, signed by
//! the controller manager with the cluster CA, and the certificate then
//! authenticating its user; who may approve; malformed requests refused.

use crate::common::cli::Cli;
use crate::common::{Server, wait_for};
use base64::Engine;
use serde_json::json;

/// An openssl RSA key and certificate request for `subject`, in `dir`:
/// (key path, request PEM).
fn openssl_request(
    dir: &std::path::Path,
    name: &str,
    subject: &str,
) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req failed");
    (key, std::fs::read_to_string(&csr).expect("request"))
}

fn csr_manifest(name: &str, request_pem: &str, signer: &str) -> String {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(request_pem),
            "signerName": signer, "expirationSeconds": 86400,
            "usages": ["client auth"],
            // Whatever a client writes here, the server records the requester.
            "username": "mallory", "groups": ["system:masters"]}})
    .to_string()
}

#[tokio::test]
async fn an_approved_user_certificate_is_signed_and_authenticates_its_user() {
    let server = Server::start_cluster(&[]);
    let kubectl = Cli::kubectl(&server);
    let dir = server.dir.path();
    let (key, request) = openssl_request(dir, "jane", "/CN=jane/O=devs");
    let signer = "kubernetes.io/kube-apiserver-client";
    kubectl.ok_stdin(
        &["create", "-f", "-"],
        &csr_manifest("jane", &request, signer),
    );
    let field = |path: &str| kubectl.ok(&["get", "csr", "jane", "-o", &format!("jsonpath={path}")]);
    assert_eq!(field("{.spec.username}"), "kybern-admin");
    // Not approved: not signed.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(field("{.status.certificate}"), "");

    // Only who may approve for the signer may approve: updating the
    // approval subresource is not enough.
    kubectl.ok(&[
        "create",
        "clusterrole",
        "csr-updater",
        "--verb=get,list,update",
        "--resource=certificatesigningrequests,certificatesigningrequests/approval",
    ]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "csr-updater",
        "--clusterrole=csr-updater",
        "--user=jane",
    ]);
    let refused = kubectl.fails(&["certificate", "approve", "jane", "--as=jane"]);
    assert!(
        refused.contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "{refused}"
    );
    kubectl.ok(&["certificate", "approve", "jane"]);
    let certificate = wait_for("the signer to sign", async || {
        let c = field("{.status.certificate}");
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(field("{.status.conditions[0].type}"), "Approved");
    let row = kubectl.ok(&["get", "csr", "jane", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[2..],
        [signer, "kybern-admin", "24h", "Approved,Issued"],
        "{row}"
    );
    let pem = base64::engine::general_purpose::STANDARD
        .decode(certificate.trim())
        .expect("base64 certificate");

    // The certificate authenticates jane in devs.
    let ca = std::fs::read(dir.join("pki/ca.crt")).expect("cluster CA");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let kubeconfig = dir.join("jane.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: jane\n  context: {{cluster: c, user: jane}}\ncurrent-context: jane\nusers:\n- name: jane\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            server.url,
            b64(&ca),
            b64(&pem),
            b64(&std::fs::read(&key).expect("key")),
        ),
    )
    .expect("jane's kubeconfig");
    let who = kubectl.ok(&[
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(who.starts_with("jane "), "{who}");
    assert!(who.contains("devs"), "{who}");

    // A request that is not one, and one without a signer, are refused.
    let garbage = csr_manifest("garbage", "not a request", signer);
    let out = kubectl.run_with_stdin(&["create", "-f", "-"], Some(&garbage));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.request"),
        "{err}"
    );
    let unsigned = csr_manifest("nosigner", &request, "");
    let out = kubectl.run_with_stdin(&["create", "-f", "-"], Some(&unsigned));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.signerName: Required value"),
        "{err}"
    );
}
