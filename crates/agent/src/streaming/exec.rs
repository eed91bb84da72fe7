//! `kubectl exec`: runs a command in a running container (`runc exec`) and
//! carries its stdio over the channel protocol; with `tty`, on a
//! pseudo-terminal whose size follows the client's.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{self, ClientMessage};
use super::{StreamOptions, winsize};
use crate::runtime::ContainerRuntime;

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A pseudo-terminal's controlling side, and the processes behind it.
struct Terminal {
    master: OwnedFd,
    /// runc copies between our terminal and the container's; a SIGWINCH
    /// makes it pass our new size on.
    runc_pid: Option<u32>,
    /// Where runc writes the exec'd process's pid, whose own terminal the
    /// agent sizes directly: runc's relay of the size can come too late or
    /// not at all, as containerd found too.
    pid_file: tempfile::TempPath,
    /// The size last asked for: `(width, height)`.
    size: std::sync::Mutex<(u16, u16)>,
}

impl Terminal {
    fn resize(&self, width: u16, height: u16) {
        if let Ok(mut s) = self.size.lock() {
            *s = (width, height);
        }
        let size = winsize(width, height);
        if rustix::termios::tcsetwinsize(&self.master, size).is_err() {
            return;
        }
        self.nudge();
    }

    /// Passes the size on: SIGWINCH to runc, and the size set on the
    /// container process's terminal itself.
    fn nudge(&self) {
        if let Some(pid) = self.runc_pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGWINCH,
            );
        }
        if let Ok((width, height)) = self.size.lock().map(|s| *s) {
            // The process's stdin is the terminal runc made for it.
            super::size_process_terminal(&self.pid_file, width, height);
        }
    }
}

/// The exec'd process and its ends of stdio.
struct Spawned {
    child: tokio::process::Child,
    stdin: Option<Writer>,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
    terminal: Option<Terminal>,
}

/// Opens a pseudo-terminal: its controlling side and its terminal side.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
    // Raw: the container's own terminal does the echoing and line editing.
    let mut mode = rustix::termios::tcgetattr(&master)?;
    mode.make_raw();
    rustix::termios::tcsetattr(&master, rustix::termios::OptionalActions::Now, &mode)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((master, slave))
}

fn spawn(
    runtime: &dyn ContainerRuntime,
    id: &str,
    opts: &StreamOptions,
    (width, height): (u16, u16),
) -> std::io::Result<Spawned> {
    use std::process::Stdio;
    if opts.tty {
        let (master, slave) = open_pty()?;
        let pid_file = tempfile::Builder::new()
            .prefix("kybern-exec-")
            .suffix(".pid")
            .tempfile()?
            .into_temp_path();
        // runc writes the file once the process runs; until then there is
        // none, rather than an empty one.
        std::fs::remove_file(&pid_file)?;
        let mut cmd = runtime.exec_command(id, &opts.command, true, Some(&pid_file));
        let terminal = Terminal {
            master,
            runc_pid: None,
            pid_file,
            size: std::sync::Mutex::new((width, height)),
        };
        terminal.resize(width, height);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        // `cmd` holds the terminal side until dropped: without that, reads
        // of the controlling side would never end.
        drop(cmd);
        let file = std::fs::File::from(terminal.master.try_clone()?);
        let reader = tokio::fs::File::from_std(file.try_clone()?);
        let writer = tokio::fs::File::from_std(file);
        return Ok(Spawned {
            terminal: Some(Terminal {
                runc_pid: child.id(),
                ..terminal
            }),
            child,
            stdin: opts.stdin.then(|| Box::new(writer) as Writer),
            stdout: Some(Box::new(reader)),
            stderr: None,
        });
    }
    let mut cmd = runtime.exec_command(id, &opts.command, false, None);
    let pipe = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    cmd.stdin(pipe(opts.stdin))
        .stdout(pipe(opts.stdout))
        .stderr(pipe(opts.stderr));
    let mut child = cmd.spawn()?;
    Ok(Spawned {
        stdin: child.stdin.take().map(|s| Box::new(s) as Writer),
        stdout: child.stdout.take().map(|s| Box::new(s) as Reader),
        stderr: child.stderr.take().map(|s| Box::new(s) as Reader),
        terminal: None,
        child,
    })
}

/// Copies `from` to the client on `channel` until it ends. A terminal's
/// controlling side reports EIO once the process has gone: that is its end.
fn pump(mut from: Reader, channel: u8, to: mpsc::Sender<Message>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let msg = Message::Binary(channel::frame(channel, &buf[..n]).into());
                    if to.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one exec session on an upgraded WebSocket.
pub async fn session(
    socket: WebSocket,
    runtime: Arc<dyn ContainerRuntime>,
    id: String,
    opts: StreamOptions,
) {
    let (tx, mut source, writer) = super::split_session(socket);
    // kubectl sends the terminal's size first thing: waiting a moment for
    // it lets the process start at the right size instead of 80x24.
    let mut size = (80, 24);
    // Whatever else comes first (stdin, pings) waits until the size is
    // known, so that a first non-resize message does not start the process
    // at the default size.
    let mut pending = std::collections::VecDeque::new();
    if opts.tty {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, source.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => match channel::parse(&b) {
                    ClientMessage::Resize { width, height } => {
                        size = (width, height);
                        break;
                    }
                    other => pending.push_back(other),
                },
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(_))) => {}
                Err(_) => break,
            }
        }
    }
    let mut p = match spawn(runtime.as_ref(), &id, &opts, size) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "exec failed to start");
            let msg = channel::failure(&format!("failed to exec in container: {e}"));
            let _ = tx.send(Message::Binary(msg.into())).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let pumps: Vec<_> = [
        (p.stdout.take(), channel::STDOUT),
        (p.stderr.take(), channel::STDERR),
    ]
    .into_iter()
    .filter_map(|(r, ch)| r.map(|r| pump(r, ch, tx.clone())))
    .collect();
    let (mut stdin, terminal) = (p.stdin.take(), p.terminal.take());
    let terminal = terminal.map(Arc::new);
    // runc copies our size to the container's terminal once it has one; a
    // SIGWINCH that reaches runc before its handler is set is lost, so nudge
    // it again while it starts (each nudge just re-copies the size), until
    // the process runs (a loaded node can take seconds) and a little after,
    // when the agent sizes the process's terminal itself. Stopped with the
    // session, so no signal goes to a recycled pid.
    let nudger = terminal.clone().map(|t| {
        AbortOnDrop(tokio::spawn(async move {
            for _ in 0..300 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                t.nudge();
                if t.pid_file.exists() {
                    break;
                }
            }
            for ms in [100, 400, 1500] {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                t.nudge();
            }
        }))
    });
    let input = async move {
        let mut pending = pending;
        loop {
            let message = match pending.pop_front() {
                Some(m) => m,
                None => match source.next().await {
                    Some(Ok(Message::Binary(b))) => channel::parse(&b),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                },
            };
            match message {
                ClientMessage::Stdin(bytes) => {
                    if let Some(w) = stdin.as_mut()
                        && (w.write_all(&bytes).await.is_err() || w.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                ClientMessage::CloseStdin => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                ClientMessage::Resize { width, height } => {
                    if let Some(t) = &terminal {
                        t.resize(width, height);
                    }
                }
                ClientMessage::Ignored => {}
            }
        }
    };
    let code = tokio::select! {
        status = p.child.wait() => match status {
            Ok(s) => s.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(9)
            }),
            Err(_) => 137,
        },
        () = input => {
            // The client went away: so does the process.
            let _ = p.child.kill().await;
            drop(tx);
            for pump in pumps {
                pump.abort();
            }
            let _ = writer.await;
            return;
        }
    };
    drop(nudger);
    // Output still in pipes arrives; background children of the command
    // that keep them open do not hold the session up for long.
    for pump in pumps {
        let abort = pump.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), pump)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let _ = tx
        .send(Message::Binary(
            channel::exit_status(&opts.command, code).into(),
        ))
        .await;
    drop(tx);
    let _ = writer.await;
}
