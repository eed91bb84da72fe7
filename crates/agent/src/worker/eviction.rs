//! Local-storage eviction, the kubelet's `localStorageEviction`: a pod whose
//! disk emptyDir outgrows its `sizeLimit`, whose container's writable layer
//! and logs outgrow its `ephemeral-storage` limit, or whose total outgrows
//! the sum of those limits, is evicted — its containers killed, its phase
//! `Failed` with reason `Evicted` and upstream's message.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::state::PodDir;

/// How often a pod's local storage is measured (the eviction manager's
/// housekeeping interval).
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The marker that records a pod's eviction and its message (so it holds
/// across agent restarts).
pub fn marker(dir: &PodDir) -> std::path::PathBuf {
    dir.root.join("evicted")
}

/// The eviction message recorded for the pod, if it was evicted.
pub fn recorded(dir: &PodDir) -> Option<String> {
    std::fs::read_to_string(marker(dir)).ok()
}

/// Whether the pod has any limit on its local storage: a disk emptyDir
/// with a `sizeLimit`, or a container with an `ephemeral-storage` limit.
/// Pods without one are not measured.
pub fn limited(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sized_volume = spec.volumes.iter().flatten().any(|v| {
        v.empty_dir
            .as_ref()
            .is_some_and(|e| e.medium.as_deref() != Some("Memory") && e.size_limit.is_some())
    });
    sized_volume
        || spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .any(|c| ephemeral_limit(c).is_some())
}

/// Bytes of disk used under `path` (allocated blocks, as `du`), not
/// following symbolic links nor crossing into other filesystems (a volume
/// mounted into a directory counts for its own owner).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let device = top.dev();
    let mut total = top.blocks() * 512;
    let mut pending = vec![path.to_path_buf()];
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            // A file with several links counts once.
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// What counts against a container's `ephemeral-storage` limit: its
/// current run's writable layer and its logs.
fn container_usage(dir: &PodDir, name: &str, measure: &dyn Fn(&Path) -> u64) -> u64 {
    let layer = dir
        .attempts(name)
        .last()
        .map_or(0, |&a| measure(&dir.attempt(name, a).join("upper")));
    layer + measure(&dir.root.join("logs").join(name))
}

fn ephemeral_limit(c: &Container) -> Option<(i64, String)> {
    let q = c
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("ephemeral-storage")?;
    super::qos::bytes(&q.0).map(|b| (b, q.0.clone()))
}

/// Why the pod must be evicted for its local storage, in upstream's words;
/// `None` while it stays within its limits. `measure` gives the bytes used
/// under a path.
pub fn exceeded(pod: &Pod, dir: &PodDir, measure: &dyn Fn(&Path) -> u64) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let mut pod_used: u64 = 0;
    for volume in spec.volumes.iter().flatten() {
        let Some(empty) = &volume.empty_dir else {
            continue;
        };
        // A memory emptyDir is held to its limit by its tmpfs.
        if empty.medium.as_deref() == Some("Memory") {
            continue;
        }
        let used = measure(&dir.volume(&volume.name));
        pod_used += used;
        if let Some(limit) = &empty.size_limit
            && let Some(bytes) = super::qos::bytes(&limit.0)
            && used > u64::try_from(bytes).unwrap_or(u64::MAX)
        {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name, limit.0
            ));
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut total_limit: Option<i64> = Some(0);
    let mut binary = false;
    for c in containers {
        let used = container_usage(dir, &c.name, measure);
        pod_used += used;
        match ephemeral_limit(c) {
            Some((bytes, text)) => {
                if used > u64::try_from(bytes).unwrap_or(u64::MAX) {
                    return Some(format!(
                        "Container {} exceeded its local ephemeral storage limit {text:?}. ",
                        c.name
                    ));
                }
                if total_limit == Some(0) {
                    // The sum keeps the first limit's format, as upstream's.
                    binary = text.ends_with('i');
                }
                total_limit = total_limit.map(|t| t.saturating_add(bytes));
            }
            // A container without a limit leaves the pod without one.
            None => total_limit = None,
        }
    }
    let total = total_limit.filter(|t| *t > 0)?;
    (pod_used > u64::try_from(total).unwrap_or(u64::MAX)).then(|| {
        format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
            quantity(total, binary)
        )
    })
}

/// `bytes` as a quantity with the largest suffix that states it exactly
/// (`Ki`, `Mi`, ... when `binary`; `k`, `M`, ... otherwise).
fn quantity(bytes: i64, binary: bool) -> String {
    let (base, suffixes): (i64, [&str; 4]) = if binary {
        (1024, ["Ki", "Mi", "Gi", "Ti"])
    } else {
        (1000, ["k", "M", "G", "T"])
    };
    let mut value = bytes;
    let mut suffix = "";
    for s in suffixes {
        if value == 0 || value % base != 0 {
            break;
        }
        value /= base;
        suffix = s;
    }
    format!("{value}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .expect("test setup")
    }

    fn dir() -> PodDir {
        PodDir {
            root: "/pods/u".into(),
            uid: "u".into(),
        }
    }

    /// A measure that reads sizes from `sizes`, by path.
    fn sizes(sizes: &[(&str, u64)]) -> impl Fn(&Path) -> u64 {
        let map: HashMap<String, u64> = sizes.iter().map(|(p, s)| (p.to_string(), *s)).collect();
        move |p: &Path| {
            map.get(p.to_str().unwrap_or_default())
                .copied()
                .unwrap_or(0)
        }
    }

    #[test]
    fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}},
                {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]}));
        let within = sizes(&[("/pods/u/volumes/scratch", 1 << 20)]);
        assert_eq!(exceeded(&p, &dir(), &within), None);
        let over = sizes(&[
            ("/pods/u/volumes/scratch", (1 << 20) + 4096),
            ("/pods/u/volumes/ram", 1 << 30),
        ]);
        assert_eq!(
            exceeded(&p, &dir(), &over).as_deref(),
            Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ")
        );
        // The memory volume alone does not count.
        let ram = sizes(&[("/pods/u/volumes/ram", 1 << 30)]);
        assert_eq!(exceeded(&p, &dir(), &ram), None);
        assert!(limited(&p));
        assert!(!limited(&pod(
            json!({"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "scratch", "emptyDir": {}}]})
        )));
    }

    #[test]
    fn a_container_over_its_ephemeral_storage_limit_evicts_the_pod() {
        let p = pod(json!({"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"ephemeral-storage": "2Mi"}}}]}));
        // No run yet: only its logs count.
        let logs = sizes(&[("/pods/u/logs/c", 3 << 20)]);
        assert_eq!(
            exceeded(&p, &dir(), &logs).as_deref(),
            Some("Container c exceeded its local ephemeral storage limit \"2Mi\". ")
        );
        assert_eq!(
            exceeded(&p, &dir(), &sizes(&[("/pods/u/logs/c", 1 << 20)])),
            None
        );
    }

    #[test]
    fn the_pod_total_counts_volumes_against_the_sum_of_limits() {
        let spec = json!({"containers": [
            {"name": "a", "image": "i", "resources": {"limits": {"ephemeral-storage": "1Mi"}}},
            {"name": "b", "image": "i", "resources": {"limits": {"ephemeral-storage": "1Mi"}}}],
            "volumes": [{"name": "scratch", "emptyDir": {}}]});
        let over = sizes(&[
            ("/pods/u/volumes/scratch", 2 << 20),
            ("/pods/u/logs/a", 1024),
        ]);
        assert_eq!(
            exceeded(&pod(spec.clone()), &dir(), &over).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. ")
        );
        // One container without a limit: the pod has no total limit.
        let mut unlimited = spec;
        unlimited["containers"][1]["resources"] = json!({});
        assert_eq!(exceeded(&pod(unlimited), &dir(), &over), None);
        assert_eq!(quantity(3 << 30, true), "3Gi");
        assert_eq!(quantity(1536, true), "1536");
        assert_eq!(quantity(2_000_000, false), "2M");
    }

    #[test]
    fn disk_usage_counts_allocated_blocks() {
        let tmp = tempfile::tempdir().expect("test setup");
        let empty = disk_usage(tmp.path());
        std::fs::create_dir(tmp.path().join("sub")).expect("test setup");
        std::fs::write(tmp.path().join("sub/data"), vec![7u8; 1 << 20]).expect("test setup");
        std::fs::hard_link(tmp.path().join("sub/data"), tmp.path().join("link"))
            .expect("test setup");
        let used = disk_usage(tmp.path()) - empty;
        // One MiB of data (counted once for its two names), plus a directory.
        assert!((1 << 20..(1 << 20) + 64 * 1024).contains(&used), "{used}");
        assert_eq!(disk_usage(&tmp.path().join("missing")), 0);
    }
}
