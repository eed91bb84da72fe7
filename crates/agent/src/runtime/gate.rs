//! The start gate: a container created while its pod's network is still
//! being set up waits, in an OCI `createRuntime` hook (`kybern gate FILE`),
//! until the agent opens the gate or closes it. runc does the slow part of
//! creating the container (namespaces, cgroups, mounts) meanwhile, and the
//! container's command never runs before the pod has its address.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long a hook waits before giving up (and failing the container).
pub const GATE_TIMEOUT: Duration = Duration::from_secs(60);
/// What an open gate's file says.
const OPEN: &str = "open";

/// Lets the waiting container go on.
pub fn open(file: &Path) -> std::io::Result<()> {
    write(file, OPEN)
}

/// Fails the waiting container's creation, with `why` on runc's error output.
pub fn close(file: &Path, why: &str) -> std::io::Result<()> {
    write(file, &format!("closed: {why}"))
}

/// Writes beside and renames, so the hook never reads half a word.
fn write(file: &Path, text: &str) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// Waits for the gate at `file` (the hook's side): `Ok` once it is open,
/// the reason once it is closed, or a timeout after `limit`.
pub fn wait(file: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match std::fs::read_to_string(file) {
            Ok(text) if text == OPEN => return Ok(()),
            Ok(text) => return Err(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", file.display())),
        }
        if Instant::now() >= deadline {
            return Err(format!("the pod network was not ready within {limit:?}"));
        }
        // Cheap enough, and short: the gate opens within milliseconds.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_gate_lets_the_waiter_through() {
        let dir = tempfile::tempdir().expect("test setup");
        let file = dir.path().join("gate");
        let opener = {
            let file = file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                open(&file)
            })
        };
        assert_eq!(wait(&file, Duration::from_secs(5)), Ok(()));
        opener.join().expect("test setup").expect("test setup");
    }

    #[test]
    fn a_closed_gate_or_none_fails_the_waiter() {
        let dir = tempfile::tempdir().expect("test setup");
        let file = dir.path().join("gate");
        close(&file, "CNI bridge ADD: no address").expect("test setup");
        assert_eq!(
            wait(&file, Duration::from_secs(5)),
            Err("closed: CNI bridge ADD: no address".into())
        );
        let never = dir.path().join("never");
        assert!(wait(&never, Duration::from_millis(10)).is_err());
    }
}
