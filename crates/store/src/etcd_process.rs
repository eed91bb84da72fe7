//! Starts a real, single-member etcd server (Debian's `etcd-server` package) on
//! loopback in a temporary directory, for tests and benchmarks. Not a stand-in:
//! the process is etcd itself, stopped and removed when the handle drops.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd server, killed when dropped.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Child,
    /// The client URL, e.g. `http://127.0.0.1:23790`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// Why etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdProcessError {
    /// The `etcd` binary is missing.
    #[error("etcd binary not found at {0} (install Debian's etcd-server)")]
    NotInstalled(PathBuf),
    /// Spawning or preparing failed.
    #[error("cannot start etcd: {0}")]
    Io(#[from] std::io::Error),
    /// It started but never became healthy.
    #[error("etcd did not become ready within {0:?}")]
    NotReady(Duration),
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary: `$KYBERN_ETCD_BIN`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("KYBERN_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

impl EtcdProcess {
    /// Starts etcd and waits until it answers on its client port. The ports
    /// are picked free but may be taken by another process before etcd binds
    /// them (tests start several at once), so that case is retried on others.
    pub fn start() -> Result<Self, EtcdProcessError> {
        let mut tries = 0;
        loop {
            match Self::start_once() {
                Err(EtcdProcessError::Io(e))
                    if tries < 5 && e.to_string().contains("address already in use") =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once() -> Result<Self, EtcdProcessError> {
        let bin = etcd_binary();
        if !bin.exists() {
            return Err(EtcdProcessError::NotInstalled(bin));
        }
        let dir = tempfile::Builder::new().prefix("kybern-etcd-").tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(&bin)
            .arg("--name=kybern-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=kybern-test={peer_url}"))
            // Room for a 1.5 MiB value plus the request around it.
            .arg("--max-request-bytes=2097152")
            .arg("--quota-backend-bytes=8589934592")
            .arg("--log-level=warn")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut process = EtcdProcess {
            child,
            endpoint,
            _dir: dir,
        };
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.child.try_wait() {
                return Err(EtcdProcessError::Io(std::io::Error::other(format!(
                    "etcd exited early: {}",
                    process.log()
                ))));
            }
            if healthy(client) {
                return Ok(process);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EtcdProcessError::NotReady(timeout))
    }

    /// What etcd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("etcd.log")).unwrap_or_default()
    }
}

/// Whether etcd answers `GET /health` with `"health":"true"`: it has a leader
/// and serves requests (an open port alone is not enough; early requests get reset).
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
