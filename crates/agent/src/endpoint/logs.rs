//! Container logs for `kubectl logs`: reads the CRI-format files the monitor
//! writes and renders them with the options of `pods/log` (tail, since,
//! timestamps, limit, previous, follow).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// The options of a `pods/log` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container ends.
    pub follow: bool,
    /// The run before the current one.
    pub previous: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only lines from the last N seconds.
    pub since_seconds: Option<i64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    /// Parses a query string; unknown keys are ignored, bad values refused.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut o = LogOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let flag = || v == "true" || v == "1";
            let number = |what: &str| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("invalid {what}: {v:?}"))
            };
            match k {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => o.tail_lines = Some(number(k)? as usize),
                "sinceSeconds" => o.since_seconds = Some(number(k)?),
                "limitBytes" => o.limit_bytes = Some(number(k)?.max(1) as usize),
                _ => {}
            }
        }
        Ok(o)
    }
}

/// One CRI log line: time, and content with its newline if it ended a line.
fn parse_line(line: &str) -> Option<(&str, String)> {
    let mut parts = line.splitn(4, ' ');
    let ts = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    let newline = if tag == "P" { "" } else { "\n" };
    Some((ts, format!("{content}{newline}")))
}

/// Renders complete CRI lines for the reader.
pub fn render(text: &str, opts: &LogOptions, now: DateTime<Utc>) -> String {
    let since = opts
        .since_seconds
        .map(|s| now - chrono::Duration::seconds(s));
    let mut lines: Vec<String> = text
        .lines()
        .filter_map(parse_line)
        .filter(|(ts, _)| {
            since.is_none_or(|since| {
                DateTime::parse_from_rfc3339(ts).is_ok_and(|t| t.with_timezone(&Utc) >= since)
            })
        })
        .map(|(ts, content)| {
            if opts.timestamps {
                format!("{ts} {content}")
            } else {
                content
            }
        })
        .collect();
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines.concat()
}

/// Where one run's log is, and how to tell it has ended.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// The CRI log file.
    pub file: PathBuf,
    /// The exit record that appears when the run ends.
    pub exit_file: PathBuf,
}

/// Reads a log as it grows, across the monitor's rotations: the file it
/// has open is read to its end before it moves to the file that now has
/// the log's name.
pub(crate) struct Follower {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// A last line not yet complete.
    partial: Vec<u8>,
}

impl Follower {
    fn new(path: PathBuf) -> Self {
        Follower {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    /// A follower of what is appended from now on.
    pub(crate) fn at_end(path: PathBuf) -> std::io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::open(&path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Follower {
            path,
            file: Some(file),
            partial: Vec::new(),
        })
    }

    /// The complete lines appended since the last call.
    pub(crate) fn read(&mut self) -> std::io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let mut buf = std::mem::take(&mut self.partial);
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(&self.path)?);
        }
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(&mut buf)?;
            let rotated = match (std::fs::metadata(&self.path), f.metadata()) {
                (Ok(named), Ok(open)) => named.ino() != open.ino(),
                _ => false,
            };
            if rotated {
                // What was written before the rename, then the new file.
                f.read_to_end(&mut buf)?;
                let mut next = std::fs::File::open(&self.path)?;
                next.read_to_end(&mut buf)?;
                self.file = Some(next);
            }
        }
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = buf.split_off(complete);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The log as a stream of chunks: what is there now, then (with `follow`)
/// what is appended until the run ends.
pub fn stream(
    source: LogSource,
    opts: LogOptions,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    struct State {
        source: LogSource,
        opts: LogOptions,
        log: Follower,
        sent: usize,
        first: bool,
        done: bool,
    }
    let state = State {
        log: Follower::new(source.file.clone()),
        source,
        opts,
        sent: 0,
        first: true,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let ended = s.source.exit_file.exists();
            let text = match s.log.read() {
                Ok(t) => t,
                Err(e) => return Some((Err(e), State { done: true, ..s })),
            };
            let mut opts = s.opts.clone();
            if !s.first {
                opts.tail_lines = None;
            }
            let mut out = render(&text, &opts, Utc::now());
            s.first = false;
            if let Some(limit) = s.opts.limit_bytes {
                let room = limit.saturating_sub(s.sent);
                if out.len() >= room {
                    let mut cut = room;
                    while !out.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    out.truncate(cut);
                    s.done = true;
                }
            }
            if !s.opts.follow || ended {
                s.done = true;
            }
            if !out.is_empty() {
                s.sent += out.len();
                return Some((Ok(Bytes::from(out)), s));
            }
            if s.done {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:00.000000001Z stdout F one\n\
        2026-01-01T00:00:05Z stderr P tw\n\
        2026-01-01T00:00:05Z stderr F o\n\
        2026-01-01T00:00:09Z stdout F three\n";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn lines_render_with_tail_since_and_timestamps() {
        let now = at("2026-01-01T00:00:10Z");
        let all = LogOptions::default();
        assert_eq!(render(LOG, &all, now), "one\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(render(LOG, &tail, now), "three\n");
        let since = LogOptions {
            since_seconds: Some(6),
            ..Default::default()
        };
        assert_eq!(render(LOG, &since, now), "two\nthree\n");
        let ts = LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(render(LOG, &ts, now), "2026-01-01T00:00:09Z three\n");
    }

    #[test]
    fn options_parse_and_refuse_bad_numbers() {
        let o = LogOptions::parse("follow=true&tailLines=5&timestamps=true&x=y").expect("parse");
        assert!(o.follow && o.timestamps);
        assert_eq!(o.tail_lines, Some(5));
        assert!(LogOptions::parse("tailLines=-1").is_err());
        assert!(LogOptions::parse("sinceSeconds=abc").is_err());
    }

    #[tokio::test]
    async fn a_followed_log_ends_when_the_run_ends() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().expect("dir");
        let source = LogSource {
            file: dir.path().join("0.log"),
            exit_file: dir.path().join("exit"),
        };
        std::fs::write(&source.file, "2026-01-01T00:00:00Z stdout F a\n").expect("write");
        let opts = LogOptions {
            follow: true,
            limit_bytes: None,
            ..Default::default()
        };
        let mut s = Box::pin(stream(source.clone(), opts));
        assert_eq!(s.next().await.expect("chunk").expect("ok"), "a\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&source.file)
            .expect("open");
        std::io::Write::write_all(&mut f, b"2026-01-01T00:00:01Z stdout F b\n").expect("append");
        assert_eq!(s.next().await.expect("chunk").expect("ok"), "b\n");
        // The monitor rotates: a line lands in the old file just before
        // the rename, the next ones in the new file.
        std::io::Write::write_all(&mut f, b"2026-01-01T00:00:02Z stdout F c\n").expect("append");
        std::fs::rename(
            &source.file,
            dir.path().join("0.log.20260101-000002.000000"),
        )
        .expect("rotate");
        std::fs::write(&source.file, "2026-01-01T00:00:03Z stdout F d\n").expect("new file");
        let mut seen = String::new();
        while seen != "c\nd\n" {
            let chunk = s.next().await.expect("chunk").expect("ok");
            seen.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            assert!(seen.len() <= 4, "{seen:?}");
        }
        std::fs::write(&source.exit_file, "{}").expect("exit");
        assert!(s.next().await.is_none());
    }
}
