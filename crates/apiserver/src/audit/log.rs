//! The audit log backend (and the fan-out to the webhook's): one JSON event per line, appended to a file by a
//! writer thread (so requests never wait on the disk), rotated by size, with
//! old files pruned by count and age, as upstream's `--audit-log-max*` flags.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, SystemTime};

/// Where and how the log is written.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// The file, or `-` for standard output.
    pub path: PathBuf,
    /// Rotate when the file would pass this many megabytes (0: never).
    pub max_size_mb: u64,
    /// Keep at most this many rotated files (0: all).
    pub max_backups: usize,
    /// Remove rotated files older than this many days (0: never).
    pub max_age_days: u64,
}

/// Where events go: a handle on the file's writer thread (events queued in
/// order) and the webhook's sending task, either or both.
#[derive(Clone, Default)]
pub struct AuditLog {
    lines: Option<Sender<Vec<u8>>>,
    webhook: Option<super::webhook::AuditWebhook>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log and starts its writer thread.
    pub fn open(options: LogOptions) -> std::io::Result<Self> {
        let sink = Sink::open(options)?;
        let (lines, rx) = channel();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || sink.run(rx))?;
        Ok(AuditLog {
            lines: Some(lines),
            webhook: None,
        })
    }

    /// Sends every event to `webhook` too.
    pub fn with_webhook(mut self, webhook: super::webhook::AuditWebhook) -> Self {
        self.webhook = Some(webhook);
        self
    }

    /// Queues one event, serialized as a line, and for the webhook.
    pub fn write(&self, event: &serde_json::Value) {
        if let Some(webhook) = &self.webhook {
            webhook.send(event);
        }
        let Some(lines) = &self.lines else {
            return;
        };
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize an audit event");
                return;
            }
        };
        line.push(b'\n');
        if lines.send(line).is_err() {
            tracing::warn!("the audit log writer has stopped; event dropped");
        }
    }
}

enum Output {
    Stdout,
    File { file: BufWriter<File>, size: u64 },
}

struct Sink {
    options: LogOptions,
    out: Output,
}

fn open_append(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Audit events carry request bodies: readable by the server's user only.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

/// `audit.log` → `audit-2026-12-02T15-04-05.000.log`, as upstream's
/// lumberjack names backups.
fn backup_name(path: &Path, now: SystemTime) -> PathBuf {
    let stamp = chrono::DateTime::<chrono::Utc>::from(now).format("%Y-%m-%dT%H-%M-%S%.3f");
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{stamp}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{stamp}"),
    };
    path.with_file_name(name)
}

impl Sink {
    fn open(options: LogOptions) -> std::io::Result<Self> {
        let out = if options.path.as_os_str() == "-" {
            Output::Stdout
        } else {
            let (file, size) = open_append(&options.path)?;
            Output::File { file, size }
        };
        Ok(Sink { options, out })
    }

    /// Writes lines until every handle is dropped, flushing whenever the
    /// queue runs dry so that the file is current when the server is idle.
    fn run(mut self, rx: Receiver<Vec<u8>>) {
        let Ok(mut line) = rx.recv() else { return };
        loop {
            if let Err(e) = self.append(&line) {
                tracing::warn!(error = %e, "writing the audit log failed");
            }
            line = match rx.try_recv() {
                Ok(l) => l,
                Err(TryRecvError::Empty) => {
                    self.flush();
                    match rx.recv() {
                        Ok(l) => l,
                        Err(_) => return,
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    self.flush();
                    return;
                }
            };
        }
    }

    fn flush(&mut self) {
        let flushed = match &mut self.out {
            Output::Stdout => std::io::stdout().flush(),
            Output::File { file, .. } => file.flush(),
        };
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "flushing the audit log failed");
        }
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let limit = self.options.max_size_mb.saturating_mul(1024 * 1024);
        if let Output::File { size, .. } = &self.out
            && limit > 0
            && *size > 0
            && *size + line.len() as u64 > limit
        {
            self.rotate()?;
        }
        match &mut self.out {
            Output::Stdout => std::io::stdout().write_all(line),
            Output::File { file, size } => {
                file.write_all(line)?;
                *size += line.len() as u64;
                Ok(())
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.flush();
        let path = self.options.path.clone();
        std::fs::rename(&path, backup_name(&path, SystemTime::now()))?;
        let (file, size) = open_append(&path)?;
        self.out = Output::File { file, size };
        self.prune();
        Ok(())
    }

    /// Removes backups beyond the count and age limits, oldest first.
    fn prune(&self) {
        let path = &self.options.path;
        let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{}-", stem.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        // Backup names sort by their timestamps.
        let mut backups: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p != path
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        backups.sort();
        let max_age = Duration::from_secs(self.options.max_age_days.saturating_mul(86_400));
        let keep_from = match self.options.max_backups {
            0 => 0,
            n => backups.len().saturating_sub(n),
        };
        for (i, backup) in backups.iter().enumerate() {
            let too_old = self.options.max_age_days > 0
                && std::fs::metadata(backup)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > max_age);
            if (i < keep_from || too_old)
                && let Err(e) = std::fs::remove_file(backup)
            {
                tracing::warn!(error = %e, path = %backup.display(), "removing an old audit log failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn appends_lines_in_order_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.log");
        let mut sink = Sink::open(LogOptions {
            path: path.clone(),
            max_size_mb: 1,
            max_backups: 2,
            max_age_days: 0,
        })
        .expect("open");
        // 300 KiB lines: the fourth of each group of three rotates.
        let line = |i: usize| {
            let mut l = format!("{i:06}").into_bytes();
            l.resize(300 * 1024, b'x');
            l.push(b'\n');
            l
        };
        for i in 0..4 {
            sink.append(&line(i)).expect("append");
            // Distinct backup timestamps.
            std::thread::sleep(Duration::from_millis(5));
        }
        sink.flush();
        let current = read_lines(&path);
        assert_eq!(current.len(), 1);
        assert!(current[0].starts_with("000003"));
        let names = |dir: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(dir)
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let files = names(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].starts_with("audit-") && files[0].ends_with(".log"));
        for i in 4..10 {
            sink.append(&line(i)).expect("append");
            std::thread::sleep(Duration::from_millis(5));
        }
        sink.flush();
        // The current file and at most two backups.
        assert_eq!(names(dir.path()).len(), 3, "{:?}", names(dir.path()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_writer_thread_writes_what_is_queued() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub").join("audit.log");
        let log = AuditLog::open(LogOptions {
            path: path.clone(),
            max_size_mb: 0,
            max_backups: 0,
            max_age_days: 0,
        })
        .expect("open");
        for i in 0..50 {
            log.write(&serde_json::json!({ "n": i }));
        }
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read_lines(&path).len() < 50 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 50);
        assert_eq!(lines[49], "{\"n\":49}");
    }
}
