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
    /// Creates the pod cgroup `path` in the pids controller and caps the
    /// processes of everything under it at `limit` (the kubelet's
    /// `podPidsLimit`).
    fn limit_pids(&self, path: &str, limit: i64) -> Result<(), AgentError>;
    /// Removes the cgroup `path` (and anything under it) from every hierarchy.
    fn remove_cgroup(&self, path: &str) -> Result<(), AgentError>;
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

    fn limit_pids(&self, path: &str, limit: i64) -> Result<(), AgentError> {
        let rel = path.trim_start_matches('/');
        let v1 = self.cgroup_root.join("pids");
        let dir = if v1.is_dir() {
            v1.join(rel)
        } else {
            // v2: each ancestor must hand the pids controller down.
            let mut at = self.cgroup_root.clone();
            for part in rel.split('/') {
                std::fs::write(at.join("cgroup.subtree_control"), "+pids")?;
                at.push(part);
                std::fs::create_dir_all(&at)?;
            }
            at
        };
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("pids.max"), limit.to_string())?;
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
