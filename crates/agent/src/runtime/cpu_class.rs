//! The CPU scheduling class of a process the agent starts ahead of need: a
//! standby monitor loads at `SCHED_IDLE`, on CPU time nothing else wants,
//! and is put back in the normal class when a container is handed to it.
//!
//! The only unsafe code of the agent: `sched_setscheduler(2)` has no safe
//! wrapper in `nix`.
#![allow(unsafe_code)]

use nix::libc;

/// The class a process may be moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClass {
    /// `SCHED_IDLE`: runs when a CPU would otherwise idle (and with a tiny
    /// weight under contention, so it is never starved for good).
    Idle,
    /// `SCHED_OTHER` at its nice value: the class everything else runs in.
    Normal,
}

/// Moves the main thread of process `pid` (a process this agent started, not
/// yet running threads of its own) to `class`. Threads and children it
/// starts afterwards inherit the class.
pub fn set(pid: u32, class: CpuClass) -> std::io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    let policy = match class {
        CpuClass::Idle => libc::SCHED_IDLE,
        CpuClass::Normal => libc::SCHED_OTHER,
    };
    // Both classes take a static priority of 0.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only, for the duration of the
    // call; it points to a live, initialised sched_param on this stack. A
    // stale or foreign pid is reported as an error, not undefined behaviour.
    let rc = unsafe { libc::sched_setscheduler(pid, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The class of process `pid`'s main thread, if it is one of the two.
pub fn get(pid: u32) -> std::io::Result<Option<CpuClass>> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: sched_getscheduler takes a plain integer and touches no memory
    // of ours.
    let policy = unsafe { libc::sched_getscheduler(pid) };
    match policy {
        -1 => Err(std::io::Error::last_os_error()),
        libc::SCHED_IDLE => Ok(Some(CpuClass::Idle)),
        libc::SCHED_OTHER => Ok(Some(CpuClass::Normal)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_goes_idle_and_back() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("test setup");
        let pid = child.id();
        set(pid, CpuClass::Idle).expect("lowering needs no privilege");
        assert_eq!(get(pid).expect("class"), Some(CpuClass::Idle));
        // Raising back needs CAP_SYS_NICE or a permissive RLIMIT_NICE.
        if set(pid, CpuClass::Normal).is_ok() {
            assert_eq!(get(pid).expect("class"), Some(CpuClass::Normal));
        }
        child.kill().expect("test teardown");
        child.wait().expect("test teardown");
    }

    #[test]
    fn a_pid_out_of_range_is_an_error() {
        assert!(set(u32::MAX, CpuClass::Idle).is_err());
        assert!(get(u32::MAX).is_err());
    }
}
