//! Starts the real `kybern server` binary for integration tests and gives clients for it.

#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod node;
pub mod pods;
pub mod probe_targets;
pub mod registry;
pub mod sim;
pub mod webhook;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A TCP port for a test's listener. It comes from below the kernel's
/// ephemeral range, so no outgoing connection can take it between this
/// check and the listener's bind (a port the kernel hands out for `:0` can),
/// and a per-binary counter keeps the tests running side by side apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Test binaries run one after another; the pid spreads them anyway.
    let seed = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (seed + n) % SPAN) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Starts `kybern server` on `port` and `dir`, logging (appending) to
/// `dir/server.log`.
fn spawn_server(dir: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .env(
            "KYBERN_LOG",
            std::env::var("KYBERN_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kybern server")
}

/// A running `kybern server` on a loopback port with a temporary data dir.
pub struct Server {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The port.
    pub port: u16,
    /// The data directory.
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server and waits until `/readyz` answers over TLS and the
    /// admin kubeconfig is written.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the server with extra arguments, without the controller
    /// manager: these tests look at the API server's own behaviour (a
    /// deletion finalizer stays until someone clears it, a namespace holds
    /// only what the test put in it).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut args = vec!["--disable-controllers"];
        args.extend_from_slice(extra);
        Self::start_cluster(&args)
    }

    /// Starts the server as users run it, controllers included.
    pub fn start_cluster(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut server = Server {
            child: spawn_server(dir.path(), port, extra),
            url: format!("https://127.0.0.1:{port}"),
            port,
            dir,
        };
        server.wait_ready();
        server
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and
    /// data directory, without the controller manager, with `extra`.
    pub fn restart_with(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut args = vec!["--disable-controllers"];
        args.extend_from_slice(extra);
        self.child = spawn_server(self.dir.path(), self.port, &args);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kybern server exited ({status}): {}", self.log());
            }
            if self.kubeconfig().exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kybern server did not become ready: {}", self.log());
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// A kube-rs client for the server, as the admin.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kubeconfig");
        // Tests look at 429s themselves instead of waiting out kube-rs's backoff.
        config.default_retry = false;
        kube::Client::try_from(config).expect("client")
    }
}

/// kube-rs against the server of `kubeconfig`, as the holder of `token`.
pub async fn client_with_token(kubeconfig: &std::path::Path, token: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).expect("client")
}

/// A client certificate and key for `user` in `groups`, signed by openssl
/// with the CA under `data_dir/pki` (as an administrator would issue one).
pub fn user_certificate(
    data_dir: &std::path::Path,
    user: &str,
    groups: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let tag = user.replace(':', "_");
    let (key, csr, crt, ext) = (
        data_dir.join(format!("{tag}.key")),
        data_dir.join(format!("{tag}.csr")),
        data_dir.join(format!("{tag}.crt")),
        data_dir.join("client.ext"),
    );
    let subject: String = std::iter::once(format!("/CN={user}"))
        .chain(groups.iter().map(|g| format!("/O={g}")))
        .collect();
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("extensions file");
    let pki = data_dir.join("pki");
    let (ca_crt, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    let steps: [Vec<&std::ffi::OsStr>; 2] = [
        vec![
            "req".as_ref(),
            "-new".as_ref(),
            "-newkey".as_ref(),
            "ec".as_ref(),
            "-pkeyopt".as_ref(),
            "ec_paramgen_curve:prime256v1".as_ref(),
            "-nodes".as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-subj".as_ref(),
            subject.as_ref(),
            "-out".as_ref(),
            csr.as_os_str(),
        ],
        vec![
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca_crt.as_os_str(),
            "-CAkey".as_ref(),
            ca_key.as_os_str(),
            "-CAcreateserial".as_ref(),
            "-days".as_ref(),
            "1".as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            crt.as_os_str(),
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (crt, key)
}

/// A certificate for `cn` in `orgs` (with `sans`, for serving or client
/// use) signed by the cluster CA under `dir/pki`,
/// 300 days into its 310-day life (due for renewal), and its key (PEM).
pub fn nearly_expired_certificate(
    dir: &std::path::Path,
    cn: &str,
    orgs: &[&str],
    sans: &[&str],
    server: bool,
) -> (String, String) {
    let ca = std::fs::read_to_string(dir.join("pki/ca.crt")).expect("ca.crt");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("pki/ca.key")).expect("ca.key"))
            .expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("params");
    for o in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86400);
    params.not_before = (now - 300 * day).into();
    params.not_after = (now + 10 * day).into();
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let path = self.dir.path().join("server.log");
            let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("server-{}.log", self.port));
            let _ = std::fs::copy(&path, &keep);
            eprintln!("kybern server log kept in {}", keep.display());
            print_tail(
                "kybern server",
                &std::fs::read_to_string(&path).unwrap_or_default(),
            );
        }
    }
}

/// Prints the end of a component's log to stderr, where a failed test's
/// output (and CI's record of it) shows why the component stopped.
pub fn print_tail(what: &str, log: &str) {
    const LINES: usize = 40;
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LINES)..];
    eprintln!("--- the last {} lines of the {what} log ---", tail.len());
    for line in tail {
        eprintln!("{line}");
    }
    eprintln!("--- end of the {what} log ---");
}

/// Polls `check` every 100 ms until it returns a value; fails the test
/// after 60 s (a liveness bound, not a timing assertion).
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for an Event with `reason` about the `kind` named `name` in
/// `namespace` whose message contains `message` (found through the field
/// selector `kubectl describe` uses); returns it.
pub async fn wait_for_event(
    client: &kube::Client,
    namespace: &str,
    (kind, name): (&str, &str),
    reason: &str,
    message: &str,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::Event;
    let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let what = format!("a {reason} Event about {kind} {name} saying {message:?}");
    wait_for(&what, async || {
        let list = api
            .list(&kube::api::ListParams::default().fields(&fields))
            .await
            .ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.message.as_deref().is_some_and(|m| m.contains(message))
        })
    })
    .await
}

/// The value of the sample `line` (a metric's name and labels, as printed)
/// in Prometheus text `metrics`.
pub fn metric_sample(metrics: &str, line: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

/// TLS client settings that trust the cluster CA under `pki` and present the
/// admin certificate, offering no ALPN protocol.
pub fn admin_tls_config(pki: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
        roots.add(ca?)?;
    }
    let certs =
        CertificateDer::pem_file_iter(pki.join("admin.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?)
}
