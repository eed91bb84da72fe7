//! Reading CPU time and memory use from the kernel: a container's cgroup
//! (v1 `cpuacct`/`memory` hierarchies, or v2's unified one) and the whole
//! machine (`/proc/stat`, `/proc/meminfo`). Both roots are paths, so tests
//! read files they wrote.

use std::path::{Path, PathBuf};

/// One reading of a cgroup or of the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used so far, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, page cache included.
    pub memory_bytes: u64,
    /// Memory in use less inactive file pages: what the kubelet reports as
    /// the working set (and `kubectl top` shows).
    pub working_set_bytes: u64,
}

/// Where the kernel's files are.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// The cgroup mount (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// procfs (`/proc`).
    pub proc_root: PathBuf,
}

impl Default for KernelFiles {
    fn default() -> Self {
        KernelFiles {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line's value from a stat file.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl KernelFiles {
    /// The cgroup at `path` (such as `/kubepods/burstable/pod<uid>/<id>`);
    /// `None` if it does not exist.
    pub fn cgroup(&self, path: &str) -> Option<Usage> {
        let rel = path.trim_start_matches('/');
        let v1_cpu = self.cgroup_root.join("cpuacct").join(rel);
        if v1_cpu.exists() {
            let memory = self.cgroup_root.join("memory").join(rel);
            let used = read_u64(&memory.join("memory.usage_in_bytes")).unwrap_or(0);
            let stat = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
            let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
            return Some(Usage {
                cpu_ns: read_u64(&v1_cpu.join("cpuacct.usage"))?,
                memory_bytes: used,
                working_set_bytes: used.saturating_sub(inactive),
            });
        }
        let v2 = self.cgroup_root.join(rel);
        let cpu = std::fs::read_to_string(v2.join("cpu.stat")).ok()?;
        let used = read_u64(&v2.join("memory.current")).unwrap_or(0);
        let stat = std::fs::read_to_string(v2.join("memory.stat")).unwrap_or_default();
        let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
        Some(Usage {
            cpu_ns: stat_value(&cpu, "usage_usec")?.saturating_mul(1000),
            memory_bytes: used,
            working_set_bytes: used.saturating_sub(inactive),
        })
    }

    /// The whole machine: busy CPU time from `/proc/stat` (all but idle and
    /// iowait; USER_HZ is 100 on Linux) and memory from `/proc/meminfo`.
    /// Also returns the machine's total memory.
    pub fn machine(&self) -> Option<(Usage, u64)> {
        let stat = std::fs::read_to_string(self.proc_root.join("stat")).ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is
        // already counted in user).
        let busy: u64 = cpu
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        let meminfo = std::fs::read_to_string(self.proc_root.join("meminfo")).ok()?;
        let kib = |key: &str| {
            meminfo.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        let total = kib("MemTotal")? * 1024;
        let available = kib("MemAvailable").unwrap_or(0) * 1024;
        let used = total.saturating_sub(available);
        Some((
            Usage {
                cpu_ns: busy.saturating_mul(10_000_000),
                memory_bytes: used,
                working_set_bytes: used,
            },
            total,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn cgroup_v1_and_v2_read_alike() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = KernelFiles {
            cgroup_root: dir.path().to_path_buf(),
            proc_root: dir.path().join("proc"),
        };
        write(dir.path(), "cpuacct/kubepods/p/c/cpuacct.usage", "5000\n");
        write(
            dir.path(),
            "memory/kubepods/p/c/memory.usage_in_bytes",
            "1000\n",
        );
        write(
            dir.path(),
            "memory/kubepods/p/c/memory.stat",
            "cache 10\ntotal_inactive_file 300\n",
        );
        assert_eq!(
            files.cgroup("/kubepods/p/c"),
            Some(Usage {
                cpu_ns: 5000,
                memory_bytes: 1000,
                working_set_bytes: 700
            })
        );
        write(dir.path(), "v2/c/cpu.stat", "usage_usec 7\nuser_usec 5\n");
        write(dir.path(), "v2/c/memory.current", "2048");
        write(dir.path(), "v2/c/memory.stat", "anon 1\ninactive_file 48\n");
        assert_eq!(
            files.cgroup("/v2/c"),
            Some(Usage {
                cpu_ns: 7000,
                memory_bytes: 2048,
                working_set_bytes: 2000
            })
        );
        assert_eq!(files.cgroup("/gone"), None);
    }

    #[test]
    fn the_machine_counts_busy_time_and_unavailable_memory() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = KernelFiles {
            cgroup_root: dir.path().to_path_buf(),
            proc_root: dir.path().to_path_buf(),
        };
        write(
            dir.path(),
            "stat",
            "cpu  10 1 4 1000 50 2 3 0 0 0\ncpu0 5 0 2 500 25 1 1 0 0 0\n",
        );
        write(
            dir.path(),
            "meminfo",
            "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    400 kB\n",
        );
        let (usage, total) = files.machine().expect("machine");
        assert_eq!(usage.cpu_ns, 20 * 10_000_000);
        assert_eq!(usage.working_set_bytes, 600 * 1024);
        assert_eq!(total, 1000 * 1024);
    }
}
