//! Container monitors started ahead of need: one `kybern monitor-standby`
//! process waits for its container's [`MonitorSpec`] on its input, so that a
//! container's start does not wait for a process of this binary's size to
//! start (~4 ms idle, about twice that while a pod's CNI plugins run beside
//! it). Each start hands its spec to the waiting monitor and starts the next
//! at once, in the idle CPU class so that its loading takes no CPU from the
//! container just handed over, nor from the writing of its status.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::cpu_class::{self, CpuClass};
use super::monitor::MonitorSpec;
use crate::AgentError;

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
    /// waits or it has gone), then one to wait for the next. Returns the
    /// monitor's process ID.
    pub async fn start(self: &Arc<Self>, spec: &MonitorSpec) -> Result<u32, AgentError> {
        let json = serde_json::to_vec(spec)
            .map_err(|e| AgentError::Runtime(format!("monitor spec: {e}")))?;
        // A standby that ended while it waited (killed by hand, say) is
        // passed over, as is one that cannot take the spec.
        let waiting = self
            .take_waiting()
            .and_then(|mut child| matches!(child.try_wait(), Ok(None)).then_some(child));
        let handed = match waiting {
            Some(mut child) => {
                // Its container starts now: it may still be loading, and
                // must not wait for idle CPU to finish.
                if let Some(pid) = child.id()
                    && let Err(e) = cpu_class::set(pid, CpuClass::Normal)
                {
                    tracing::debug!(error = %e, pid, "raising a standby monitor");
                }
                hand_over(&mut child, &json).await.ok()
            }
            None => None,
        };
        let pid = match handed {
            Some(pid) => pid,
            None => hand_over(&mut self.spawn()?, &json).await?,
        };
        self.refill();
        Ok(pid)
    }

    /// Starts a monitor to wait for the next container, unless one waits.
    /// It loads in the idle class: only CPU time that nothing else wants.
    fn refill(&self) {
        let Ok(mut waiting) = self.waiting.lock() else {
            return;
        };
        if waiting.is_some() {
            return;
        }
        match self.spawn() {
            Ok(child) => {
                if let Some(pid) = child.id()
                    && let Err(e) = cpu_class::set(pid, CpuClass::Idle)
                {
                    tracing::debug!(error = %e, pid, "lowering a standby monitor");
                }
                *waiting = Some(child);
            }
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
    async fn a_start_uses_the_waiting_monitor_and_another_waits_at_once_in_the_idle_class() {
        // `xargs` stands in for the monitor: it reads its input to its end
        // (then fails to run a `monitor-standby` command, which is no matter).
        let monitors = Arc::new(StandbyMonitors::new("/usr/bin/xargs".into()));
        let waiting =
            |m: &StandbyMonitors| m.waiting.lock().expect("lock").as_ref().and_then(Child::id);
        monitors.refill();
        let first = waiting(&monitors);
        assert!(first.is_some(), "refill starts one");
        let pid = monitors.start(&spec()).await.expect("started");
        assert_eq!(Some(pid), first, "the waiting monitor took the spec");
        let next = waiting(&monitors).expect("another waits");
        assert_ne!(next, pid);
        assert_eq!(
            cpu_class::get(next).expect("class"),
            Some(CpuClass::Idle),
            "the next one loads on idle CPU"
        );
        // A second start takes that one, with nothing waiting for it to load.
        let second = monitors.start(&spec()).await.expect("started");
        assert_eq!(second, next);
        assert_ne!(waiting(&monitors), Some(next));
    }
}
