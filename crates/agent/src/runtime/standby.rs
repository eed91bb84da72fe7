//! Container monitors started ahead of need: one `kybern monitor-standby`
//! process waits for its container's [`MonitorSpec`] on its input, so that a
//! container's start does not wait for a process of this binary's size to
//! start (~4 ms idle, about twice that while a pod's CNI plugins run beside
//! it). Each start hands its spec to the waiting monitor and starts the next.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::monitor::MonitorSpec;
use crate::AgentError;

/// The longest a new standby waits for the container before it to start.
const REFILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long after the container before it runs a new standby starts: the
/// agent then writes that container's status, which would wait for the CPU.
const REFILL_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The subcommand of this binary that waits for a spec on its input.
pub const STANDBY_SUBCOMMAND: &str = "monitor-standby";

/// At most one monitor waiting for a container, started from `exe`.
#[derive(Debug)]
pub struct StandbyMonitors {
    exe: PathBuf,
    waiting: Mutex<Option<Child>>,
}

impl StandbyMonitors {
    /// Monitors run as `exe monitor-standby` (this `kybern`); none is
    /// started before the first container.
    pub fn new(exe: PathBuf) -> Self {
        StandbyMonitors {
            exe,
            waiting: Mutex::new(None),
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        Command::new(&self.exe)
            .arg(STANDBY_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C or SIGKILL aimed at the agent's
            // group leaves the containers running.
            .process_group(0)
            .spawn()
    }

    fn take_waiting(&self) -> Option<Child> {
        self.waiting.lock().ok()?.take()
    }

    /// Starts a monitor for `spec` (the waiting one, or a new one if none
    /// waits or it has gone); a little after that container runs, or has
    /// ended, or a few seconds passed, starts one to wait for the next, so
    /// that starting it does not take CPU from the container before or
    /// from the writing of its status. Returns the monitor's process ID.
    pub async fn start(self: &Arc<Self>, spec: &MonitorSpec) -> Result<u32, AgentError> {
        let json = serde_json::to_vec(spec)
            .map_err(|e| AgentError::Runtime(format!("monitor spec: {e}")))?;
        // A standby that ended while it waited (killed by hand, say) is
        // passed over, as is one that cannot take the spec.
        let waiting = self
            .take_waiting()
            .and_then(|mut child| matches!(child.try_wait(), Ok(None)).then_some(child));
        let handed = match waiting {
            Some(mut child) => hand_over(&mut child, &json).await.ok(),
            None => None,
        };
        let pid = match handed {
            Some(pid) => pid,
            None => hand_over(&mut self.spawn()?, &json).await?,
        };
        let monitors = self.clone();
        let (pid_file, exit_file) = (spec.pid_file.clone(), spec.exit_file.clone());
        tokio::spawn(async move {
            super::run_or_exit_marked(&pid_file, &exit_file, REFILL_WAIT).await;
            // And the agent has written the container's status.
            tokio::time::sleep(REFILL_SETTLE).await;
            monitors.refill();
        });
        Ok(pid)
    }

    /// Starts a monitor to wait for the next container, unless one waits.
    fn refill(&self) {
        let Ok(mut waiting) = self.waiting.lock() else {
            return;
        };
        if waiting.is_some() {
            return;
        }
        match self.spawn() {
            Ok(child) => *waiting = Some(child),
            // The next start spawns its own and reports the error then.
            Err(e) => tracing::debug!(error = %e, "starting a standby monitor"),
        }
    }
}

/// Gives `child` its spec and lets it go (tokio reaps it when it ends).
async fn hand_over(child: &mut Child, json: &[u8]) -> Result<u32, AgentError> {
    let pid = child
        .id()
        .ok_or_else(|| AgentError::Runtime("monitor exited at once".into()))?;
    let mut input = child
        .stdin
        .take()
        .ok_or_else(|| AgentError::Runtime("monitor without input".into()))?;
    // A few hundred bytes: the pipe takes them whole, so this never waits
    // for the monitor. Closing the input ends the spec.
    input.write_all(json).await?;
    drop(input);
    Ok(pid)
}

/// The standby side: reads a spec from `input` to its end. `None` when the
/// input closed without one (the agent went away before needing it).
///
/// The caller then works in the spec's bundle: a restarted agent knows a
/// standby monitor as its container's by that (its arguments do not name
/// the container, as those of `kybern monitor` do).
pub fn read_spec(mut input: impl std::io::Read) -> Result<Option<MonitorSpec>, AgentError> {
    let mut json = Vec::new();
    input.read_to_end(&mut json)?;
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| AgentError::Runtime(format!("monitor spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::log_file::LogPolicy;

    fn spec() -> MonitorSpec {
        MonitorSpec {
            runtime: "/usr/sbin/runc".into(),
            root: "/var/lib/kybern/agent/runc".into(),
            bundle: "/b".into(),
            id: "pod-c-0".into(),
            log: "/l".into(),
            exit_file: "/e".into(),
            pid_file: "/p".into(),
            log_policy: LogPolicy::default(),
            stdin_fifo: Some("/f".into()),
            stdin_once: true,
            tty: false,
        }
    }

    #[test]
    fn a_spec_survives_the_hand_over_and_an_empty_input_is_none() {
        let json = serde_json::to_vec(&spec()).expect("test setup");
        let read = read_spec(json.as_slice()).expect("a spec");
        assert_eq!(read, Some(spec()));
        assert_eq!(read_spec(&b""[..]).expect("no spec"), None);
        assert!(read_spec(&b"{\"runtime\":"[..]).is_err());
    }

    #[tokio::test]
    async fn a_start_uses_the_waiting_monitor_and_another_waits_once_it_runs() {
        // `xargs` stands in for the monitor: it reads its input to its end
        // (then fails to run a `monitor-standby` command, which is no matter).
        let monitors = Arc::new(StandbyMonitors::new("/usr/bin/xargs".into()));
        let waiting =
            |m: &StandbyMonitors| m.waiting.lock().expect("lock").as_ref().and_then(Child::id);
        monitors.refill();
        let first = waiting(&monitors);
        let dir = tempfile::tempdir().expect("test setup");
        let spec = MonitorSpec {
            pid_file: dir.path().join("pid"),
            exit_file: dir.path().join("exit"),
            ..spec()
        };
        let pid = monitors.start(&spec).await.expect("started");
        assert_eq!(Some(pid), first, "the waiting monitor took the spec");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            waiting(&monitors),
            None,
            "none waits before the container runs"
        );
        std::fs::write(&spec.pid_file, "1").expect("test setup");
        let mut next = None;
        for _ in 0..200 {
            next = waiting(&monitors);
            if next.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(next.is_some_and(|n| n != pid), "another waits once it runs");
    }
}
