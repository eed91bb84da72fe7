//! Image garbage collection under disk pressure, as the kubelet's image
//! manager does it: when the image filesystem is fuller than the high
//! threshold, unused images go, oldest first, until it is below the low
//! threshold; then blobs and unpacked layers no image names are swept.
//! Images younger than the minimum age stay, and a layer that a mounted
//! overlay still uses is never removed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::{ImageStore, Manifest, digest_hex, normalize};
use crate::{AgentError, NodeContext};

/// When images are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// Collect when the image filesystem is at least this full (percent);
    /// 100 turns collection off.
    pub high_percent: u8,
    /// Collect down to this (percent).
    pub low_percent: u8,
    /// Images tagged more recently than this are kept.
    pub min_age: Duration,
    /// How often usage is checked.
    pub interval: Duration,
}

impl Default for GcPolicy {
    /// The kubelet's defaults: 85 %, 80 %, 2 minutes, every 5 minutes.
    fn default() -> Self {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            interval: Duration::from_secs(300),
        }
    }
}

/// Keeps sweeps and writes (pulls) apart: a blob a pull has committed but
/// not yet named must not be swept.
#[derive(Debug, Default)]
pub(super) struct WriteGate {
    lock: std::sync::Mutex<()>,
    active: AtomicUsize,
}

/// A write in progress; sweeps wait for the store to be quiet.
pub struct WriteGuard(Arc<WriteGate>);

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An image that may go, and when it was tagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name.
    pub name: String,
    /// When its name was (last) pointed at its manifest.
    pub tagged: SystemTime,
}

/// The images to remove, oldest first: not in use and older than
/// `min_age` at `now`.
pub fn victims(
    mut held: Vec<Candidate>,
    in_use: &HashSet<String>,
    min_age: Duration,
    now: SystemTime,
) -> Vec<String> {
    held.retain(|c| {
        !in_use.contains(&c.name) && now.duration_since(c.tagged).is_ok_and(|age| age >= min_age)
    });
    held.sort_by(|a, b| a.tagged.cmp(&b.tagged).then_with(|| a.name.cmp(&b.name)));
    held.into_iter().map(|c| c.name).collect()
}

/// The layer directories that mounted overlays use (from mountinfo).
fn mounted_layers(mountinfo: &str) -> HashSet<PathBuf> {
    mountinfo
        .lines()
        .filter(|l| l.contains(" - overlay "))
        .flat_map(|l| l.split([',', ' ']))
        .filter_map(|opt| opt.strip_prefix("lowerdir="))
        .flat_map(|dirs| dirs.split(':'))
        .map(PathBuf::from)
        .collect()
}

impl ImageStore {
    /// Marks a write in progress until the guard is dropped.
    pub fn begin_write(&self) -> WriteGuard {
        let _quiet = self.gate.lock.lock();
        self.gate.active.fetch_add(1, Ordering::SeqCst);
        WriteGuard(self.gate.clone())
    }

    /// Every name and when it was tagged.
    pub fn tagged(&self) -> Result<Vec<Candidate>, AgentError> {
        let mut out = Vec::new();
        for name in self.names()? {
            let tagged = std::fs::metadata(self.ref_path(&name))?.modified()?;
            out.push(Candidate { name, tagged });
        }
        Ok(out)
    }

    /// Forgets the name `name` (its content goes with the next sweep).
    pub fn remove(&self, name: &str) -> Result<(), AgentError> {
        self.pin(name, false)?;
        match std::fs::remove_file(self.ref_path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Used and total bytes of the filesystem the store is on.
    pub fn usage(&self) -> Result<(u64, u64), AgentError> {
        let s = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| AgentError::Io(std::io::Error::from(e)))?;
        let frag = s.fragment_size();
        let total = s.blocks() * frag;
        Ok((total.saturating_sub(s.blocks_available() * frag), total))
    }

    /// Removes blobs and layers no name refers to; `None` when a write was
    /// in progress and nothing was swept. Returns how many entries went.
    pub fn sweep(&self) -> Result<Option<usize>, AgentError> {
        let Ok(_quiet) = self.gate.lock.lock() else {
            return Ok(None);
        };
        if self.gate.active.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        let mut live = HashSet::new();
        for name in self.names()? {
            let Ok(digest) = std::fs::read_to_string(self.ref_path(&name)) else {
                continue;
            };
            let digest = digest.trim().to_owned();
            live.insert(digest_hex(&digest)?.to_owned());
            let Ok(bytes) = std::fs::read(self.blob_path(&digest)?) else {
                continue;
            };
            let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
                continue;
            };
            live.insert(digest_hex(&manifest.config.digest)?.to_owned());
            for l in &manifest.layers {
                live.insert(digest_hex(&l.digest)?.to_owned());
            }
        }
        let mounted =
            mounted_layers(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let mut removed = 0;
        for dir in ["blobs/sha256", "layers/sha256"] {
            for entry in std::fs::read_dir(self.root.join(dir))? {
                let path = entry?.path();
                let hex = path.file_name().unwrap_or_default().to_string_lossy();
                if live.contains(hex.as_ref()) || mounted.contains(&path) {
                    continue;
                }
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
                removed += 1;
            }
        }
        Ok(Some(removed))
    }
}

/// The images the node's pods name (normalized).
async fn images_in_use(ctx: &NodeContext) -> Result<HashSet<String>, AgentError> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut out = HashSet::new();
    for pod in pods.list(&params).await? {
        let Some(spec) = pod.spec else { continue };
        let images = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .filter_map(|c| c.image.as_deref()),
            );
        out.extend(images.map(normalize));
    }
    Ok(out)
}

/// One collection: removes unused images while the filesystem is above the
/// low threshold (only once it reached the high one), then sweeps.
pub async fn collect(ctx: &NodeContext, policy: &GcPolicy) -> Result<Vec<String>, AgentError> {
    let store = &ctx.images;
    let percent = |(used, total): (u64, u64)| used.saturating_mul(100) / total.max(1);
    if policy.high_percent >= 100 || percent(store.usage()?) < u64::from(policy.high_percent) {
        return Ok(Vec::new());
    }
    let in_use = images_in_use(ctx).await?;
    let mut removed = Vec::new();
    for name in victims(store.tagged()?, &in_use, policy.min_age, SystemTime::now()) {
        if percent(store.usage()?) <= u64::from(policy.low_percent) {
            break;
        }
        store.remove(&name)?;
        store.sweep()?;
        tracing::info!(image = %name, "removed an unused image under disk pressure");
        removed.push(name);
    }
    Ok(removed)
}

/// Collects every `policy.interval` until the future is dropped.
pub async fn run(ctx: Arc<NodeContext>, policy: GcPolicy) {
    loop {
        tokio::time::sleep(policy.interval).await;
        if let Err(e) = collect(&ctx, &policy).await {
            tracing::warn!(error = %e, "image garbage collection failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn unused_old_images_go_oldest_first() {
        let held = vec![
            Candidate {
                name: "b".into(),
                tagged: at(200),
            },
            Candidate {
                name: "a".into(),
                tagged: at(100),
            },
            Candidate {
                name: "used".into(),
                tagged: at(50),
            },
            Candidate {
                name: "young".into(),
                tagged: at(990),
            },
        ];
        let in_use: HashSet<String> = ["used".to_owned()].into();
        assert_eq!(
            victims(held, &in_use, Duration::from_secs(60), at(1000)),
            ["a", "b"]
        );
    }

    #[test]
    fn mounted_overlays_name_their_layers() {
        let info = "1 2 0:50 / /run/x rw - overlay overlay rw,lowerdir=/d/l/aa:/d/l/bb,upperdir=/u,workdir=/w\n\
                    3 4 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let layers = mounted_layers(info);
        assert!(layers.contains(Path::new("/d/l/aa")));
        assert!(layers.contains(Path::new("/d/l/bb")));
        assert_eq!(layers.len(), 2);
    }

    #[test]
    fn a_sweep_waits_for_writes_and_keeps_named_content() {
        let dir = tempfile::tempdir().expect("test setup");
        let store = ImageStore::open(dir.path()).expect("store");
        let orphan = dir.path().join("blobs/sha256").join("ab".repeat(32));
        std::fs::write(&orphan, b"x").expect("blob");
        let writing = store.begin_write();
        assert_eq!(store.sweep().expect("sweep"), None, "a pull is running");
        assert!(orphan.exists());
        drop(writing);
        assert_eq!(store.sweep().expect("sweep"), Some(1));
        assert!(!orphan.exists());
    }
}
