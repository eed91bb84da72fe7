//! The start gate: a container created while its pod's network is still
//! being set up waits, in an OCI `createRuntime` hook, until the agent opens
//! the gate or closes it. runc does the slow part of creating the container
//! (namespaces, cgroups, mounts) meanwhile, and the container's command
//! never runs before the pod has its address.
//!
//! The gate is a named pipe. The agent writes one line into it, `open` or
//! `closed: <why>`, and holds it open until the container has started, so
//! that the line waits in the pipe for a hook that opens it later. The hook
//! is the host's `/bin/sh` reading that line (about a millisecond to start,
//! where this binary takes four), or `kybern gate` on a host without one.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long runc lets the hook wait before it kills it (and the container
/// fails to start).
pub const GATE_TIMEOUT: Duration = Duration::from_secs(60);
/// What an open gate's line says.
const OPEN: &str = "open";
/// The shell that reads the gate, when the host has one.
const SHELL: &str = "/bin/sh";
/// The hook's script: `$0` is the gate. A line other than `open` is the
/// reason, on runc's error output.
const SCRIPT: &str = r#"read -r line < "$0"; [ "$line" = open ] || { echo "start gate: ${line:-closed}" >&2; exit 1; }"#;

/// The agent's end of a gate it opened or closed: hold it until the
/// container has started or been abandoned.
#[derive(Debug)]
pub struct Held {
    _pipe: std::fs::File,
}

/// Makes the gate at `file` (afresh: an older one is removed).
pub fn prepare(file: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    nix::unistd::mkfifo(file, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
}

/// Lets the waiting container go on.
pub fn open(file: &Path) -> std::io::Result<Held> {
    write(file, OPEN)
}

/// Fails the waiting container's creation, with `why` on runc's error output.
pub fn close(file: &Path, why: &str) -> std::io::Result<Held> {
    write(file, &format!("closed: {}", why.replace('\n', " ")))
}

/// Writes the gate's line. Opening for reading and writing never waits for
/// a reader, and keeps the line in the pipe until one comes.
fn write(file: &Path, line: &str) -> std::io::Result<Held> {
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(file)?;
    pipe.write_all(format!("{line}\n").as_bytes())?;
    Ok(Held { _pipe: pipe })
}

/// The hook's executable and arguments for the gate at `file`; `exe` is
/// this `kybern`, for a host without a shell.
pub fn hook_command(exe: &Path, file: &Path) -> (PathBuf, Vec<String>) {
    let file = file.to_string_lossy().into_owned();
    if Path::new(SHELL).exists() {
        (
            SHELL.into(),
            vec!["sh".into(), "-c".into(), SCRIPT.into(), file],
        )
    } else {
        (exe.to_owned(), vec!["kybern".into(), "gate".into(), file])
    }
}

/// Waits for the gate at `file` (`kybern gate`, the hook's side): `Ok` once
/// it is open, the reason once it is closed. runc ends the wait after the
/// hook's timeout.
pub fn wait(file: &Path) -> Result<(), String> {
    let pipe = std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(pipe)
        .read_line(&mut line)
        .map_err(|e| format!("reading {}: {e}", file.display()))?;
    match line.trim_end() {
        OPEN => Ok(()),
        "" => Err("the start gate closed without a word".into()),
        other => Err(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_gate_lets_the_waiter_through_whenever_it_comes() {
        let dir = tempfile::tempdir().expect("test setup");
        let file = dir.path().join("gate");
        prepare(&file).expect("test setup");
        // The waiter first, then the agent.
        let opener = {
            let file = file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                open(&file)
            })
        };
        assert_eq!(wait(&file), Ok(()));
        drop(opener.join().expect("test setup").expect("test setup"));
        // The agent first: the line waits in the pipe while it is held.
        prepare(&file).expect("test setup");
        let held = open(&file).expect("test setup");
        assert_eq!(wait(&file), Ok(()));
        drop(held);
    }

    #[test]
    fn a_closed_gate_or_none_fails_the_waiter() {
        let dir = tempfile::tempdir().expect("test setup");
        let file = dir.path().join("gate");
        prepare(&file).expect("test setup");
        let held = close(&file, "CNI bridge ADD:\nno address").expect("test setup");
        assert_eq!(
            wait(&file),
            Err("closed: CNI bridge ADD: no address".into())
        );
        drop(held);
        assert!(wait(&dir.path().join("never")).is_err());
    }

    #[test]
    fn the_shell_hook_reads_the_gate() {
        if !Path::new(SHELL).exists() {
            return;
        }
        let dir = tempfile::tempdir().expect("test setup");
        let file = dir.path().join("gate");
        let run = |line: Option<&str>| {
            prepare(&file).expect("test setup");
            let held = line.map(|l| write(&file, l).expect("test setup"));
            let (exe, args) = hook_command(Path::new("/nonexistent/kybern"), &file);
            let out = std::process::Command::new(exe)
                .args(&args[1..])
                .output()
                .expect("the shell runs");
            drop(held);
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert_eq!(run(Some(OPEN)), (true, String::new()));
        let (ok, err) = run(Some("closed: no address"));
        assert!(!ok);
        assert_eq!(err.trim(), "start gate: closed: no address");
    }
}
