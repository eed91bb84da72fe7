//! The fan-out of committed batches from the writer to watchers: a batch is
//! kept until every watcher subscribed when it was published has read it,
//! but only while the kept batches fit a count and a byte budget; each
//! watcher reads at its own position, and one that falls behind the oldest
//! kept is told so and reads the log instead.
//!
//! A broadcast channel bounds only the count: one watcher stuck behind a
//! slow client made it keep its last 1,024 batches, each holding every
//! written value and the value it replaced, whatever their size.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::writer::Batch;

/// Why a receiver got no batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecvError {
    /// This many batches were dropped before the receiver read them.
    Lagged(u64),
    /// Every publisher is gone: nothing more will come.
    Closed,
}

/// A kept batch: its size, and how many receivers have yet to read it.
struct Entry {
    batch: Batch,
    size: usize,
    unread: usize,
}

struct Kept {
    /// Sequence number of `batches[0]`.
    first: u64,
    batches: VecDeque<Entry>,
    bytes: usize,
    receivers: usize,
    closed: bool,
}

impl Kept {
    fn pop_front(&mut self) {
        if let Some(e) = self.batches.pop_front() {
            self.bytes -= e.size;
            self.first += 1;
        }
    }

    /// Drops the oldest batches every receiver has read.
    fn release_read(&mut self) {
        while self.batches.front().is_some_and(|e| e.unread == 0) {
            self.pop_front();
        }
    }
}

struct Shared {
    kept: Mutex<Kept>,
    published: Notify,
    publishers: AtomicUsize,
    max_batches: usize,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's end; the feed closes when the last clone is dropped.
pub(super) struct BatchPublisher(Arc<Shared>);

/// A watcher's end, reading from the batch after the last one published
/// when it subscribed.
pub(super) struct BatchReceiver {
    shared: Arc<Shared>,
    next: u64,
}

/// A feed keeping at most `max_batches` batches and, beyond the newest one,
/// `max_bytes` of their keys and values.
pub(super) fn feed(max_batches: usize, max_bytes: usize) -> BatchPublisher {
    BatchPublisher(Arc::new(Shared {
        kept: Mutex::new(Kept {
            first: 0,
            batches: VecDeque::new(),
            bytes: 0,
            receivers: 0,
            closed: false,
        }),
        published: Notify::new(),
        publishers: AtomicUsize::new(1),
        max_batches: max_batches.max(1),
        max_bytes,
    }))
}

/// The bytes of a batch's keys and values, old and new.
fn size_of(batch: &Batch) -> usize {
    batch
        .iter()
        .map(|e| {
            let prev = e.prev.as_ref().map_or(0, |p| p.key.len() + p.value.len());
            e.kv.key.len() + e.kv.value.len() + prev
        })
        .sum()
}

impl BatchPublisher {
    /// Publishes a batch, dropping the oldest kept ones past the budget.
    pub(super) fn send(&self, batch: Batch) {
        let size = size_of(&batch);
        {
            let mut kept = self.0.lock();
            let unread = kept.receivers;
            kept.batches.push_back(Entry {
                batch,
                size,
                unread,
            });
            kept.bytes += size;
            while kept.batches.len() > 1
                && (kept.batches.len() > self.0.max_batches || kept.bytes > self.0.max_bytes)
            {
                kept.pop_front();
            }
            kept.release_read();
        }
        self.0.published.notify_waiters();
    }

    /// A receiver of the batches published from now on.
    pub(super) fn subscribe(&self) -> BatchReceiver {
        let mut kept = self.0.lock();
        kept.receivers += 1;
        BatchReceiver {
            shared: self.0.clone(),
            next: kept.first + kept.batches.len() as u64,
        }
    }
}

impl Clone for BatchPublisher {
    fn clone(&self) -> Self {
        self.0.publishers.fetch_add(1, Ordering::AcqRel);
        BatchPublisher(self.0.clone())
    }
}

impl Drop for BatchPublisher {
    fn drop(&mut self) {
        if self.0.publishers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.lock().closed = true;
            self.0.published.notify_waiters();
        }
    }
}

impl BatchReceiver {
    /// The next batch; `Lagged` (once) when some were dropped unread, after
    /// which reading resumes at the oldest kept.
    pub(super) async fn recv(&mut self) -> Result<Batch, RecvError> {
        loop {
            // Registered before looking, so a batch published in between wakes it.
            let published = self.shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                let mut kept = self.shared.lock();
                if self.next < kept.first {
                    let missed = kept.first - self.next;
                    self.next = kept.first;
                    return Err(RecvError::Lagged(missed));
                }
                let index = usize::try_from(self.next - kept.first).unwrap_or(usize::MAX);
                if let Some(entry) = kept.batches.get_mut(index) {
                    entry.unread = entry.unread.saturating_sub(1);
                    let batch = entry.batch.clone();
                    self.next += 1;
                    kept.release_read();
                    return Ok(batch);
                }
                if kept.closed {
                    return Err(RecvError::Closed);
                }
            }
            published.await;
        }
    }
}

impl Drop for BatchReceiver {
    fn drop(&mut self) {
        let mut kept = self.shared.lock();
        kept.receivers -= 1;
        let unread = usize::try_from(self.next.saturating_sub(kept.first)).unwrap_or(usize::MAX);
        for entry in kept.batches.iter_mut().skip(unread) {
            entry.unread = entry.unread.saturating_sub(1);
        }
        kept.release_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Event, EventKind, KeyValue};

    fn batch(value_len: usize) -> Batch {
        Arc::from(vec![Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: "k".into(),
                value: vec![b'x'; value_len].into(),
                create_revision: 1,
                mod_revision: 1,
            },
            prev: None,
        }])
    }

    #[tokio::test]
    async fn receivers_read_in_order_from_when_they_subscribed() {
        let tx = feed(8, 1 << 20);
        tx.send(batch(1));
        let mut rx = tx.subscribe();
        tx.send(batch(2));
        tx.send(batch(3));
        assert_eq!(rx.recv().await.map(|b| b[0].kv.value.len()), Ok(2));
        assert_eq!(rx.recv().await.map(|b| b[0].kv.value.len()), Ok(3));
        let waiting = tokio::spawn(async move { rx.recv().await.map(|b| b[0].kv.value.len()) });
        tokio::task::yield_now().await;
        tx.send(batch(4));
        assert_eq!(waiting.await.ok(), Some(Ok(4)));
    }

    #[tokio::test]
    async fn a_slow_receiver_is_told_what_it_missed_by_count_or_bytes() {
        let tx = feed(2, 1 << 20);
        let mut rx = tx.subscribe();
        for n in 1..=5 {
            tx.send(batch(n));
        }
        assert_eq!(rx.recv().await.err(), Some(RecvError::Lagged(3)));
        assert_eq!(rx.recv().await.map(|b| b[0].kv.value.len()), Ok(4));

        // 100 bytes allowed: a batch of 80 pushes out the one of 60 before it,
        // but the newest batch is always kept, even alone over budget.
        let tx = feed(100, 100);
        let mut rx = tx.subscribe();
        tx.send(batch(59));
        tx.send(batch(79));
        assert_eq!(rx.recv().await.err(), Some(RecvError::Lagged(1)));
        tx.send(batch(500));
        assert_eq!(rx.recv().await.err(), Some(RecvError::Lagged(1)));
        assert_eq!(rx.recv().await.map(|b| b[0].kv.value.len()), Ok(500));
    }

    #[tokio::test]
    async fn a_batch_is_released_once_every_receiver_read_it() {
        let tx = feed(8, 1 << 20);
        tx.send(batch(1));
        assert_eq!(tx.0.lock().batches.len(), 0, "kept with no receiver");
        let (mut a, b) = (tx.subscribe(), tx.subscribe());
        tx.send(batch(2));
        tx.send(batch(3));
        assert_eq!(a.recv().await.map(|b| b[0].kv.value.len()), Ok(2));
        assert_eq!(a.recv().await.map(|b| b[0].kv.value.len()), Ok(3));
        assert_eq!(tx.0.lock().batches.len(), 2, "b has read neither");
        drop(b);
        assert_eq!(tx.0.lock().batches.len(), 0);
        let mut c = tx.subscribe();
        tx.send(batch(4));
        assert_eq!(c.recv().await.map(|b| b[0].kv.value.len()), Ok(4));
        assert_eq!(tx.0.lock().batches.len(), 1, "a has not read it");
        assert_eq!(a.recv().await.map(|b| b[0].kv.value.len()), Ok(4));
        let kept = tx.0.lock();
        assert_eq!((kept.batches.len(), kept.bytes, kept.first), (0, 0, 4));
    }

    #[tokio::test]
    async fn the_feed_closes_with_its_last_publisher() {
        let tx = feed(4, 1 << 20);
        let second = tx.clone();
        let mut rx = tx.subscribe();
        tx.send(batch(1));
        drop(tx);
        assert!(rx.recv().await.is_ok());
        let waiting = tokio::spawn(async move { rx.recv().await.err() });
        tokio::task::yield_now().await;
        drop(second);
        assert_eq!(waiting.await.ok(), Some(Some(RecvError::Closed)));
    }
}
