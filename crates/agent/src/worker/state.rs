//! What a pod's containers are doing, read back from the pod's directory (the
//! monitor's exit records and the agent's start marks), so a restarted agent
//! knows exactly what its predecessor started.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::runtime::monitor::ExitRecord;

/// Files of one pod on this node, under `DATA/pods/<uid>`.
#[derive(Debug, Clone)]
pub struct PodDir {
    /// The pod's directory.
    pub root: PathBuf,
    /// The pod's UID (container IDs start with it).
    pub uid: String,
}

impl PodDir {
    /// Namespace files of the pod's sandbox.
    pub fn ns(&self) -> PathBuf {
        self.root.join("ns")
    }
    /// Files bind-mounted into every container (`hosts`, `resolv.conf`, `hostname`).
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }
    /// The sandbox record: present once the sandbox is complete.
    pub fn sandbox_record(&self) -> PathBuf {
        self.root.join("sandbox.json")
    }
    /// A volume's directory.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }
    /// One run (attempt) of a container.
    pub fn attempt(&self, container: &str, attempt: u32) -> PathBuf {
        self.root
            .join("containers")
            .join(container)
            .join(attempt.to_string())
    }
    /// The CRI log of one run of a container (as kubelet's `/var/log/pods`).
    pub fn log(&self, container: &str, attempt: u32) -> PathBuf {
        self.root
            .join("logs")
            .join(container)
            .join(format!("{attempt}.log"))
    }
    /// The runtime's ID of one run of a container.
    pub fn container_id(&self, container: &str, attempt: u32) -> String {
        format!("{}-{container}-{attempt}", self.uid)
    }
    /// Attempts made of a container, in order.
    pub fn attempts(&self, container: &str) -> Vec<u32> {
        let mut out: Vec<u32> = std::fs::read_dir(self.root.join("containers").join(container))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort_unstable();
        out
    }
}

/// One run of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Started and not known to have ended.
    Running {
        /// When the agent started it.
        started_at: DateTime<Utc>,
    },
    /// Ended.
    Exited {
        /// When the agent started it.
        started_at: DateTime<Utc>,
        /// The monitor's record of its end.
        exit: ExitRecord,
        /// What it wrote to its termination message file.
        message: Option<String>,
    },
}

/// What is known of a container: its latest run and the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The latest attempt's number (the restart count) and run; `None` if
    /// the container never started.
    pub latest: Option<(u32, Run)>,
    /// The run before the latest, for `lastState`.
    pub previous: Option<Run>,
}

/// Marks an attempt as started by monitor `pid`.
pub fn mark_started(dir: &Path, pid: u32) -> std::io::Result<()> {
    std::fs::write(dir.join("monitor.pid"), pid.to_string())?;
    std::fs::write(dir.join("started"), Utc::now().to_rfc3339())
}

/// Reads one attempt; `monitor_alive` answers for a monitor's PID.
pub fn read_run(dir: &Path, monitor_alive: &dyn Fn(u32) -> bool) -> Option<Run> {
    let started_at = std::fs::read_to_string(dir.join("started"))
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())?
        .with_timezone(&Utc);
    let message = std::fs::read_to_string(dir.join("termination-log"))
        .ok()
        .filter(|m| !m.is_empty())
        .map(|m| m.chars().take(4096).collect());
    if let Some(exit) = std::fs::read(dir.join("exit"))
        .ok()
        .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
    {
        return Some(Run::Exited {
            started_at,
            exit,
            message,
        });
    }
    let pid = std::fs::read_to_string(dir.join("monitor.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    if pid.is_some_and(monitor_alive) {
        return Some(Run::Running { started_at });
    }
    // The monitor is gone without a record (killed, or the node rebooted).
    Some(Run::Exited {
        started_at,
        exit: ExitRecord {
            exit_code: 137,
            finished_at: Utc::now(),
            oom_killed: false,
        },
        message: Some("the container's monitor ended without recording an exit".into()),
    })
}

/// Whether process `pid` is a monitor of container `id`, whose attempt is
/// in `dir`: one started with the container's ID among its arguments, or a
/// standby monitor, which took the container on and works in its bundle.
pub fn monitor_of(pid: u32, id: &str, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    if args.clone().any(|arg| arg == id.as_bytes()) {
        return true;
    }
    args.any(|arg| arg == crate::runtime::standby::STANDBY_SUBCOMMAND.as_bytes())
        && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
}

/// The history of `container` in `pod`.
pub fn history(pod: &PodDir, container: &str) -> History {
    let attempts = pod.attempts(container);
    let read = |a: u32| {
        let id = pod.container_id(container, a);
        let dir = pod.attempt(container, a);
        read_run(&dir, &|pid| monitor_of(pid, &id, &dir))
    };
    let mut out = History::default();
    if let Some(&last) = attempts.last() {
        out.latest = read(last).map(|r| (last, r));
        if attempts.len() > 1 {
            out.previous = read(attempts[attempts.len() - 2]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_is_known_by_its_arguments_or_by_working_in_the_run() {
        let dir = tempfile::tempdir().expect("test setup");
        let attempt = dir.path().join("0");
        std::fs::create_dir_all(attempt.join("bundle")).expect("test setup");
        let other = dir.path().join("1");
        std::fs::create_dir_all(&other).expect("test setup");
        // Stand-ins: a shell whose `$0` is what the monitor's argument would be.
        let spawn = |arg0: &str, cwd: &Path| {
            let child = std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 5; true", arg0])
                .current_dir(cwd)
                .spawn()
                .expect("test setup");
            // spawn returns (vfork) before the kernel has set the new
            // program's arguments: until then its cmdline reads empty.
            let cmdline = format!("/proc/{}/cmdline", child.id());
            for _ in 0..500 {
                if std::fs::read(&cmdline)
                    .is_ok_and(|c| c.ends_with(format!("{arg0}\0").as_bytes()))
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            child
        };
        let mut by_id = spawn("pod-main-0", dir.path());
        let mut standby = spawn(
            crate::runtime::standby::STANDBY_SUBCOMMAND,
            &attempt.join("bundle"),
        );
        assert!(monitor_of(by_id.id(), "pod-main-0", &other));
        assert!(!monitor_of(by_id.id(), "pod-main-1", &other));
        assert!(monitor_of(standby.id(), "pod-main-0", &attempt));
        assert!(!monitor_of(standby.id(), "pod-main-1", &other));
        for child in [&mut by_id, &mut standby] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(!monitor_of(standby.id(), "pod-main-0", &attempt));
    }

    #[test]
    fn runs_are_read_back_from_their_files() {
        let dir = tempfile::tempdir().expect("test setup");
        let attempt = dir.path().join("0");
        std::fs::create_dir_all(&attempt).expect("test setup");
        assert_eq!(read_run(&attempt, &|_| true), None);
        mark_started(&attempt, 42).expect("test setup");
        assert!(matches!(
            read_run(&attempt, &|pid| pid == 42),
            Some(Run::Running { .. })
        ));
        // A dead monitor without a record counts as killed.
        match read_run(&attempt, &|_| false) {
            Some(Run::Exited { exit, .. }) => assert_eq!(exit.exit_code, 137),
            other => panic!("{other:?}"),
        }
        let record = ExitRecord {
            exit_code: 3,
            finished_at: Utc::now(),
            oom_killed: false,
        };
        std::fs::write(
            attempt.join("exit"),
            serde_json::to_vec(&record).expect("test setup"),
        )
        .expect("test setup");
        std::fs::write(attempt.join("termination-log"), "bye").expect("test setup");
        match read_run(&attempt, &|_| true) {
            Some(Run::Exited { exit, message, .. }) => {
                assert_eq!(exit.exit_code, 3);
                assert_eq!(message.as_deref(), Some("bye"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn history_has_the_latest_and_previous_runs() {
        let dir = tempfile::tempdir().expect("test setup");
        let pod = PodDir {
            root: dir.path().into(),
            uid: "u".into(),
        };
        assert_eq!(history(&pod, "app"), History::default());
        for a in [0, 1, 2] {
            let d = pod.attempt("app", a);
            std::fs::create_dir_all(&d).expect("test setup");
            mark_started(&d, u32::MAX).expect("test setup");
        }
        let h = history(&pod, "app");
        assert_eq!(h.latest.as_ref().map(|l| l.0), Some(2));
        assert!(h.previous.is_some());
        assert_eq!(pod.container_id("app", 2), "u-app-2");
    }
}
