//! The container monitor (conmon's role): a small process per container that
//! starts it with the OCI runtime, writes its output to its log in the CRI
//! format, holds its input and terminal, and records its exit code. It outlives the agent,
//! so containers, their logs and their exit codes survive an agent restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::log_file::RotatingLog;
use super::oom::MemoryCgroup;
use super::stdio::{ConsoleSocket, StdinDoor, copy_output};
use crate::AgentError;

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long runc may take to hand over a container's terminal.
const CONSOLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the monitor needs to run one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorSpec {
    /// The OCI runtime binary (`runc`).
    pub runtime: PathBuf,
    /// The runtime's state directory (`runc --root`).
    pub root: PathBuf,
    /// The container's OCI bundle.
    pub bundle: PathBuf,
    /// The container ID.
    pub id: String,
    /// The CRI-format log file to append to.
    pub log: PathBuf,
    /// Where to record the exit.
    pub exit_file: PathBuf,
    /// Where the runtime writes the container's process ID once it runs.
    pub pid_file: PathBuf,
    /// When the log rotates.
    pub log_policy: super::log_file::LogPolicy,
    /// A named pipe to create, through which attached clients write to the
    /// container's standard input (containers with `stdin: true`).
    pub stdin_fifo: Option<PathBuf>,
    /// Close the container's input when the first attached client leaves
    /// (`stdinOnce`; not for a terminal, as in containerd).
    pub stdin_once: bool,
    /// The container runs on a terminal (`tty: true`).
    pub tty: bool,
}

/// How a container ended, as the monitor recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// The exit code (128 + signal number for a container killed by a signal).
    pub exit_code: i32,
    /// When the monitor saw it end.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// The kernel's OOM killer ended it (runc reported an `oom` event).
    #[serde(default)]
    pub oom_killed: bool,
}

/// Runs the container to its end. Returns its exit code after recording it.
///
/// `runc run --detach` creates and starts the container and leaves; its
/// process, orphaned, comes to the monitor as the subreaper, which waits
/// for it, reads the cgroup's OOM-kill count and then has runc delete the
/// container. No runtime process stays behind per container.
pub fn run(spec: &MonitorSpec) -> Result<i32, AgentError> {
    let log = RotatingLog::open(&spec.log, spec.log_policy)?;
    let log = Arc::new(Mutex::new(log));
    let door = match &spec.stdin_fifo {
        Some(fifo) => Some(StdinDoor::create(fifo, spec.stdin_once && !spec.tty)?),
        None => None,
    };
    // A terminal's controlling side comes from runc; without one, the
    // container reads a pipe whose writing end only the monitor holds.
    let console = spec.tty.then(ConsoleSocket::bind).transpose()?;
    let (stdin, input) = match (&door, &console) {
        (Some(_), None) => {
            let (read, write) = std::io::pipe()?;
            (Stdio::from(read), Some(write))
        }
        _ => (Stdio::null(), None),
    };
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| AgentError::Io(e.into()))?;
    let runtime = |verb: &str| {
        let mut c = Command::new(&spec.runtime);
        c.arg("--root").arg(&spec.root).arg(verb);
        c
    };
    let mut run = runtime("run");
    run.arg("--detach")
        .arg("--bundle")
        .arg(&spec.bundle)
        .arg("--pid-file")
        .arg(&spec.pid_file);
    if let Some(console) = &console {
        run.arg("--console-socket").arg(console.path());
    }
    // The container inherits these pipes (unless it has a terminal): its
    // output reaches the log directly, and runc's own complaints land there
    // too.
    let mut child = run
        .arg(&spec.id)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The container's end of its input is the container's alone.
    drop(run);
    let mut copiers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let log = log.clone();
        copiers.push(std::thread::spawn(move || copy_output(out, "stdout", &log)));
    }
    if let Some(err) = child.stderr.take() {
        let log = log.clone();
        copiers.push(std::thread::spawn(move || copy_output(err, "stderr", &log)));
    }
    if let (Some(door), Some(input)) = (door.clone(), input) {
        door.serve(input);
    }
    let started = child.wait()?;
    if let Some(console) = console.filter(|_| started.success()) {
        match console.receive(CONSOLE_TIMEOUT) {
            Ok(terminal) => {
                let output = std::fs::File::from(terminal);
                if let Some(door) = door {
                    door.serve(output.try_clone()?);
                }
                let log = log.clone();
                copiers.push(std::thread::spawn(move || {
                    copy_output(output, "stdout", &log)
                }));
            }
            Err(e) => {
                let line = format!("kybern monitor: {e}");
                if let Ok(mut f) = log.lock() {
                    let _ = f.write(&super::stdio::cri_lines(
                        chrono::Utc::now(),
                        "stderr",
                        line.as_bytes(),
                        true,
                    ));
                }
            }
        }
    }
    let exit_code = if started.success() {
        match read_pid(&spec.pid_file) {
            Some(pid) => wait_for(pid),
            None => 255,
        }
    } else {
        status_code(started)
    };
    let cgroup = super::oom::bundle_cgroup(&spec.bundle)
        .map(|path| MemoryCgroup::locate(Path::new(CGROUP_ROOT), &path));
    let oom_killed = cgroup.and_then(|c| c.oom_kills()).unwrap_or(0) > 0;
    // Its processes are gone: remove its cgroup and runc's record of it.
    let _ = runtime("delete")
        .arg("--force")
        .arg(&spec.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    for c in copiers {
        let _ = c.join();
    }
    let record = ExitRecord {
        exit_code,
        finished_at: chrono::Utc::now(),
        oom_killed,
    };
    let tmp = spec.exit_file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record).unwrap_or_default())?;
    std::fs::rename(&tmp, &spec.exit_file)?;
    Ok(exit_code)
}

/// An exit status as a container exit code: 128 + the signal that killed it.
fn status_code(status: std::process::ExitStatus) -> i32 {
    match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits for the container's process, the monitor's child by adoption, and
/// returns its exit code. Only that process is waited for: the monitor may
/// live inside a process (a test) whose other children are not its own.
fn wait_for(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                // Not ours after all (it was gone, or has another parent):
                // wait for it to end, without its exit code.
                while nix::sys::signal::kill(pid, None).is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                return 255;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor spec whose runtime is the shell `script`, all files in `dir`.
    fn fake_runtime(dir: &std::path::Path, script: &str) -> MonitorSpec {
        let runtime = dir.join("fake-runtime");
        std::fs::write(&runtime, script).expect("test setup");
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("test setup");
        MonitorSpec {
            runtime,
            root: dir.into(),
            bundle: dir.into(),
            id: "c".into(),
            log: dir.join("0.log"),
            exit_file: dir.join("exit"),
            pid_file: dir.join("pid"),
            log_policy: Default::default(),
            stdin_fifo: None,
            stdin_once: false,
            tty: false,
        }
    }

    #[test]
    fn the_exit_of_a_command_is_recorded() {
        let dir = tempfile::tempdir().expect("test setup");
        // A stand-in runtime: a shell script that ignores runc's arguments,
        // prints a line on each stream and exits 3.
        let mut spec = fake_runtime(dir.path(), "#!/bin/sh\necho out; echo err >&2; exit 3\n");
        spec.stdin_fifo = Some(dir.path().join("stdin"));
        assert_eq!(run(&spec).expect("test setup"), 3);
        let record: ExitRecord =
            serde_json::from_slice(&std::fs::read(&spec.exit_file).expect("test setup"))
                .expect("test setup");
        assert_eq!(record.exit_code, 3);
        let log = std::fs::read_to_string(&spec.log).expect("test setup");
        assert!(log.contains(" stdout F out\n"), "{log}");
        assert!(log.contains(" stderr F err\n"), "{log}");
    }

    #[test]
    fn a_detached_container_is_adopted_and_waited_for() {
        let dir = tempfile::tempdir().expect("test setup");
        // A stand-in runtime: `run` leaves a process behind that writes a
        // line and exits 7 a little later, names it in the pid file and
        // returns at once, as `runc run --detach` does.
        let spec = fake_runtime(
            dir.path(),
            "#!/bin/sh\ncase \" $* \" in *\" run \"*) ;; *) exit 0;; esac\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --pid-file ] && pf=$2; shift; done\n\
             ( sleep 0.2; echo from-container; exit 7 ) &\n\
             echo $! > \"$pf\"\n",
        );
        assert_eq!(run(&spec).expect("test setup"), 7);
        let log = std::fs::read_to_string(&spec.log).expect("test setup");
        assert!(log.contains(" stdout F from-container\n"), "{log}");
    }
}
