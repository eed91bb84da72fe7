//! The endpoint's serving certificate: one the cluster signs through a
//! `kubernetes.io/kubelet-serving` request (the kubelet's
//! `serverTLSBootstrap`), renewed before it expires and swapped under live
//! listeners; a self-signed one until the first is issued, or for agents
//! that do not run as their node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kybern_apimachinery::x509::{Validity, unix_now};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::csr::{CertificateAsk, request};
use crate::{AgentError, NodeContext};

/// The signed certificate and its key, as the kubelet keeps them.
const SIGNED: &str = "kubelet-server-current.pem";
/// How soon a failed request is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// What the endpoint presents, replaceable while it serves.
#[derive(Debug)]
pub struct ServingCert {
    dir: PathBuf,
    names: Vec<String>,
    /// The key presented now, and the validity of it when it is signed.
    current: RwLock<(Arc<CertifiedKey>, Option<Validity>)>,
    /// Whether a signed one is presented.
    signed: tokio::sync::watch::Sender<bool>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn bad(what: impl std::fmt::Display) -> AgentError {
    AgentError::Certificate(format!("serving certificate: {what}"))
}

fn certified(
    pem: &str,
    key_pem: &str,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, AgentError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(bad)?;
    Ok(Arc::new(
        CertifiedKey::from_der(certs, key, provider).map_err(bad)?,
    ))
}

impl ServingCert {
    /// The certificate kept under `dir` for `names` (the node's name and
    /// address): the signed one while it is valid and covers them, else a
    /// self-signed one (made once and kept).
    pub fn load(dir: &Path, names: Vec<String>) -> Result<Arc<Self>, AgentError> {
        std::fs::create_dir_all(dir)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signed = std::fs::read_to_string(dir.join(SIGNED))
            .ok()
            .and_then(|pem| {
                let validity = Validity::of_pem(&pem)?;
                let usable = validity.not_after > unix_now() && validity.covers(&names);
                let key = certified(&pem, &pem, &provider).ok()?;
                usable.then_some((key, Some(validity)))
            });
        let current = match signed {
            Some(signed) => signed,
            None => (Self::self_signed(dir, &names, &provider)?, None),
        };
        Ok(Arc::new(ServingCert {
            dir: dir.to_owned(),
            names,
            signed: tokio::sync::watch::Sender::new(current.1.is_some()),
            current: RwLock::new(current),
            provider,
        }))
    }

    fn self_signed(
        dir: &Path,
        names: &[String],
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, AgentError> {
        let (crt, key) = (dir.join("agent.crt"), dir.join("agent.key"));
        if !(crt.exists() && key.exists()) {
            let cert = rcgen::generate_simple_self_signed(names.to_vec()).map_err(bad)?;
            write_private(&key, &cert.signing_key.serialize_pem())?;
            std::fs::write(&crt, cert.cert.pem())?;
        }
        certified(
            &std::fs::read_to_string(&crt)?,
            &std::fs::read_to_string(&key)?,
            provider,
        )
    }

    /// When the signed certificate falls due for renewal (seconds since
    /// the epoch); `None` while there is none.
    pub fn renew_at(&self) -> Option<i64> {
        let current = self.current.read().ok()?;
        current.1.as_ref().map(Validity::renew_at)
    }

    /// Keeps a signed certificate and presents it from the next handshake.
    pub fn install(&self, cert_pem: &str, key_pem: &str) -> Result<(), AgentError> {
        let validity = Validity::of_pem(cert_pem).ok_or_else(|| bad("unparsable"))?;
        if !validity.covers(&self.names) {
            return Err(bad(format!("does not cover {:?}", self.names)));
        }
        let key = certified(cert_pem, key_pem, &self.provider)?;
        write_private(&self.dir.join(SIGNED), &format!("{cert_pem}{key_pem}"))?;
        if let Ok(mut slot) = self.current.write() {
            *slot = (key, Some(validity));
        }
        self.signed.send_replace(true);
        Ok(())
    }

    /// Waits up to `limit` for a signed certificate: a caller that arrives
    /// while the first is being issued gets it rather than the self-signed
    /// one it could not verify.
    pub async fn signed_within(&self, limit: Duration) {
        let mut signed = self.signed.subscribe();
        let _ = tokio::time::timeout(limit, signed.wait_for(|s| *s)).await;
    }
}

/// Writes `text` to `path` atomically, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// Asks for a signed serving certificate at once when there is none, then
/// again each time four fifths of its life have passed. Runs until dropped.
pub async fn rotate(ctx: Arc<NodeContext>, cert: Arc<ServingCert>) {
    loop {
        if let Some(due) = cert.renew_at() {
            let wait = u64::try_from(due - unix_now()).unwrap_or(0);
            if wait > 0 {
                tracing::info!(node = %ctx.node_name, renew_in_s = wait, "serving certificate valid");
                // Bounded steps: a suspended machine's clock jumps.
                tokio::time::sleep(Duration::from_secs(wait.min(3600))).await;
                continue;
            }
        }
        let ask = CertificateAsk::serving(&ctx.node_name, vec![ctx.node_ip]);
        let issued = match request(ctx.client.clone(), &ask).await {
            Ok((cert_pem, key_pem)) => cert.install(&cert_pem, &key_pem),
            Err(e) => Err(e),
        };
        match issued {
            Ok(()) => {
                tracing::info!(node = %ctx.node_name, "serving with a cluster-signed certificate")
            }
            Err(e) => {
                tracing::warn!(node = %ctx.node_name, error = %e, "no signed serving certificate; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_by_a_ca(names: &[&str], days: i64) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + Duration::from_secs((days * 86400).max(1) as u64)).into();
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_signed_certificate_is_kept_and_reloaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = vec!["n1".to_owned(), "10.0.0.7".to_owned()];
        let cert = ServingCert::load(dir.path(), names.clone()).expect("load");
        assert_eq!(cert.renew_at(), None, "self-signed until one is issued");
        let (pem, key) = signed_by_a_ca(&["n1", "10.0.0.7"], 365);
        cert.install(&pem, &key).expect("install");
        assert!(cert.renew_at().is_some_and(|t| t > unix_now()));
        let mode = std::fs::metadata(dir.path().join(SIGNED))
            .expect("kept")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let again = ServingCert::load(dir.path(), names).expect("reload");
        assert_eq!(again.renew_at(), cert.renew_at());
    }

    #[test]
    fn a_certificate_for_other_names_is_refused_and_not_reloaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = vec!["n1".to_owned(), "10.0.0.7".to_owned()];
        let cert = ServingCert::load(dir.path(), names.clone()).expect("load");
        let (pem, key) = signed_by_a_ca(&["n2", "10.0.0.7"], 365);
        assert!(cert.install(&pem, &key).is_err());
        assert_eq!(cert.renew_at(), None);
        // One kept from before an address change is not served.
        let (pem, key) = signed_by_a_ca(&["n1", "10.0.0.7"], 365);
        cert.install(&pem, &key).expect("install");
        let moved = vec!["n1".to_owned(), "10.0.0.8".to_owned()];
        let reloaded = ServingCert::load(dir.path(), moved).expect("reload");
        assert_eq!(reloaded.renew_at(), None);
    }
}
