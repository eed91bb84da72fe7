//! Client certificates of the components `kybern server` runs in its own
//! process (the scheduler, the controller manager): issued by the cluster
//! CA at start, and issued again while the server runs once four fifths of
//! their life have passed, presented from the next connection on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kybern_apimachinery::x509::{Validity, unix_now};
use kybern_apiserver::pki::Pki;

use crate::client_cert::{RotatingIdentity, client_with, identity_of};

/// One component's identity: its kubeconfig and the certificate its
/// clients present.
#[derive(Debug)]
pub struct ComponentIdentity {
    kubeconfig: PathBuf,
    user: String,
    groups: Vec<String>,
    identity: Arc<RotatingIdentity>,
}

/// The certificate and key (PEM) of the kubeconfig at `path`.
fn read_identity(path: &Path) -> anyhow::Result<(String, String)> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let auth = kc
        .auth_infos
        .first()
        .and_then(|a| a.auth_info.as_ref())
        .context("the kubeconfig has no user")?;
    identity_of(auth)?.context("the kubeconfig holds no client certificate")
}

impl ComponentIdentity {
    /// Writes `kubeconfig` with a new certificate for `user` in `groups`,
    /// and returns the identity with its settings (for clients that present
    /// the certificate through [`ComponentIdentity::client`]).
    pub async fn issue(
        pki: &Pki,
        kubeconfig: &Path,
        server_url: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<(Self, kube::Config)> {
        pki.write_client_kubeconfig(kubeconfig, server_url, user, groups)?;
        let (cert, key) = read_identity(kubeconfig)?;
        // `system:kube-scheduler` runs as `kube-scheduler`, as upstream.
        let component = user.strip_prefix("system:").unwrap_or(user);
        let config = crate::client_config::config_from_kubeconfig(kubeconfig, component).await?;
        Ok((
            ComponentIdentity {
                kubeconfig: kubeconfig.to_owned(),
                user: user.to_owned(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                identity: RotatingIdentity::new(&cert, &key)?,
            },
            config,
        ))
    }

    /// A client on `config` that presents this identity's current
    /// certificate and keeps up to `max_idle` connections between requests.
    pub fn client(&self, config: &kube::Config, max_idle: usize) -> anyhow::Result<kube::Client> {
        client_with(config, self.identity.clone(), max_idle)
    }

    /// Issues a new certificate when the current one is due (or unreadable),
    /// rewrites the kubeconfig and presents it; whether it did.
    pub fn renew_if_due(&self, pki: &Pki, server_url: &str) -> anyhow::Result<bool> {
        let due =
            Validity::of_pem(&self.identity.cert_pem()).is_none_or(|v| v.renewal_due(unix_now()));
        if !due {
            return Ok(false);
        }
        let groups: Vec<&str> = self.groups.iter().map(String::as_str).collect();
        pki.write_client_kubeconfig(&self.kubeconfig, server_url, &self.user, &groups)?;
        let (cert, key) = read_identity(&self.kubeconfig)?;
        self.identity.replace(&cert, &key)?;
        tracing::info!(user = %self.user, "renewed a component's client certificate");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_due_certificate_is_issued_again_and_presented() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::ensure(&dir.path().join("pki"), &["localhost".to_owned()]).expect("pki");
        let path = dir.path().join("scheduler.kubeconfig");
        let url = "https://127.0.0.1:6443";
        let (component, _) =
            ComponentIdentity::issue(&pki, &path, url, "system:kube-scheduler", &[])
                .await
                .expect("issue");
        let first = component.identity.cert_pem();
        assert!(!component.renew_if_due(&pki, url).expect("check"));
        assert_eq!(component.identity.cert_pem(), first, "not due: kept");

        // Ten days left of a long life: due.
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:kube-scheduler");
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        params.not_before = (now - day * 300).into();
        params.not_after = (now + day * 10).into();
        let old = params.self_signed(&key).expect("cert");
        component
            .identity
            .replace(&old.pem(), &key.serialize_pem())
            .expect("replace");
        assert!(component.renew_if_due(&pki, url).expect("renew"));
        let renewed = component.identity.cert_pem();
        assert_ne!(renewed, old.pem());
        let validity = Validity::of_pem(&renewed).expect("parses");
        assert!(validity.not_after - unix_now() > 300 * 86_400);
        assert_eq!(read_identity(&path).expect("kubeconfig").0, renewed);
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(renewed.as_bytes())
            .map(|d: rustls::pki_types::CertificateDer<'_>| d.to_vec())
            .expect("der");
        let (user, _) = kybern_apimachinery::x509::subject_identity(&der).expect("subject");
        assert_eq!(user, "system:kube-scheduler");
    }
}
