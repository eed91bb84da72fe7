//! `kubectl attach`: a WebSocket session (`v5.channel.k8s.io`) on a running
//! container. Output is what the container writes from now on, read from
//! the log its monitor keeps; input goes through the named pipe its monitor
//! copies into the container's standard input (containers with `stdin:
//! true`), and leaving closes that input for a `stdinOnce` container; a
//! terminal container's size follows the client's. The session ends when
//! the container does, or when the client leaves (the container runs on).

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::StreamOptions;
use super::channel::{self, ClientMessage};
use crate::endpoint::logs::Follower;

/// Where one run of a container keeps what attach needs.
#[derive(Debug, Clone)]
pub struct AttachTarget {
    /// The run's CRI log.
    pub log: PathBuf,
    /// The exit record that appears when the run ends.
    pub exit_file: PathBuf,
    /// The run's process ID, whose terminal (if it has one) is resized.
    pub pid_file: PathBuf,
    /// The run's standard input, if it has one.
    pub stdin_fifo: Option<PathBuf>,
}

/// The channel and content of one CRI log line (a newline added unless the
/// line is partial).
fn cri_output(line: &str) -> Option<(u8, String)> {
    let mut parts = line.splitn(4, ' ');
    let _time = parts.next()?;
    let channel = match parts.next()? {
        "stdout" => channel::STDOUT,
        "stderr" => channel::STDERR,
        _ => return None,
    };
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    let newline = if tag == "P" { "" } else { "\n" };
    Some((channel, format!("{content}{newline}")))
}

/// Sends new log lines on the wanted channels until the run ends.
async fn relay_output(
    mut log: Follower,
    target: AttachTarget,
    opts: StreamOptions,
    tx: mpsc::Sender<Message>,
) {
    loop {
        let ended = target.exit_file.exists();
        let Ok(text) = log.read() else { return };
        for (ch, content) in text.lines().filter_map(cri_output) {
            let wanted = match ch {
                channel::STDOUT => opts.stdout,
                _ => opts.stderr || (opts.tty && opts.stdout),
            };
            if wanted
                && tx
                    .send(Message::Binary(
                        channel::frame(ch, content.as_bytes()).into(),
                    ))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if ended {
            return;
        }
        // A terminal's echo should feel immediate.
        let pause = if opts.tty { 15 } else { 50 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Opens the container's input door for writing. The monitor waits on it
/// for one client at a time, and reopens it after each: a moment's refusal
/// is retried, a lasting one (the input was closed after a `stdinOnce`
/// client, or the container is gone) means no input.
async fn open_input(fifo: &std::path::Path) -> Option<tokio::net::unix::pipe::Sender> {
    let deadline = tokio::time::Instant::now() + INPUT_WAIT;
    loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(fifo) {
            Ok(sender) => return Some(sender),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::debug!(fifo = %fifo.display(), error = %e, "no input door");
                return None;
            }
        }
    }
}

/// How long a session waits for the monitor to take its input.
const INPUT_WAIT: Duration = Duration::from_secs(1);

/// Runs one attach session on an upgraded WebSocket.
pub async fn session(socket: WebSocket, target: AttachTarget, opts: StreamOptions) {
    let (tx, mut source, writer) = super::split_session(socket);
    let log = match Follower::at_end(target.log.clone()) {
        Ok(l) => l,
        Err(e) => {
            let msg = channel::failure(&format!("reading the container's output: {e}"));
            let _ = tx.send(Message::Binary(msg.into())).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let mut stdin = match (&target.stdin_fifo, opts.stdin) {
        (Some(fifo), true) => open_input(fifo).await,
        _ => None,
    };
    let output = relay_output(log, target.clone(), opts.clone(), tx.clone());
    let input = async {
        loop {
            let message = match source.next().await {
                Some(Ok(Message::Binary(b))) => channel::parse(&b),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            };
            match message {
                ClientMessage::Stdin(bytes) => {
                    if let Some(w) = stdin.as_mut()
                        && (w.write_all(&bytes).await.is_err() || w.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                // This client is done writing: the monitor closes the
                // container's input if it is `stdinOnce`.
                ClientMessage::CloseStdin => stdin = None,
                ClientMessage::Resize { width, height } if opts.tty => {
                    super::size_process_terminal(&target.pid_file, width, height);
                }
                ClientMessage::Resize { .. } | ClientMessage::Ignored => {}
            }
        }
    };
    tokio::select! {
        () = output => {
            let done = channel::exit_status(&[], 0);
            let _ = tx.send(Message::Binary(done.into())).await;
        }
        () = input => {}
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_go_to_their_streams() {
        assert_eq!(
            cri_output("2026-01-01T00:00:00Z stdout F hello"),
            Some((channel::STDOUT, "hello\n".into()))
        );
        assert_eq!(
            cri_output("2026-01-01T00:00:00Z stderr P par"),
            Some((channel::STDERR, "par".into()))
        );
        assert_eq!(cri_output("garbage"), None);
    }
}
