//! Container runtimes: the [`ContainerRuntime`] seam the pod workers call,
//! [`Runc`], which runs each container under a `kybern monitor` process, and
//! the handlers that RuntimeClasses name.

pub mod bundle;
pub mod cpu_class;
pub mod gate;
pub mod handlers;
pub mod log_file;
pub mod monitor;
pub mod oom;
pub mod standby;
pub mod stdio;

use std::path::PathBuf;

use async_trait::async_trait;

use crate::AgentError;

/// Where a container's files are: its bundle, log and exit record.
#[derive(Debug, Clone)]
pub struct ContainerFiles {
    /// The OCI bundle (`config.json`, `rootfs/`).
    pub bundle: PathBuf,
    /// The CRI-format log.
    pub log: PathBuf,
    /// The exit record the monitor writes.
    pub exit_file: PathBuf,
    /// Where the runtime writes the container's process ID once it runs.
    pub pid_file: PathBuf,
    /// The named pipe through which attached clients reach the container's
    /// standard input, if it has one.
    pub stdin_fifo: Option<PathBuf>,
    /// The container's input closes when the first attached client leaves.
    pub stdin_once: bool,
    /// The container runs on a terminal.
    pub tty: bool,
}

impl ContainerFiles {
    /// Waits until the container runs, or has ended, or `timeout` passes.
    /// The runtime writes the pid file once the container's process has
    /// been released to run its command (`runc run` creates, starts, then
    /// writes it), and the monitor writes the exit file if it never gets
    /// that far: two stat calls a poll, where asking `runc state` would
    /// cost a process each time.
    pub async fn started(&self, timeout: std::time::Duration) {
        if !run_or_exit_marked(&self.pid_file, &self.exit_file, timeout).await {
            tracing::warn!(bundle = %self.bundle.display(), "container not running after {timeout:?}");
        }
    }
}

/// Waits until the runtime's `pid_file` or the monitor's `exit_file` exists;
/// `false` if neither does within `timeout`.
async fn run_or_exit_marked(
    pid_file: &std::path::Path,
    exit_file: &std::path::Path,
    timeout: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !pid_file.exists() && !exit_file.exists() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    true
}

/// What the node agent asks of an OCI runtime (one per RuntimeClass handler).
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Starts the container under a monitor that outlives the agent; returns
    /// the monitor's process ID ([`ContainerFiles::started`] says when the
    /// container runs).
    async fn start(&self, id: &str, files: &ContainerFiles) -> Result<u32, AgentError>;
    /// Whether the runtime knows the container and it is running.
    async fn is_running(&self, id: &str) -> Result<bool, AgentError>;
    /// Sends a signal (`TERM`, `KILL`) to the container's init process.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), AgentError>;
    /// Forgets the container, killing it if it still runs.
    async fn delete(&self, id: &str) -> Result<(), AgentError>;
    /// IDs of every container the runtime knows.
    async fn list(&self) -> Result<Vec<String>, AgentError>;
    /// Runs `command` in the container (an exec probe or hook) and returns
    /// its exit code and output; the process is killed after `timeout`.
    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecResult, AgentError>;
    /// The command that runs `command` in the container in the foreground,
    /// on a terminal when `tty` (its stdio must then be a terminal), for
    /// `kubectl exec`; its exit code is the process's. The process's host
    /// pid is written to `pid_file`, when given, once it runs.
    fn exec_command(
        &self,
        id: &str,
        command: &[String],
        tty: bool,
        pid_file: Option<&std::path::Path>,
    ) -> tokio::process::Command;
}

/// What a command run in a container left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Its exit code (128 + the signal when killed).
    pub code: i32,
    /// Its standard output then its standard error, each cut at
    /// [`EXEC_OUTPUT_LIMIT`] bytes, as text.
    pub output: String,
}

/// How much of each stream of an exec is kept (the kubelet keeps 10 KiB).
pub const EXEC_OUTPUT_LIMIT: usize = 10 * 1024;

/// Reads `r` to its end, keeping at most [`EXEC_OUTPUT_LIMIT`] bytes, so a
/// chatty probe command costs no more memory than a quiet one.
async fn bounded_output(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut r) = r else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// runc, with its state under the agent's data directory.
#[derive(Debug, Clone)]
pub struct Runc {
    /// The `runc` binary.
    pub binary: PathBuf,
    /// `runc --root`: its state directory.
    pub root: PathBuf,
    /// Container monitors (this `kybern`), one started ahead of need.
    pub monitors: std::sync::Arc<standby::StandbyMonitors>,
    /// When containers' logs rotate.
    pub log_policy: log_file::LogPolicy,
}

impl Runc {
    async fn output(&self, args: &[&str]) -> Result<std::process::Output, AgentError> {
        Ok(tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .await?)
    }
}

fn failed(what: &str, out: &std::process::Output) -> AgentError {
    AgentError::Runtime(format!(
        "runc {what}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

#[async_trait]
impl ContainerRuntime for Runc {
    async fn start(&self, id: &str, files: &ContainerFiles) -> Result<u32, AgentError> {
        let spec = monitor::MonitorSpec {
            runtime: self.binary.clone(),
            root: self.root.clone(),
            bundle: files.bundle.clone(),
            id: id.to_owned(),
            log: files.log.clone(),
            exit_file: files.exit_file.clone(),
            pid_file: files.pid_file.clone(),
            log_policy: self.log_policy,
            stdin_fifo: files.stdin_fifo.clone(),
            stdin_once: files.stdin_once,
            tty: files.tty,
        };
        self.monitors.start(&spec).await
    }

    async fn is_running(&self, id: &str) -> Result<bool, AgentError> {
        let out = self.output(&["state", id]).await?;
        if !out.status.success() {
            return Ok(false);
        }
        let state: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| AgentError::Runtime(format!("runc state {id}: {e}")))?;
        Ok(matches!(
            state["status"].as_str(),
            Some("running" | "created" | "paused")
        ))
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), AgentError> {
        let out = self.output(&["kill", id, signal]).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Gone already, or not running any more: the goal is met.
        if out.status.success()
            || stderr.contains("does not exist")
            || stderr.contains("not running")
        {
            return Ok(());
        }
        Err(failed("kill", &out))
    }

    async fn delete(&self, id: &str) -> Result<(), AgentError> {
        let out = self.output(&["delete", "--force", id]).await?;
        if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("does not exist") {
            return Ok(());
        }
        Err(failed("delete", &out))
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecResult, AgentError> {
        if command.is_empty() {
            return Err(AgentError::Runtime("exec of an empty command".into()));
        }
        let mut child = tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(["exec", id])
            .args(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let (status, out, err) =
                tokio::join!(child.wait(), bounded_output(stdout), bounded_output(stderr));
            (status, out, err)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok((status, mut out, err)) => {
                out.extend_from_slice(&err);
                Ok(ExecResult {
                    code: status?.code().unwrap_or(137),
                    output: String::from_utf8_lossy(&out).into_owned(),
                })
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(AgentError::Runtime(format!(
                    "command {:?} timed out",
                    command.join(" ")
                )))
            }
        }
    }

    fn exec_command(
        &self,
        id: &str,
        command: &[String],
        tty: bool,
        pid_file: Option<&std::path::Path>,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).arg("exec");
        if tty {
            cmd.arg("--tty");
        }
        if let Some(path) = pid_file {
            cmd.arg("--pid-file").arg(path);
        }
        cmd.arg(id).args(command).kill_on_drop(true);
        cmd
    }

    async fn list(&self) -> Result<Vec<String>, AgentError> {
        let out = self.output(&["list", "--format", "json"]).await?;
        if !out.status.success() {
            return Err(failed("list", &out));
        }
        let list: Option<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout)
            .map_err(|e| AgentError::Runtime(format!("runc list: {e}")))?;
        Ok(list
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect())
    }
}
