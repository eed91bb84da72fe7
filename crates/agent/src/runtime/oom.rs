//! Whether the kernel's OOM killer ended a container: its memory cgroup's
//! `oom_kill` counter, read after the container's processes are gone and
//! before its runtime removes the cgroup. No watcher runs meanwhile (where
//! `runc events` would keep a Go process alive per container), and an OOM
//! kill at any moment of the container's life counts.

use std::path::{Path, PathBuf};

/// The memory cgroup of one container, on either cgroup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCgroup {
    /// A directory in the v1 `memory` hierarchy.
    V1(PathBuf),
    /// A directory in the v2 unified hierarchy.
    V2(PathBuf),
}

impl MemoryCgroup {
    /// The cgroup `path` (a bundle's `linux.cgroupsPath`) under the cgroup
    /// mount `root`: v1 when `root` has a `memory` hierarchy.
    pub fn locate(root: &Path, path: &str) -> Self {
        let rel = path.trim_start_matches('/');
        let v1 = root.join("memory");
        if v1.is_dir() {
            MemoryCgroup::V1(v1.join(rel))
        } else {
            MemoryCgroup::V2(root.join(rel))
        }
    }

    /// The kernel's count of OOM kills of the cgroup's processes (`oom_kill`
    /// in v1's `memory.oom_control`, v2's `memory.events`); `None` if the
    /// cgroup is gone.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self {
            MemoryCgroup::V1(d) => d.join("memory.oom_control"),
            MemoryCgroup::V2(d) => d.join("memory.events"),
        };
        let text = std::fs::read_to_string(file).ok()?;
        Some(oom_kill_count(&text))
    }
}

/// The `oom_kill` counter of a `memory.oom_control` or `memory.events` text
/// (0 when absent: kernels before 4.13 do not count).
pub fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The `linux.cgroupsPath` of the bundle at `bundle`.
pub fn bundle_cgroup(bundle: &Path) -> Option<String> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    config["linux"]["cgroupsPath"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_counter_is_read_from_either_file() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), 2);
        assert_eq!(oom_kill_count(v2), 1);
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    #[test]
    fn the_hierarchy_decides_the_version() {
        let root = tempfile::tempdir().expect("test setup");
        assert_eq!(
            MemoryCgroup::locate(root.path(), "/kubepods/pod1/c"),
            MemoryCgroup::V2(root.path().join("kubepods/pod1/c"))
        );
        std::fs::create_dir(root.path().join("memory")).expect("test setup");
        assert_eq!(
            MemoryCgroup::locate(root.path(), "/kubepods/pod1/c"),
            MemoryCgroup::V1(root.path().join("memory/kubepods/pod1/c"))
        );
    }

    #[test]
    fn the_count_is_read_from_the_cgroup() {
        let root = tempfile::tempdir().expect("test setup");
        let dir = root.path().join("memory/kubepods/c");
        std::fs::create_dir_all(&dir).expect("test setup");
        let cgroup = MemoryCgroup::locate(root.path(), "/kubepods/c");
        assert_eq!(cgroup.oom_kills(), None);
        std::fs::write(dir.join("memory.oom_control"), "under_oom 0\noom_kill 1\n")
            .expect("test setup");
        assert_eq!(cgroup.oom_kills(), Some(1));
    }

    #[test]
    fn the_bundle_names_its_cgroup() {
        let dir = tempfile::tempdir().expect("test setup");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"linux":{"cgroupsPath":"/kubepods/besteffort/podu/c"}}"#,
        )
        .expect("test setup");
        assert_eq!(
            bundle_cgroup(dir.path()).as_deref(),
            Some("/kubepods/besteffort/podu/c")
        );
        assert_eq!(bundle_cgroup(&dir.path().join("none")), None);
    }
}
