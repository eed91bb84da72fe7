//! Bootstrap-token discovery, as `kubeadm join --discovery-token-ca-cert-hash`:
//! a joining agent that has only the server's URL, a token and the pin of
//! the cluster CA's public key learns the CA without trusting anyone. It
//! reads `kube-public/cluster-info` without credentials and without
//! checking the server's certificate, accepts it only if it carries a
//! signature made with its token, takes the CA from it only if that CA's
//! key is pinned, and reads it once more through a connection that trusts
//! that CA. The token itself never crosses an unverified connection.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kybern_apimachinery::bootstrap_token::{
    CLUSTER_INFO, JWS_PREFIX, KUBECONFIG_KEY, PUBLIC_NAMESPACE, ca_pem_hashes, signature_valid,
    split, valid_pin,
};

/// How long to wait for the cluster-info signature of a new token.
const WAIT: Duration = Duration::from_secs(300);
/// Between two reads of cluster-info.
const RETRY: Duration = Duration::from_secs(1);

/// Why one read of cluster-info is not usable yet (worth retrying).
enum NotYet {
    Unreachable(String),
    Unsigned,
}

/// The cluster CA (PEM), learnt from `server` with `token` and checked
/// against `pins` (`sha256:<hex>` of a SubjectPublicKeyInfo).
pub async fn discover_ca(server: &str, token: &str, pins: &[String]) -> anyhow::Result<String> {
    let Some((id, secret)) = split(token) else {
        bail!("the token is not a bootstrap token (<6 of [a-z0-9]>.<16 of [a-z0-9]>)");
    };
    if let Some(bad) = pins.iter().find(|p| !valid_pin(p)) {
        bail!("unsupported CA hash {bad:?}: expected sha256:<64 hex digits>");
    }
    let insecure = client(server, None).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let kubeconfig = loop {
        match signed_kubeconfig(&insecure, id, secret).await? {
            Ok(text) => break text,
            Err(why) => {
                if tokio::time::Instant::now() >= deadline {
                    match why {
                        NotYet::Unreachable(e) => bail!("cannot read cluster-info: {e}"),
                        NotYet::Unsigned => {
                            bail!("cluster-info carries no signature for token {id}")
                        }
                    }
                }
                if let NotYet::Unreachable(e) = &why {
                    tracing::info!(error = %e, "waiting for cluster-info");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let ca_pem = ca_of(&kubeconfig)?;
    let found = ca_pem_hashes(&ca_pem);
    if !found.iter().any(|h| pins.contains(h)) {
        bail!(
            "the cluster CA in cluster-info is not pinned: its public key is {} (pinned: {})",
            found.join(", "),
            pins.join(", ")
        );
    }
    // The server that answered must hold that CA's certificate.
    let trusted = client(server, Some(&ca_pem)).await?;
    let again = read(&trusted)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read cluster-info trusting its CA: {e}"))?;
    if again
        .data
        .and_then(|d| d.get(KUBECONFIG_KEY).cloned())
        .as_deref()
        != Some(&kubeconfig)
    {
        bail!("cluster-info changed between the unverified and the verified read");
    }
    tracing::info!(ca = %found.join(","), "cluster CA discovered and verified");
    Ok(ca_pem)
}

/// One read: the kubeconfig of cluster-info if it carries a valid signature
/// for the token; an invalid one is an error (a wrong token or someone in
/// between), a missing one is worth waiting for.
async fn signed_kubeconfig(
    client: &kube::Client,
    id: &str,
    secret: &str,
) -> anyhow::Result<Result<String, NotYet>> {
    let info = match read(client).await {
        Ok(info) => info,
        Err(e) => return Ok(Err(NotYet::Unreachable(e.to_string()))),
    };
    let data = info.data.unwrap_or_default();
    let (Some(kubeconfig), Some(signature)) = (
        data.get(KUBECONFIG_KEY),
        data.get(&format!("{JWS_PREFIX}{id}")),
    ) else {
        return Ok(Err(NotYet::Unsigned));
    };
    if !signature_valid(signature, kubeconfig, id, secret) {
        bail!(
            "the signature of cluster-info does not verify with this token: cannot trust this server"
        );
    }
    Ok(Ok(kubeconfig.clone()))
}

async fn read(client: &kube::Client) -> Result<ConfigMap, kube::Error> {
    Api::<ConfigMap>::namespaced(client.clone(), PUBLIC_NAMESPACE)
        .get(CLUSTER_INFO)
        .await
}

/// The CA (PEM) a cluster-info kubeconfig names.
fn ca_of(kubeconfig: &str) -> anyhow::Result<String> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).context("cluster-info kubeconfig")?;
    let data = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("cluster-info names no CA")?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .context("cluster-info CA is not base64")?;
    String::from_utf8(pem).context("cluster-info CA is not PEM")
}

/// A client without credentials, trusting `ca_pem`, or anything without it.
async fn client(server: &str, ca_pem: Option<&str>) -> anyhow::Result<kube::Client> {
    let trust = match ca_pem {
        Some(pem) => format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
        None => "    insecure-skip-tls-verify: true\n".to_owned(),
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n{trust}contexts:\n- name: c\n  context:\n    cluster: c\n    user: anonymous\ncurrent-context: c\nusers:\n- name: anonymous\n  user: {{}}\n"
    );
    crate::agent_join::client_of(&yaml).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_read_from_a_cluster_info_kubeconfig() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let text =
            kybern_apiserver::bootstrap::cluster_info_kubeconfig("https://10.0.0.1:6443", pem);
        assert_eq!(ca_of(&text).expect("ca"), pem);
        assert!(ca_of("apiVersion: v1\nkind: Config\nclusters: []\n").is_err());
    }
}
