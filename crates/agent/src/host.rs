//! The kernel calls the agent makes itself (namespaces held by bind mounts,
//! overlay mounts, cgroup directories), behind the [`NodeHost`] seam so the
//! pod logic can be tested without root.

use std::path::{Path, PathBuf};

use crate::AgentError;

/// Namespaces a pod's containers share, each held open by a bind-mounted file.
pub const SHARED_NAMESPACES: [&str; 3] = ["net", "ipc", "uts"];

/// What the agent needs from the node's kernel.
pub trait NodeHost: Send + Sync {
    /// Creates the pod's network, IPC and UTS namespaces as files in `dir`,
    /// with `hostname` set in the UTS one.
    fn create_namespaces(&self, dir: &Path, hostname: &str) -> Result<(), AgentError>;
    /// Releases the namespace files in `dir` (missing ones are fine).
    fn remove_namespaces(&self, dir: &Path) -> Result<(), AgentError>;
    /// Mounts an overlay of `lower` (bottom layer first) with a writable
    /// `upper` at `target`.
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), AgentError>;
    /// Unmounts `target` if something is mounted there.
    fn unmount(&self, target: &Path) -> Result<(), AgentError>;
    /// Mounts a tmpfs of at most `size` bytes (the kernel's default, half
    /// the memory, when `None`) at the directory `target`, unless one is
    /// already mounted there.
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), AgentError>;
    /// Creates the pod cgroup `path` and holds everything under it to
    /// `limits` (the kubelet's pod-level cgroup settings).
    fn limit_pod(&self, path: &str, limits: &PodLimits) -> Result<(), AgentError>;
    /// Removes the cgroup `path` (and anything under it) from every hierarchy.
    fn remove_cgroup(&self, path: &str) -> Result<(), AgentError>;
}

/// What a pod's own cgroup is held to (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// CPU shares (v1 `cpu.shares`; v2 `cpu.weight` from it).
    pub cpu_shares: Option<u64>,
    /// CFS quota per 100 ms period, in microseconds.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Processes.
    pub pids: Option<i64>,
}

impl PodLimits {
    /// `(controller, file, value)` for each limit set, in v1's file names
    /// when `v1`, else in v2's.
    pub fn files(&self, v1: bool) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(shares) = self.cpu_shares {
            if v1 {
                out.push(("cpu", "cpu.shares", shares.to_string()));
            } else {
                // runc's conversion of shares [2, 262144] to weight [1, 10000].
                let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                out.push(("cpu", "cpu.weight", weight.to_string()));
            }
        }
        if let Some(quota) = self.cpu_quota {
            if v1 {
                out.push(("cpu", "cpu.cfs_period_us", "100000".into()));
                out.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
            } else {
                out.push(("cpu", "cpu.max", format!("{quota} 100000")));
            }
        }
        if let Some(bytes) = self.memory {
            let file = if v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            out.push(("memory", file, bytes.to_string()));
        }
        if let Some(pids) = self.pids {
            out.push(("pids", "pids.max", pids.to_string()));
        }
        out
    }
}

/// Moves the calling thread into new network, IPC and UTS namespaces, sets
/// the hostname in the UTS one and binds each to its file in `dir`.
fn enter_and_bind(dir: &Path, hostname: &str) -> Result<(), AgentError> {
    use nix::sched::CloneFlags;
    let failed = |what: &str, e: nix::Error| {
        AgentError::Runtime(format!("creating pod namespaces: {what}: {e}"))
    };
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(|e| failed("unshare", e))?;
    nix::unistd::sethostname(hostname).map_err(|e| failed("sethostname", e))?;
    for ns in SHARED_NAMESPACES {
        nix::mount::mount(
            Some(Path::new("/proc/thread-self/ns").join(ns).as_path()),
            &dir.join(ns),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| failed(ns, e))?;
    }
    Ok(())
}

/// The real kernel, through unshare(2) and mount(2).
#[derive(Debug, Clone)]
pub struct LinuxHost {
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
}

impl Default for LinuxHost {
    fn default() -> Self {
        LinuxHost {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl NodeHost for LinuxHost {
    fn create_namespaces(&self, dir: &Path, hostname: &str) -> Result<(), AgentError> {
        std::fs::create_dir_all(dir)?;
        for ns in SHARED_NAMESPACES {
            std::fs::File::create(dir.join(ns))?;
        }
        // Namespaces belong to threads: a thread of our own moves into new
        // ones, names its UTS namespace, binds each to its file and ends;
        // the namespaces live on with no process in them. (A pooled thread
        // would carry the namespaces back into the pool.) This saves
        // spawning `unshare(1)` per pod.
        let (dir_in, name) = (dir.to_owned(), hostname.to_owned());
        let made = std::thread::Builder::new()
            .name("pod-namespaces".into())
            .spawn(move || enter_and_bind(&dir_in, &name))?
            .join()
            .map_err(|_| AgentError::Runtime("creating pod namespaces: thread panicked".into()))
            .and_then(|r| r);
        if made.is_err() {
            let _ = self.remove_namespaces(dir);
        }
        made
    }

    fn remove_namespaces(&self, dir: &Path) -> Result<(), AgentError> {
        for ns in SHARED_NAMESPACES {
            let file = dir.join(ns);
            self.unmount(&file)?;
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), AgentError> {
        use nix::mount::{MsFlags, mount};
        // overlayfs lists the top layer first.
        let lowerdir: Vec<String> = lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        for p in [upper, work, target] {
            std::fs::create_dir_all(p)?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| AgentError::Runtime(format!("mounting rootfs {}: {e}", target.display())))
    }

    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), AgentError> {
        use nix::mount::{MsFlags, mount};
        use std::os::unix::fs::MetadataExt;
        std::fs::create_dir_all(target)?;
        let parent = target.parent().unwrap_or(Path::new("/"));
        if std::fs::metadata(target)?.dev() != std::fs::metadata(parent)?.dev() {
            return Ok(());
        }
        let data = match size {
            Some(bytes) => format!("mode=0777,size={bytes}"),
            None => "mode=0777".to_owned(),
        };
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| AgentError::Runtime(format!("mounting tmpfs {}: {e}", target.display())))
    }

    fn unmount(&self, target: &Path) -> Result<(), AgentError> {
        use nix::errno::Errno;
        use nix::mount::{MntFlags, umount2};
        // NOFOLLOW: a volume may be a symlink to a host path (a claim's
        // PersistentVolume) whose own mount must stay.
        match umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
            Err(e) => Err(AgentError::Runtime(format!(
                "unmounting {}: {e}",
                target.display()
            ))),
        }
    }

    fn limit_pod(&self, path: &str, limits: &PodLimits) -> Result<(), AgentError> {
        let rel = path.trim_start_matches('/');
        let v1 = self.cgroup_root.join("memory").is_dir();
        let files = limits.files(v1);
        if files.is_empty() {
            return Ok(());
        }
        if v1 {
            // v1: one hierarchy per controller.
            for (controller, file, value) in files {
                let dir = self.cgroup_root.join(controller).join(rel);
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join(file), value)?;
            }
            return Ok(());
        }
        // v2: each ancestor must hand the controllers down.
        let mut controllers: Vec<&str> = files.iter().map(|(c, _, _)| *c).collect();
        controllers.dedup();
        let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
        let mut at = self.cgroup_root.clone();
        for part in rel.split('/') {
            std::fs::write(at.join("cgroup.subtree_control"), enable.join(" "))?;
            at.push(part);
            std::fs::create_dir_all(&at)?;
        }
        for (_, file, value) in files {
            std::fs::write(at.join(file), value)?;
        }
        Ok(())
    }

    fn remove_cgroup(&self, path: &str) -> Result<(), AgentError> {
        let rel = path.trim_start_matches('/');
        let Ok(hierarchies) = std::fs::read_dir(&self.cgroup_root) else {
            return Ok(());
        };
        for h in hierarchies.flatten() {
            let dir = h.path().join(rel);
            if dir.is_dir() {
                remove_cgroup_tree(&dir)?;
            }
        }
        // The unified hierarchy of a v2 host sits at the root itself.
        let unified = self.cgroup_root.join(rel);
        if unified.is_dir() {
            remove_cgroup_tree(&unified)?;
        }
        Ok(())
    }
}

/// Removes a cgroup directory, children first (cgroup files cannot be
/// unlinked; only empty cgroup directories can be removed).
fn remove_cgroup_tree(dir: &Path) -> Result<(), AgentError> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::Runtime(format!(
            "removing cgroup {}: {e}",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_limits_name_the_files_of_either_cgroup_version() {
        let limits = PodLimits {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            memory: Some(64 << 20),
            pids: None,
        };
        let v1 = limits.files(true);
        assert!(v1.contains(&("cpu", "cpu.shares", "1024".into())));
        assert!(v1.contains(&("cpu", "cpu.cfs_quota_us", "50000".into())));
        assert!(v1.contains(&("memory", "memory.limit_in_bytes", (64u64 << 20).to_string())));
        let v2 = limits.files(false);
        assert!(v2.contains(&("cpu", "cpu.weight", "39".into())));
        assert!(v2.contains(&("cpu", "cpu.max", "50000 100000".into())));
        assert!(v2.contains(&("memory", "memory.max", (64u64 << 20).to_string())));
        assert!(PodLimits::default().files(true).is_empty());
    }

    #[test]
    fn limits_are_written_into_each_v1_hierarchy() {
        let root = tempfile::tempdir().expect("test setup");
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir(root.path().join(c)).expect("test setup");
        }
        let host = LinuxHost {
            cgroup_root: root.path().to_owned(),
        };
        let limits = PodLimits {
            cpu_shares: Some(2),
            pids: Some(16),
            ..Default::default()
        };
        host.limit_pod("/kubepods/besteffort/podu", &limits)
            .expect("test setup");
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect("written");
        assert_eq!(read("cpu/kubepods/besteffort/podu/cpu.shares"), "2");
        assert_eq!(read("pids/kubepods/besteffort/podu/pids.max"), "16");
        assert!(!root.path().join("memory/kubepods").exists());
    }
}
