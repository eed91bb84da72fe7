//! API clients whose client certificate can be replaced while they run, and
//! the node agent's rotation of its own: before its certificate expires the
//! agent asks for a new one through a CertificateSigningRequest (approved
//! for nodes renewing themselves), rewrites its kubeconfig, and presents the
//! new certificate from the next connection on, as the kubelet does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use kube::client::ConfigExt;
use kybern_apimachinery::x509::{Validity, unix_now};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// How soon the agent tries again after failing to renew.
const RETRY: Duration = Duration::from_secs(30);

/// A client certificate and key that can be swapped under live clients.
#[derive(Debug)]
pub struct RotatingIdentity {
    current: RwLock<(Arc<CertifiedKey>, String)>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl RotatingIdentity {
    /// An identity of the PEM certificate (chain) and key.
    pub fn new(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified(cert_pem, key_pem, &provider)?;
        Ok(Arc::new(RotatingIdentity {
            current: RwLock::new((key, cert_pem.to_owned())),
            provider,
        }))
    }

    /// Presents `cert_pem` and `key_pem` from the next handshake on.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let key = certified(cert_pem, key_pem, &self.provider)?;
        if let Ok(mut slot) = self.current.write() {
            *slot = (key, cert_pem.to_owned());
        }
        Ok(())
    }

    /// The certificate presented now (PEM).
    pub fn cert_pem(&self) -> String {
        self.current.read().map(|c| c.1.clone()).unwrap_or_default()
    }
}

impl rustls::client::ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified(
    cert_pem: &str,
    key_pem: &str,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("parsing the client certificate")?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parsing the client key")?;
    Ok(Arc::new(CertifiedKey::from_der(certs, key, provider)?))
}

/// The client certificate and key (PEM) of a kubeconfig's user, inline or
/// in files, if it has them.
pub fn identity_of(auth: &kube::config::AuthInfo) -> anyhow::Result<Option<(String, String)>> {
    // Serialized, the secrets are plain strings: no need for their wrapper type.
    let auth = serde_json::to_value(auth)?;
    let field = |name: &str| auth[name].as_str().map(str::to_owned);
    let b64 = |s: &str| -> anyhow::Result<String> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim())?;
        Ok(String::from_utf8(bytes)?)
    };
    let cert = match (
        field("client-certificate-data"),
        field("client-certificate"),
    ) {
        (Some(data), _) => b64(&data)?,
        (None, Some(file)) => {
            std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
        }
        (None, None) => return Ok(None),
    };
    let key = match (field("client-key-data"), field("client-key")) {
        (Some(data), _) => b64(&data)?,
        (None, Some(file)) => {
            std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some((cert, key)))
}

/// Whether the first certificate of `cert_pem` is `system:node:NODE`'s:
/// only a node's own certificate is renewed as that node.
pub fn names_node(cert_pem: &str, node: &str) -> bool {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .ok()
        .and_then(|der| kybern_apimachinery::x509::subject_identity(&der))
        .is_some_and(|(user, _)| user == format!("system:node:{node}"))
}

/// A client for `config` that presents whatever `identity` holds at each
/// new connection and keeps up to `max_idle` connections between requests;
/// everything else (server, CA, timeouts) from `config`.
pub fn client_with(
    config: &kube::Config,
    identity: Arc<RotatingIdentity>,
    max_idle: usize,
) -> anyhow::Result<kube::Client> {
    let mut tls = config.rustls_client_config()?;
    tls.client_auth_cert_resolver = identity;
    Ok(
        kybern_controllers::transport::Transport::keeping_idle(config, tls, max_idle)
            .client(config, None)?,
    )
}

/// Keeps the node's client certificate fresh: sleeps until four fifths of
/// its life have passed, asks for a new one as the node itself, writes it
/// into `kubeconfig` and presents it from then on. Runs until dropped.
pub async fn rotate(
    client: kube::Client,
    kubeconfig: PathBuf,
    identity: Arc<RotatingIdentity>,
    node: String,
) {
    loop {
        let due = Validity::of_pem(&identity.cert_pem()).map_or(0, |v| v.renew_at());
        let wait = u64::try_from(due - unix_now()).unwrap_or(0);
        if wait > 0 {
            tracing::info!(node, renew_in_s = wait, "client certificate valid");
            // Sleep in bounded steps: a suspended machine's clock jumps.
            tokio::time::sleep(Duration::from_secs(wait.min(3600))).await;
            continue;
        }
        match renew(&client, &kubeconfig, &identity, &node).await {
            Ok(()) => tracing::info!(node, "rotated the node's client certificate"),
            Err(e) => {
                tracing::warn!(node, error = %format!("{e:#}"), "cannot rotate the client certificate; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn renew(
    client: &kube::Client,
    kubeconfig: &Path,
    identity: &RotatingIdentity,
    node: &str,
) -> anyhow::Result<()> {
    let (cert, key) = crate::agent_join::request_node_certificate(client.clone(), node).await?;
    rewrite_credentials(kubeconfig, &cert, &key)?;
    identity.replace(&cert, &key)
}

/// Replaces the client certificate and key of every user in the kubeconfig
/// at `path` (the agent's has one), atomically and readable by its owner only.
fn rewrite_credentials(path: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc = serde_json::to_value(kube::config::Kubeconfig::from_yaml(&text)?)?;
    use crate::agent_join::b64;
    for user in doc["users"].as_array_mut().into_iter().flatten() {
        let Some(entry) = user.get_mut("user").and_then(|u| u.as_object_mut()) else {
            continue;
        };
        entry.remove("client-certificate");
        entry.remove("client-key");
        entry.insert("client-certificate-data".into(), b64(cert).into());
        entry.insert("client-key-data".into(), b64(key).into());
    }
    // JSON is YAML: kubectl and kube-rs read it as a kubeconfig.
    let out = serde_json::to_string_pretty(&doc)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn only_the_nodes_own_certificate_is_renewed_as_it() {
        let (node, _) = certificate("system:node:n1");
        assert!(names_node(&node, "n1"));
        assert!(!names_node(&node, "n2"));
        let (admin, _) = certificate("kybern-admin");
        assert!(!names_node(&admin, "n1"));
        assert!(!names_node("garbage", "n1"));
    }

    #[test]
    fn credentials_are_rewritten_in_place_and_swapped_live() {
        let (old_cert, old_key) = certificate("system:node:n1");
        use crate::agent_join::b64;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("node.kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&old_cert),
                b64(&old_key)
            ),
        )
        .expect("write");
        let read = |p: &Path| {
            let kc = kube::config::Kubeconfig::read_from(p).expect("kubeconfig");
            identity_of(kc.auth_infos[0].auth_info.as_ref().expect("user"))
                .expect("identity")
                .expect("a certificate")
        };
        assert_eq!(read(&path), (old_cert.clone(), old_key.clone()));
        let identity = RotatingIdentity::new(&old_cert, &old_key).expect("identity");
        let (new_cert, new_key) = certificate("system:node:n1");
        rewrite_credentials(&path, &new_cert, &new_key).expect("rewrite");
        assert_eq!(read(&path), (new_cert.clone(), new_key.clone()));
        let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
        assert_eq!(kc.current_context.as_deref(), Some("x"));
        identity.replace(&new_cert, &new_key).expect("replace");
        assert_eq!(identity.cert_pem(), new_cert);
        assert!(identity.replace("garbage", &new_key).is_err());
        assert_eq!(identity.cert_pem(), new_cert);
    }
}
