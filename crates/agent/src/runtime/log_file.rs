//! A container's CRI log file, rotated by its monitor at a size and pruned
//! to a number of files, as the kubelet's `containerLogMaxSize` and
//! `containerLogMaxFiles` do: the current file keeps its name, older ones
//! get a timestamp suffix (`0.log.20260102-030405.000001`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// When to rotate and how many files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPolicy {
    /// Rotate once the current file reaches this many bytes.
    pub max_size: u64,
    /// Files kept, the current one included (at least 2).
    pub max_files: u32,
}

impl Default for LogPolicy {
    /// The kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Self {
        LogPolicy {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// The open log and its rotation state.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    policy: LogPolicy,
}

/// The rotated files of `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    // The suffix is a fixed-width timestamp, so names sort by age.
    out.sort();
    out
}

impl RotatingLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, policy: LogPolicy) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_owned(),
            file,
            size,
            policy,
        })
    }

    /// Appends whole CRI lines, rotating first if the file is full.
    pub fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + lines.len() as u64 > self.policy.max_size {
            self.rotate()?;
        }
        self.file.write_all(lines)?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S%.6f");
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{stamp}"));
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        let old = rotated_files(&self.path);
        let keep = self.policy.max_files.max(2) as usize - 1;
        for extra in old.iter().take(old.len().saturating_sub(keep)) {
            std::fs::remove_file(extra)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_at_the_size_and_keep_the_newest_files() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("0.log");
        let policy = LogPolicy {
            max_size: 100,
            max_files: 3,
        };
        let mut log = RotatingLog::open(&path, policy).expect("open");
        for i in 0..20 {
            log.write(format!("line {i:02} {}\n", "x".repeat(20)).as_bytes())
                .expect("write");
        }
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let current = std::fs::read_to_string(&path).expect("current");
        assert!(current.len() <= 100);
        assert!(current.ends_with(&format!("line 19 {}\n", "x".repeat(20))));
        // Whole lines only, and the newest rotated file holds what came
        // just before the current one.
        let newest = std::fs::read_to_string(&rotated[1]).expect("rotated");
        let first_current: u32 = current[5..7].parse().expect("number");
        assert!(newest.contains(&format!("line {:02} ", first_current - 1)));
        assert!(!rotated[0].to_string_lossy().ends_with(".log"));
    }
}
