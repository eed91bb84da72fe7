//! The cluster's certificates: a CA made at first start (rcgen), the API
//! server's serving certificate, and the admin's client certificate with an
//! admin kubeconfig, all kept under `<data-dir>/pki`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
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

impl Pki {
    /// Loads the PKI under `dir`, making what is missing: the CA, a serving
    /// certificate for `hosts` (names and IPs), and an admin client certificate.
    pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (issuer, ca_pem) = load_or_make_ca(dir)?;
        let (srv_crt, srv_key) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
        if !(srv_crt.exists() && srv_key.exists()) {
            let mut sans = Vec::new();
            for h in hosts {
                match h.parse::<IpAddr>() {
                    Ok(ip) => sans.push(SanType::IpAddress(ip)),
                    Err(_) => sans.push(SanType::DnsName(h.as_str().try_into()?)),
                }
            }
            let (cert, key) = leaf(
                &issuer,
                "kybern-apiserver",
                &[],
                sans,
                ExtendedKeyUsagePurpose::ServerAuth,
            )?;
            write(&srv_key, &key, true)?;
            write(&srv_crt, &cert, false)?;
        }
        let (adm_crt, adm_key) = (dir.join("admin.crt"), dir.join("admin.key"));
        if !(adm_crt.exists() && adm_key.exists()) {
            let (cert, key) = leaf(
                &issuer,
                "kybern-admin",
                &["system:masters"],
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
            write(&adm_key, &key, true)?;
            write(&adm_crt, &cert, false)?;
        }
        // Upstream's name for it: the API server as a client of kubelets.
        let (node_crt, node_key) = (
            dir.join("apiserver-kubelet-client.crt"),
            dir.join("apiserver-kubelet-client.key"),
        );
        if !(node_crt.exists() && node_key.exists()) {
            let (cert, key) = leaf(
                &issuer,
                KUBELET_CLIENT_USER,
                &[],
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
            write(&node_key, &key, true)?;
            write(&node_crt, &cert, false)?;
        }
        Ok(Pki {
            node_client_cert_pem: read(&node_crt)?,
            node_client_key_pem: read(&node_key)?,
            dir: dir.to_owned(),
            ca_pem,
            server_cert_pem: read(&srv_crt)?,
            server_key_pem: read(&srv_key)?,
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
