//! `kybern agent --server URL --token TOKEN`: TLS bootstrap, as the
//! kubelet's. With a bootstrap token the agent asks the cluster for its own
//! client certificate (a CertificateSigningRequest for
//! `kubernetes.io/kube-apiserver-client-kubelet`, which the controller
//! manager approves and signs) and writes the kubeconfig it runs with. The
//! cluster CA it trusts comes from a file or from token discovery
//! (`agent_discovery`).

use std::path::Path;

use anyhow::Context;
use base64::Engine;

/// Standard base64, as kubeconfigs embed certificates and keys.
pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A kubeconfig for `server` (trusting `ca_pem`) with the given user entry.
fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, credentials: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kybern\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {user}@kybern\n  context:\n    cluster: kybern\n    user: {user}\ncurrent-context: {user}@kybern\nusers:\n- name: {user}\n  user:\n{credentials}",
        ca = b64(ca_pem),
    )
}

/// Obtains the node's client certificate with `token` and writes a
/// kubeconfig holding it to `out` (readable by its owner only).
pub async fn bootstrap(
    server: &str,
    token: &str,
    ca_pem: &str,
    node: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let yaml = kubeconfig_yaml(
        server,
        ca_pem,
        "bootstrap",
        &format!("    token: {token}\n"),
    );
    let client = client_of(&yaml).await?;
    let (certificate, key) = request_node_certificate(client, node).await?;
    let user = format!("system:node:{node}");
    let credentials = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&certificate),
        b64(key)
    );
    let yaml = kubeconfig_yaml(server, ca_pem, &user, &credentials);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, yaml)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, out)?;
    tracing::info!(kubeconfig = %out.display(), "joined the cluster");
    Ok(())
}

/// Asks the cluster, through `client`, for a client certificate of
/// `system:node:NODE` with a new key, and waits until it is signed: the
/// certificate and key (PEM).
pub async fn request_node_certificate(
    client: kube::Client,
    node: &str,
) -> anyhow::Result<(String, String)> {
    let ask = kybern_agent::csr::CertificateAsk::client(node);
    kybern_agent::csr::request(client, &ask)
        .await
        .context("asking for the node's client certificate")
}

/// A client for a kubeconfig given as YAML.
pub(crate) async fn client_of(yaml: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_parses_with_its_credentials() {
        let yaml = kubeconfig_yaml(
            "https://10.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\n",
            "system:node:n1",
            "    token: abcdef.0123456789abcdef\n",
        );
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("parses");
        assert_eq!(kc.current_context.as_deref(), Some("system:node:n1@kybern"));
        let auth = kc.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(auth.token.is_some());
    }
}
