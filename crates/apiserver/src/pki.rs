//! The cluster's certificates: a CA made at first start (rcgen), the API
//! server's serving certificate, and the admin's client certificate with an
//! admin kubeconfig, all kept under `<data-dir>/pki`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use kybern_apimachinery::x509::{Validity, unix_now};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rcgen refused to make or parse a certificate or key.
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
}

/// PEM-encoded files of the cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// Serving certificate (PEM).
    pub server_cert_pem: String,
    /// Serving key (PEM).
    pub server_key_pem: String,
    /// The client certificate the API server shows node agents (PEM).
    pub node_client_cert_pem: String,
    /// Its key (PEM).
    pub node_client_key_pem: String,
}

/// The user the API server is to node agents (its client certificate's CN).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

fn name(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Loads the CA (making one if absent) and returns it as an issuer with its PEM.
fn load_or_make_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), PkiError> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        let pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)?;
        return Ok((Issuer::from_ca_cert_pem(&pem, key)?, pem));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("kybern-ca", &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.self_signed(&key)?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    let pem = cert.pem();
    Ok((Issuer::new(params, key), pem))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    orgs: &[&str],
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(cn, orgs);
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    // One year, as upstream's kubeadm issues leaf certificates.
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate and key `dir/NAME.{crt,key}`, issued by `make` (and
/// written, key first) when absent, unreadable, due for renewal, or not
/// covering `hosts`.
fn keep_or_issue(
    dir: &Path,
    name: &str,
    hosts: &[String],
    make: impl FnOnce() -> Result<(String, String), PkiError>,
) -> Result<(String, String), PkiError> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if let (Ok(cert), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key))
        && let Some(v) = Validity::of_pem(&cert)
        && !v.renewal_due(unix_now())
        && v.covers(hosts)
    {
        return Ok((cert, k));
    }
    let (cert, k) = make()?;
    if crt.exists() {
        tracing::info!(certificate = %crt.display(), "renewed a certificate");
    }
    write(&key, &k, true)?;
    write(&crt, &cert, false)?;
    Ok((cert, k))
}

impl Pki {
    /// Loads the PKI under `dir`, making what is missing: the CA, a serving
    /// certificate for `hosts` (names and IPs), and an admin client
    /// certificate. A leaf certificate that is due for renewal (four fifths
    /// of its year gone), unreadable, or (the serving one) missing one of
    /// `hosts` is issued anew with a new key; the CA is kept.
    pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (issuer, ca_pem) = load_or_make_ca(dir)?;
        let (srv_crt, srv_key) = keep_or_issue(dir, "apiserver", hosts, || {
            let mut sans = Vec::new();
            for h in hosts {
                match h.parse::<IpAddr>() {
                    Ok(ip) => sans.push(SanType::IpAddress(ip)),
                    Err(_) => sans.push(SanType::DnsName(h.as_str().try_into()?)),
                }
            }
            leaf(
                &issuer,
                "kybern-apiserver",
                &[],
                sans,
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        })?;
        let _ = keep_or_issue(dir, "admin", &[], || {
            leaf(
                &issuer,
                "kybern-admin",
                &["system:masters"],
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })?;
        // Upstream's name for it: the API server as a client of kubelets.
        let (node_crt, node_key) = keep_or_issue(dir, "apiserver-kubelet-client", &[], || {
            leaf(
                &issuer,
                KUBELET_CLIENT_USER,
                &[],
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })?;
        Ok(Pki {
            node_client_cert_pem: node_crt,
            node_client_key_pem: node_key,
            dir: dir.to_owned(),
            ca_pem,
            server_cert_pem: srv_crt,
            server_key_pem: srv_key,
        })
    }

    /// Writes an admin kubeconfig for `server_url` (client certificate
    /// embedded) to `path`, readable by its owner only.
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), PkiError> {
        let cert = read(&self.dir.join("admin.crt"))?;
        let key = read(&self.dir.join("admin.key"))?;
        self.write_kubeconfig(path, server_url, "kybern-admin", &cert, &key)
    }

    /// Writes a kubeconfig for `server_url` whose user is `cn` in `groups`
    /// (a client certificate issued now, valid a year), readable by its
    /// owner only: the credentials of one component (the scheduler, a
    /// node agent, ...).
    pub fn write_client_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        cn: &str,
        groups: &[&str],
    ) -> Result<(), PkiError> {
        let (issuer, _) = load_or_make_ca(&self.dir)?;
        let (cert, key) = leaf(
            &issuer,
            cn,
            groups,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        self.write_kubeconfig(path, server_url, cn, &cert, &key)
    }

    fn write_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        user: &str,
        cert: &str,
        key: &str,
    ) -> Result<(), PkiError> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kybern\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\ncontexts:\n- name: kybern\n  context:\n    cluster: kybern\n    user: {user:?}\ncurrent-context: kybern\nusers:\n- name: {user:?}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_pem),
            b64(cert),
            b64(key)
        );
        write(path, &text, true)
    }
}

/// The names and addresses the serving certificate covers by default.
pub fn default_hosts(extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            hosts.push(h.to_owned());
        }
    }
    hosts.extend(extra.iter().cloned());
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_kept_until_due_and_reissued_for_new_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = Pki::ensure(dir.path(), &hosts).expect("pki");
        let v = Validity::of_pem(&first.server_cert_pem).expect("serving cert");
        assert!(v.covers(&hosts));
        assert!(!v.renewal_due(unix_now()));
        // Nothing due: the same files.
        let again = Pki::ensure(dir.path(), &hosts).expect("pki");
        assert_eq!(again.server_cert_pem, first.server_cert_pem);
        assert_eq!(again.node_client_cert_pem, first.node_client_cert_pem);
        // A name the certificate lacks: a new serving certificate, same CA.
        let more = vec!["localhost".to_owned(), "10.1.2.3".to_owned()];
        let wider = Pki::ensure(dir.path(), &more).expect("pki");
        assert_ne!(wider.server_cert_pem, first.server_cert_pem);
        assert_eq!(wider.ca_pem, first.ca_pem);
        assert!(
            Validity::of_pem(&wider.server_cert_pem)
                .expect("cert")
                .covers(&more)
        );
        // An unreadable one is replaced.
        std::fs::write(dir.path().join("admin.crt"), "garbage").expect("write");
        Pki::ensure(dir.path(), &more).expect("pki");
        let admin = std::fs::read_to_string(dir.path().join("admin.crt")).expect("admin");
        assert!(Validity::of_pem(&admin).is_some());
    }
}
