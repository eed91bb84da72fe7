//! A WebSocket as a byte stream: kubectl tunnels SPDY through one, each
//! binary message carrying the next bytes of the connection.

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Bytes in flight each way before the slower side holds the other up.
const BUFFER: usize = 256 * 1024;

/// The socket's bytes, readable and writable; the socket closes when the
/// returned stream is dropped or shut down.
pub fn bytes_over(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    let (mut from_us, mut to_us) = tokio::io::split(theirs);
    let (mut sink, mut source) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if to_us.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_us.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_us.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = Message::Binary(buf[..n].to_vec().into());
                    if sink.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(super::normal_closure()).await;
    });
    ours
}
