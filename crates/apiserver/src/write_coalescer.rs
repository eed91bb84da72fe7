//! Coalescing of an HTTP/2 connection's writes: the DATA frames of many streams
//! leave in one TLS write instead of one each.
//!
//! The `h2` crate holds at most one large DATA frame in its encoder and flushes
//! the transport before it takes the next (hyperium/h2#902). A connection that
//! carries 250 watches therefore made 250 TLS records and 250 `writev` calls for
//! one event, and the kernel's loopback path behind each call was most of the
//! server's time when 10,000 watchers were told of one update.
//!
//! [`CoalescingStream`] copies writes into a buffer and treats a flush that
//! directly follows a write as a hint it may skip. `h2` ends every round of
//! sending with a second flush that follows no write (its `poll_complete` flushes
//! again once its queue is empty), and that one always writes the buffer out.
//! A skipped flush also wakes the connection's task, so that even a path that
//! flushed once and went idle is polled again and its bytes leave.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes past which a write first sends what is buffered: about four
/// full TLS records, so that a round of many events leaves in a few writes.
const FLUSH_AT: usize = 64 * 1024;

/// A buffer larger than this is given back once it has been sent, so that idle
/// connections hold no more than a small one.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A transport whose writes are coalesced when `coalesce` is on; a plain
/// pass-through otherwise (HTTP/1.1, where hyper already writes each response
/// in one call and no two responses are ever pending together).
#[derive(Debug)]
pub struct CoalescingStream<S> {
    inner: S,
    coalesce: bool,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    sent: usize,
    /// A write happened since the last flush call.
    wrote_since_flush: bool,
}

impl<S> CoalescingStream<S> {
    /// Wraps `inner`; coalesces writes only when `coalesce` is true.
    pub fn new(inner: S, coalesce: bool) -> Self {
        CoalescingStream {
            inner,
            coalesce,
            buf: Vec::new(),
            sent: 0,
            wrote_since_flush: false,
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Copies as much of `data` as fits under the buffer's bound.
    fn absorb(&mut self, data: &[u8]) -> usize {
        let room = FLUSH_AT.saturating_sub(self.buf.len());
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.wrote_since_flush = true;
        n
    }
}

impl<S: AsyncWrite + Unpin> CoalescingStream<S> {
    /// Writes the whole buffer to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for a write: sends the buffer once it reached its bound.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() >= FLUSH_AT {
            self.poll_drain(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.coalesce {
            return Pin::new(&mut self.get_mut().inner).poll_write(cx, data);
        }
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.coalesce {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        match this.poll_room(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let mut total = 0;
        for slice in bufs {
            let n = this.absorb(slice);
            total += n;
            if n < slice.len() {
                break;
            }
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.coalesce || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.coalesce && this.wrote_since_flush && this.pending() < FLUSH_AT {
            // More frames may follow in this round; the flush that ends the
            // round, or the wake-up below, sends them together.
            this.wrote_since_flush = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        this.wrote_since_flush = false;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the transport.
    #[derive(Default)]
    struct CountingSink {
        bytes: Vec<u8>,
        writes: usize,
        flushes: usize,
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            this.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for CountingSink {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_flushed_one_by_one_leave_together_at_the_rounds_end() {
        let mut s = CoalescingStream::new(CountingSink::default(), true);
        for i in 0..10u8 {
            s.write_all(&[i; 1500]).await.expect("write");
            s.flush().await.expect("write"); // h2's flush after each large DATA frame
        }
        assert_eq!(
            s.get_ref().writes,
            0,
            "nothing is sent before the round ends"
        );
        s.flush().await.expect("write"); // h2's flush once its queue is empty
        assert_eq!(s.get_ref().writes, 1);
        assert_eq!(s.get_ref().bytes.len(), 15_000);
        assert_eq!(&s.get_ref().bytes[1500..1503], &[1, 1, 1]);
    }

    #[tokio::test]
    async fn a_full_buffer_is_sent_before_more_is_taken() {
        let mut s = CoalescingStream::new(CountingSink::default(), true);
        let chunk = vec![7u8; 20_000];
        for _ in 0..5 {
            s.write_all(&chunk).await.expect("write");
        }
        assert!(
            s.get_ref().writes >= 1,
            "the buffer never grows past its bound"
        );
        assert!(s.buf.len() <= FLUSH_AT);
        s.flush().await.expect("write");
        s.flush().await.expect("write");
        assert_eq!(s.get_ref().bytes.len(), 100_000);
        assert_eq!(s.pending(), 0);
    }

    #[tokio::test]
    async fn shutdown_sends_what_a_skipped_flush_left() {
        let mut s = CoalescingStream::new(CountingSink::default(), true);
        s.write_all(b"last frame").await.expect("write");
        s.flush().await.expect("write");
        s.shutdown().await.expect("write");
        assert_eq!(s.get_ref().bytes, b"last frame");
    }

    #[tokio::test]
    async fn without_coalescing_every_write_and_flush_passes_through() {
        let mut s = CoalescingStream::new(CountingSink::default(), false);
        s.write_all(b"a").await.expect("write");
        s.flush().await.expect("write");
        s.write_all(b"b").await.expect("write");
        assert_eq!(s.get_ref().writes, 2);
        assert_eq!(s.get_ref().flushes, 1);
        let mut none = [0u8; 4];
        assert_eq!(s.read(&mut none).await.expect("read"), 0);
    }
}
