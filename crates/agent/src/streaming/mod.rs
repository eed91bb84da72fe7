//! Streaming into pods, the kubelet's `/exec`, `/attach` and `/portForward`:
//! WebSocket sessions (`v5.channel.k8s.io`, and SPDY tunnelled in a
//! WebSocket for port-forward) that the API server passes through from
//! kubectl unchanged.

pub mod attach;
pub mod channel;
pub mod exec;
pub mod portforward;
pub mod spdy;
pub mod tunnel;

use std::path::PathBuf;

use crate::NodeContext;
use crate::worker::state::{PodDir, Run, history};

/// What a client asked of `exec` or `attach`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The command (`command=` repeated), for exec.
    pub command: Vec<String>,
    /// Standard input is sent.
    pub stdin: bool,
    /// Standard output is wanted.
    pub stdout: bool,
    /// Standard error is wanted (never with a terminal).
    pub stderr: bool,
    /// The process runs on a terminal.
    pub tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T")
}

impl StreamOptions {
    /// Parses a query string as kubectl writes it.
    pub fn parse(query: &str) -> Result<StreamOptions, String> {
        let mut o = StreamOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| format!("invalid {k} in the query"))?;
            match k {
                "command" => o.command.push(v),
                "input" | "stdin" => o.stdin = truthy(&v),
                "output" | "stdout" => o.stdout = truthy(&v),
                "error" | "stderr" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                _ => {}
            }
        }
        if o.tty {
            // A terminal merges the two output streams.
            o.stderr = false;
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(o)
    }
}

/// A terminal size as the kernel takes it.
pub(crate) fn winsize(width: u16, height: u16) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Sizes the terminal that is the standard input of the process named in
/// `pid_file` (a host pid, as runc writes it); setting it also signals the
/// terminal's foreground process group. Nothing happens when the process
/// is not there yet or its input is not a terminal.
pub(crate) fn size_process_terminal(pid_file: &std::path::Path, width: u16, height: u16) {
    use rustix::fs::{Mode, OFlags};
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let Some(pid) = pid else { return };
    let path = format!("/proc/{pid}/fd/0");
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open(path.as_str(), flags, Mode::empty())
        && rustix::termios::isatty(&fd)
    {
        let _ = rustix::termios::tcsetwinsize(&fd, winsize(width, height));
    }
}

/// Decodes `%XX` escapes and `+` (a space in a form-encoded query).
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The close message that ends a session cleanly (code 1000): clients
/// treat a close without a status as an error.
pub fn normal_closure() -> axum::extract::ws::Message {
    axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

/// Splits a session's WebSocket: messages sent on the returned channel go
/// out in order from a writer task, which closes the socket normally once
/// every sender is gone.
pub fn split_session(
    socket: axum::extract::ws::WebSocket,
) -> (
    tokio::sync::mpsc::Sender<axum::extract::ws::Message>,
    futures::stream::SplitStream<axum::extract::ws::WebSocket>,
    tokio::task::JoinHandle<()>,
) {
    use futures::{SinkExt, StreamExt};
    let (mut sink, source) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_closure()).await;
    });
    (tx, source, writer)
}

/// A pod on this node, found by name.
pub struct PodTarget {
    /// The pod's directory.
    pub dir: PodDir,
}

impl PodTarget {
    /// The pod `namespace/name`, if this node runs it.
    pub fn find(ctx: &NodeContext, namespace: &str, name: &str) -> Option<PodTarget> {
        let uid = ctx.pod_uid(namespace, name)?;
        Some(PodTarget {
            dir: PodDir {
                root: ctx.data_dir.join("pods").join(&uid),
                uid,
            },
        })
    }

    /// Where `container`'s current run keeps its output and input, if it is
    /// running.
    pub fn attach_target(&self, container: &str) -> Option<attach::AttachTarget> {
        let Some((attempt, Run::Running { .. })) = history(&self.dir, container).latest else {
            return None;
        };
        let run = self.dir.attempt(container, attempt);
        Some(attach::AttachTarget {
            log: self.dir.log(container, attempt),
            exit_file: run.join("exit"),
            pid_file: run.join("pid"),
            stdin_fifo: Some(run.join("stdin")).filter(|f| f.exists()),
        })
    }

    /// The runtime ID of `container`'s current run, if it is running.
    pub fn running_container(&self, container: &str) -> Option<String> {
        match history(&self.dir, container).latest {
            Some((attempt, Run::Running { .. })) => Some(self.dir.container_id(container, attempt)),
            _ => None,
        }
    }

    /// The runtime the pod's containers run under (its RuntimeClass's).
    pub fn runtime(
        &self,
        ctx: &NodeContext,
    ) -> std::sync::Arc<dyn crate::runtime::ContainerRuntime> {
        ctx.runtimes
            .get_or_default(&crate::worker::sandbox::recorded_handler(&self.dir))
    }

    /// The pod's network namespace; `None` for a pod on the host's network.
    pub fn netns(&self) -> Option<PathBuf> {
        Some(self.dir.ns().join("net")).filter(|p| p.exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_are_read_as_kubectl_writes_them() {
        let o = StreamOptions::parse(
            "command=sh&command=-c&command=echo+hi%3B+exit+3&container=c&stdin=true&stdout=true&tty=true&stderr=true",
        )
        .expect("parse");
        assert_eq!(o.command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "a terminal has no separate stderr");
        assert!(StreamOptions::parse("command=ls").is_err());
        assert!(StreamOptions::parse("command=%zz&stdout=1").is_err());
    }
}
