//! The monitor's side of a container's standard streams: output copied into
//! the CRI log, the named pipe through which attached clients reach its
//! input, and the console runc hands over for a container with a terminal.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::log_file::RotatingLog;
use crate::AgentError;

/// A CRI log line longer than this is split into partial (`P`) lines.
pub const MAX_LINE: usize = 16 * 1024;

/// Copies `input` into the log as it comes: each complete line as a full
/// (`F`) CRI line, and what is left of a read without its newline at once
/// as a partial (`P`) one, as conmon does, so a shell's prompt reaches an
/// attached terminal before its user presses enter.
pub fn copy_output(mut input: impl Read, stream: &str, log: &Mutex<RotatingLog>) {
    let mut buf = vec![0u8; MAX_LINE];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO from a console whose terminal side is closed: the end.
            Err(_) => return,
        };
        let encoded = cri_chunk(chrono::Utc::now(), stream, &buf[..n]);
        if let Ok(mut f) = log.lock() {
            // A line at a time: the log rotates between lines, never
            // letting one read's worth of lines run past its size.
            for line in encoded.split_inclusive(|&b| b == b'\n') {
                let _ = f.write(line);
            }
        }
    }
}

/// One read's worth of output as CRI lines: complete lines as `F`, a
/// trailing piece without a newline as `P`.
fn cri_chunk(at: chrono::DateTime<chrono::Utc>, stream: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 48);
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        out.extend(cri_lines(at, stream, &rest[..end], true));
        rest = &rest[end + 1..];
    }
    if !rest.is_empty() {
        out.extend(cri_lines(at, stream, rest, false));
    }
    out
}

/// `text` as CRI log lines, `<RFC 3339 nano time> <stream> <P|F> <content>`,
/// of at most [`MAX_LINE`] bytes each: all partial but the last, which is
/// full when `complete`.
pub fn cri_lines(
    at: chrono::DateTime<chrono::Utc>,
    stream: &str,
    text: &[u8],
    complete: bool,
) -> Vec<u8> {
    let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let last = if complete { "F" } else { "P" };
    let mut out = Vec::with_capacity(text.len() + 48);
    let mut chunks = text.chunks(MAX_LINE).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(format!("{ts} {stream} {last} \n").as_bytes());
    }
    while let Some(chunk) = chunks.next() {
        let tag = if chunks.peek().is_some() { "P" } else { last };
        out.extend_from_slice(format!("{ts} {stream} {tag} ").as_bytes());
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out
}

/// The named pipe through which attached clients write to a container's
/// standard input. The monitor reads it one client at a time and copies
/// into the container's real input (a pipe, or its console), which it alone
/// holds open for writing: so the container sees end-of-file only when
/// the monitor says so, after the first client with `stdinOnce`.
#[derive(Debug, Clone)]
pub struct StdinDoor {
    fifo: PathBuf,
    once: bool,
}

impl StdinDoor {
    /// Makes the named pipe (kept if it exists: a restarted monitor reuses
    /// it). With `once`, the container's input closes when the first client
    /// that wrote to it leaves.
    pub fn create(fifo: &Path, once: bool) -> Result<Self, AgentError> {
        match nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(AgentError::Io(e.into())),
        }
        Ok(StdinDoor {
            fifo: fifo.to_owned(),
            once,
        })
    }

    /// Copies each client's input into `input` on a thread of its own,
    /// which ends when the container's input closes (or the monitor does).
    pub fn serve(self, mut input: impl Write + Send + 'static) {
        std::thread::spawn(move || {
            loop {
                // Waits for a client to open the pipe for writing.
                let Ok(mut client) = std::fs::File::open(&self.fifo) else {
                    return;
                };
                if std::io::copy(&mut client, &mut input).is_err() {
                    // The container closed its input, or is gone.
                    return;
                }
                if self.once {
                    // Dropping `input` closes the container's standard input.
                    return;
                }
            }
        });
    }
}

/// The socket on which runc hands over the controlling side of a
/// container's terminal (`runc run --console-socket`).
#[derive(Debug)]
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens at a short path of its own: a socket's path may not exceed
    /// 107 bytes, which a container's run directory can.
    pub fn bind() -> Result<Self, AgentError> {
        let path = std::env::temp_dir().join(format!("kybern-console-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The socket's path, for runc.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The terminal's controlling side, once runc has sent it: runc sends
    /// it while it creates the container, before `runc run --detach`
    /// returns, so by then it waits in the socket.
    pub fn receive(&self, timeout: Duration) -> Result<OwnedFd, AgentError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(AgentError::Runtime("runc sent no console".into()));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        receive_fd(&stream)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives one file descriptor passed with `SCM_RIGHTS` on `stream`.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> Result<OwnedFd, AgentError> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut name = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        stream,
        &mut [std::io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| AgentError::Io(e.into()))?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(AgentError::Runtime(
        "runc's console message carried no terminal".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .expect("test setup")
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn lines_are_cri_formatted_and_long_ones_split() {
        let out = cri_lines(at(), "stdout", b"hello", true);
        assert_eq!(out, b"2026-01-02T03:04:05.123456789Z stdout F hello\n");
        let long = vec![b'x'; MAX_LINE + 3];
        let out = String::from_utf8(cri_lines(at(), "stderr", &long, true)).expect("test setup");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(" stderr P "));
        assert!(lines[1].ends_with(" stderr F xxx"));
        assert!(cri_lines(at(), "stdout", b"", true).ends_with(b"stdout F \n"));
    }

    #[test]
    fn a_read_without_its_newline_is_a_partial_line() {
        let out = String::from_utf8(cri_chunk(at(), "stdout", b"one\ntwo\n/ # ")).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].ends_with(" stdout F one"));
        assert!(lines[1].ends_with(" stdout F two"));
        assert!(lines[2].ends_with(" stdout P / # "), "{out}");
        // A piece that holds an F of its own is still tagged P.
        let out = String::from_utf8(cri_chunk(at(), "stdout", b"F F")).expect("utf-8");
        assert!(out.ends_with(" stdout P F F\n"), "{out}");
        assert!(cri_chunk(at(), "stdout", b"").is_empty());
    }

    #[test]
    fn output_rotates_between_lines_however_much_one_read_holds() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("0.log");
        let policy = crate::runtime::log_file::LogPolicy {
            max_size: 1024,
            max_files: 3,
        };
        let log = Mutex::new(RotatingLog::open(&path, policy).expect("test setup"));
        // 8 KiB of lines in one read.
        let text: String = (0..200)
            .map(|i| format!("line {i:03} of the output\n"))
            .collect();
        copy_output(text.as_bytes(), "stdout", &log);
        for entry in std::fs::read_dir(dir.path()).expect("test setup").flatten() {
            let size = entry.metadata().expect("test setup").len();
            assert!(size <= 1024, "{:?} holds {size} bytes", entry.file_name());
        }
        let current = std::fs::read_to_string(&path).expect("test setup");
        assert!(
            current.ends_with(" stdout F line 199 of the output\n"),
            "{current}"
        );
    }

    #[test]
    fn the_door_closes_the_input_after_the_first_client_when_once() {
        let dir = tempfile::tempdir().expect("test setup");
        let fifo = dir.path().join("stdin");
        let (mut reader, writer) = std::io::pipe().expect("test setup");
        StdinDoor::create(&fifo, true).expect("door").serve(writer);
        let mut client = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open the door");
        client.write_all(b"hello\n").expect("write");
        drop(client);
        let mut got = String::new();
        // End-of-file comes: the door closed the input after the client.
        reader.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello\n");
    }

    #[test]
    fn the_door_stays_open_across_clients_otherwise() {
        let dir = tempfile::tempdir().expect("test setup");
        let fifo = dir.path().join("stdin");
        let (reader, writer) = std::io::pipe().expect("test setup");
        StdinDoor::create(&fifo, false).expect("door").serve(writer);
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(reader));
        for word in ["first", "second"] {
            let mut client = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open the door");
            writeln!(client, "{word}").expect("write");
            drop(client);
            let line = lines.next().expect("a line").expect("read");
            assert_eq!(line, word);
        }
    }
}
