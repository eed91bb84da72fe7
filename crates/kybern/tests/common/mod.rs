//! Starts the real `kybern server` binary for integration tests and gives clients for it.

#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod node;
pub mod pods;
pub mod registry;
pub mod sim;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .env("KYBERN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kybern server");
        let server = Server {
            child,
            url: format!("https://127.0.0.1:{port}"),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if server.kubeconfig().exists()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kybern server did not become ready: {}", server.log());
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
