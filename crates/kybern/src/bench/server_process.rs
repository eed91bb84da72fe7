//! A `kybern server` child process for benchmarks, so that its RSS is its
//! own, and the `/proc` figures read about it.

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

/// A `/proc/PID/status` figure in bytes (`VmRSS`, `RssAnon`, `RssFile`).
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// A `kybern server` child process, killed on drop.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its HTTPS port on loopback.
    pub port: u16,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kybern server` (this binary) on loopback with its own data dir and
/// `extra` arguments, and returns it with a client from its admin kubeconfig.
pub async fn start_server(
    dir: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(ServerProcess, kube::Client)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let data = dir.join("server");
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning kybern server")?;
    let server = ServerProcess { child, port };
    let kubeconfig = data.join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(kubeconfig.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        anyhow::ensure!(Instant::now() < deadline, "kybern server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok((server, kube::Client::try_from(config)?))
}

pub async fn create_ns(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns = Namespace {
        metadata: kube::core::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}
