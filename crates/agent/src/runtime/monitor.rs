//! The container monitor (conmon's role): a small process per container that
//! runs the OCI runtime in the foreground, writes the container's output to
//! its log in the CRI format, and records its exit code. It outlives the agent,
//! so containers, their logs and their exit codes survive an agent restart.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::log_file::RotatingLog;
use crate::AgentError;

/// A CRI log line longer than this is split into partial (`P`) lines.
const MAX_LINE: usize = 16 * 1024;

/// What the monitor needs to run one container.
#[derive(Debug, Clone)]
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
    /// When the log rotates.
    pub log_policy: super::log_file::LogPolicy,
    /// A named pipe to create and give the container as its standard input
    /// (containers with `stdin: true`; `kubectl attach -i` writes to it).
    pub stdin_fifo: Option<PathBuf>,
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
pub fn run(spec: &MonitorSpec) -> Result<i32, AgentError> {
    let log = RotatingLog::open(&spec.log, spec.log_policy)?;
    let log = Arc::new(Mutex::new(log));
    let stdin = match &spec.stdin_fifo {
        Some(fifo) => Stdio::from(open_stdin_fifo(fifo)?),
        None => Stdio::null(),
    };
    let mut child = Command::new(&spec.runtime)
        .arg("--root")
        .arg(&spec.root)
        .arg("run")
        .arg("--bundle")
        .arg(&spec.bundle)
        .arg(&spec.id)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut copiers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let log = log.clone();
        copiers.push(std::thread::spawn(move || copy_lines(out, "stdout", &log)));
    }
    if let Some(err) = child.stderr.take() {
        let log = log.clone();
        copiers.push(std::thread::spawn(move || copy_lines(err, "stderr", &log)));
    }
    let oom = OomWatch::start(spec);
    let status = child.wait()?;
    for c in copiers {
        let _ = c.join();
    }
    let oom_killed = oom.finish();
    let exit_code = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    };
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

/// Creates the named pipe (if missing) and opens it for reading and
/// writing: the open does not wait for a writer, and the container never
/// sees end-of-file when an attached client goes away.
fn open_stdin_fifo(fifo: &std::path::Path) -> Result<std::fs::File, AgentError> {
    match nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(AgentError::Io(e.into())),
    }
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)?)
}

/// Follows `runc events` of the container for `oom` events. runc checks that
/// the cgroup still exists before it reports one, so the removal of the
/// cgroup at exit does not read as an OOM kill. An OOM kill in the first
/// moments, before `runc events` is attached, is missed.
struct OomWatch {
    seen: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<std::sync::atomic::AtomicBool>,
    events: Arc<Mutex<Option<std::process::Child>>>,
    thread: std::thread::JoinHandle<()>,
}

impl OomWatch {
    fn start(spec: &MonitorSpec) -> Self {
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let events: Arc<Mutex<Option<std::process::Child>>> = Default::default();
        let (spec, flag, slot, ended) = (spec.clone(), seen.clone(), events.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let runc = |verb: &str| {
                let mut c = Command::new(&spec.runtime);
                c.arg("--root").arg(&spec.root).arg(verb).arg(&spec.id);
                c
            };
            // Wait for runc to have the container (it is being created).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !runc("state")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                if std::time::Instant::now() > deadline
                    || ended.load(std::sync::atomic::Ordering::SeqCst)
                {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let Ok(mut child) = runc("events")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            else {
                return;
            };
            let out = child.stdout.take();
            if let Ok(mut slot) = slot.lock() {
                if ended.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                *slot = Some(child);
            }
            let Some(out) = out else { return };
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if event["type"] == "oom" {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        OomWatch {
            seen,
            done,
            events,
            thread,
        }
    }

    /// Stops following events; whether an OOM kill was seen.
    fn finish(self) -> bool {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut slot) = self.events.lock()
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The thread ends once the events process is gone.
        let _ = self.thread.join();
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies `input` into the log, one CRI line per output line.
fn copy_lines(input: impl Read, stream: &str, log: &Mutex<RotatingLog>) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let encoded = cri_lines(chrono::Utc::now(), stream, text);
        if let Ok(mut f) = log.lock() {
            let _ = f.write(&encoded);
        }
    }
}

/// `text` as CRI log lines: `<RFC 3339 nano time> <stream> <P|F> <content>`.
pub fn cri_lines(at: chrono::DateTime<chrono::Utc>, stream: &str, text: &[u8]) -> Vec<u8> {
    let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut out = Vec::with_capacity(text.len() + 48);
    let mut chunks = text.chunks(MAX_LINE).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(format!("{ts} {stream} F \n").as_bytes());
    }
    while let Some(chunk) = chunks.next() {
        let tag = if chunks.peek().is_some() { "P" } else { "F" };
        out.extend_from_slice(format!("{ts} {stream} {tag} ").as_bytes());
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cri_formatted_and_long_ones_split() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .expect("test setup")
            .with_timezone(&chrono::Utc);
        let out = cri_lines(at, "stdout", b"hello");
        assert_eq!(out, b"2026-01-02T03:04:05.123456789Z stdout F hello\n");
        let long = vec![b'x'; MAX_LINE + 3];
        let out = String::from_utf8(cri_lines(at, "stderr", &long)).expect("test setup");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(" stderr P "));
        assert!(lines[1].ends_with(" stderr F xxx"));
        assert!(cri_lines(at, "stdout", b"").ends_with(b"stdout F \n"));
    }

    #[test]
    fn the_exit_of_a_command_is_recorded() {
        let dir = tempfile::tempdir().expect("test setup");
        // A stand-in runtime: a shell script that ignores runc's arguments,
        // prints a line on each stream and exits 3.
        let runtime = dir.path().join("fake-runtime");
        std::fs::write(&runtime, "#!/bin/sh\necho out; echo err >&2; exit 3\n")
            .expect("test setup");
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("test setup");
        let spec = MonitorSpec {
            runtime,
            root: dir.path().into(),
            bundle: dir.path().into(),
            id: "c".into(),
            log: dir.path().join("0.log"),
            exit_file: dir.path().join("exit"),
            log_policy: Default::default(),
            stdin_fifo: Some(dir.path().join("stdin")),
        };
        assert_eq!(run(&spec).expect("test setup"), 3);
        let record: ExitRecord =
            serde_json::from_slice(&std::fs::read(&spec.exit_file).expect("test setup"))
                .expect("test setup");
        assert_eq!(record.exit_code, 3);
        let log = std::fs::read_to_string(&spec.log).expect("test setup");
        assert!(log.contains(" stdout F out\n"), "{log}");
        assert!(log.contains(" stderr F err\n"), "{log}");
    }
}
