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

/// The certificate the server at `port` presents, as PEM (openssl's view).
fn served_certificate(port: u16) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text.find("-----END CERTIFICATE-----").expect("its end");
    text[begin..end + "-----END CERTIFICATE-----".len()].to_owned()
}

#[test]
fn the_server_renews_its_certificates_when_they_fall_due() {
    use kybern_apimachinery::x509::{Validity, unix_now};
    let mut server = Server::start();
    let pki = server.dir.path().join("pki");
    let dir = server.dir.path().to_owned();
    // Ten days of 310 left on the serving and the admin certificates.
    let (serving, key) = crate::common::nearly_expired_certificate(
        &dir,
        "kybern-apiserver",
        &[],
        &["127.0.0.1", "localhost"],
        true,
    );
    std::fs::write(pki.join("apiserver.crt"), &serving).expect("write");
    std::fs::write(pki.join("apiserver.key"), &key).expect("write");
    let (admin, key) = crate::common::nearly_expired_certificate(
        &dir,
        "kybern-admin",
        &["system:masters"],
        &[],
        false,
    );
    std::fs::write(pki.join("admin.crt"), &admin).expect("write");
    std::fs::write(pki.join("admin.key"), &key).expect("write");
    let ca_before = std::fs::read_to_string(pki.join("ca.crt")).expect("ca");

    server.restart_with(&[]);
    let year = |pem: &str| {
        let v = Validity::of_pem(pem).expect("a certificate");
        v.not_after - unix_now() > 300 * 86400
    };
    let renewed = std::fs::read_to_string(pki.join("apiserver.crt")).expect("renewed");
    assert_ne!(renewed, serving);
    assert!(year(&renewed), "{renewed}");
    let served = served_certificate(server.port);
    assert_eq!(served.trim(), renewed.trim());
    let admin_now = std::fs::read_to_string(pki.join("admin.crt")).expect("renewed");
    assert!(year(&admin_now));
    // The CA stays; the admin kubeconfig carries the new certificate and works.
    assert_eq!(
        std::fs::read_to_string(pki.join("ca.crt")).expect("ca"),
        ca_before
    );
    let embedded = base64::engine::general_purpose::STANDARD.encode(&admin_now);
    // The server writes it just after it starts listening.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(server.kubeconfig())
        .unwrap_or_default()
        .contains(&embedded)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the admin kubeconfig was not rewritten"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Cli::kubectl(&server).ok(&["get", "namespaces"]);

    // A certificate with life left is kept across restarts.
    server.restart_with(&[]);
    assert_eq!(
        std::fs::read_to_string(pki.join("apiserver.crt")).expect("kept"),
        renewed
    );
}
