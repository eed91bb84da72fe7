//! `kubectl port-forward` (the `portforward.k8s.io` protocol over SPDY): for
//! each connection the client opens an error stream and a data stream named
//! by `port` and `requestID`; the agent connects to that port on the pod's
//! localhost, inside its network namespace, and copies bytes both ways.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Codec, Frame};

/// The SPDY sub-protocol kubectl asks for.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The same, tunnelled through a WebSocket.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// What the client sends on a data stream: bytes, or `None` for its FIN.
type Feed = mpsc::Sender<Option<Bytes>>;

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
}

/// Connects to `port` on localhost in `netns` (the host's when `None`).
/// A thread of its own enters the namespace: a socket stays in the
/// namespace it was made in, and the thread ends with the call.
async fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connect = || -> std::io::Result<std::net::TcpStream> {
            if let Some(ns) = netns {
                let file = std::fs::File::open(ns)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
            }
            let timeout = Duration::from_secs(5);
            let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            std::net::TcpStream::connect_timeout(&v4, timeout).or_else(|e| {
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e)
            })
        };
        let _ = tx.send(connect());
    });
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("dialing thread failed"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// One forwarded connection, until either side ends it.
async fn forward(
    target: (Option<PathBuf>, String, u16),
    (error_id, data_id): (u32, u32),
    out: mpsc::Sender<Vec<u8>>,
    mut feed: mpsc::Receiver<Option<Bytes>>,
) {
    let (netns, pod, port) = target;
    let tcp = match dial(netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            tracing::debug!(%pod, port, error = %e, "port-forward connect failed");
            let _ = out.send(spdy::data(error_id, true, msg.as_bytes())).await;
            let _ = out.send(spdy::data(data_id, true, &[])).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(spdy::data(data_id, false, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out.send(spdy::data(data_id, true, &[])).await;
    };
    let down = async {
        // `None` from the channel: the stream was reset or the connection
        // ended; `Some(None)`: the client finished sending.
        while let Some(next) = feed.recv().await {
            match next {
                Some(bytes) => {
                    if to_pod.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to_pod.shutdown().await;
                }
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    let _ = out.send(spdy::data(error_id, true, &[])).await;
}

/// Serves one port-forward connection (SPDY bytes both ways) for the pod
/// `pod` whose network namespace is `netns`.
pub async fn session<S>(io: S, netns: Option<PathBuf>, pod: String)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (out, mut frames) = mpsc::channel::<Vec<u8>>(256);
    let sender = tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if writer.write_all(&f).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut codec = Codec::default();
    let mut pairs: HashMap<(String, u16), Pair> = HashMap::new();
    let mut feeds: HashMap<u32, Feed> = HashMap::new();
    loop {
        let (head, payload) = match spdy::read_raw(&mut reader).await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward connection ended");
                break;
            }
        };
        let frame = match codec.decode(head, payload) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, %pod, "port-forward: bad SPDY from client");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let header = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.as_str())
                };
                let port = header("port").and_then(|p| p.parse::<u16>().ok());
                let (Some(kind), Some(port)) = (header("streamtype"), port.filter(|p| *p > 0))
                else {
                    let _ = out.send(spdy::rst_stream(stream_id)).await;
                    continue;
                };
                let _ = out.send(codec.syn_reply(stream_id)).await;
                let key = (header("requestid").unwrap_or("").to_owned(), port);
                let pair = pairs.entry(key.clone()).or_default();
                match kind {
                    "error" => pair.error = Some(stream_id),
                    "data" => pair.data = Some(stream_id),
                    _ => {
                        let _ = out.send(spdy::rst_stream(stream_id)).await;
                        continue;
                    }
                }
                if let (Some(error_id), Some(data_id)) = (pair.error, pair.data) {
                    pairs.remove(&key);
                    let (feed, fed) = mpsc::channel(64);
                    feeds.insert(data_id, feed);
                    let target = (netns.clone(), pod.clone(), port);
                    tokio::spawn(forward(target, (error_id, data_id), out.clone(), fed));
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(feed) = feeds.get(&stream_id) {
                    if !data.is_empty() && feed.send(Some(data)).await.is_err() {
                        feeds.remove(&stream_id);
                    } else if fin {
                        let _ = feed.send(None).await;
                    }
                }
            }
            Frame::RstStream { stream_id } => {
                feeds.remove(&stream_id);
            }
            Frame::Ping(id) => {
                let _ = out.send(spdy::ping(id)).await;
            }
            Frame::GoAway => break,
            Frame::Other => {}
        }
    }
    // Dropping the feeds ends every forwarded connection; the sender ends
    // when the last of them lets go of `out`.
    drop(feeds);
    drop(out);
    let _ = sender.await;
}
