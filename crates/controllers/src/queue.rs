//! A rate-limited work queue of object keys, as client-go's: a key waits at
//! most once, is never processed by two workers at once, and a key that fails
//! comes back after an exponential back-off. Each queue reports client-go's
//! `workqueue_*` metrics under its controller's name.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::QueueMetrics;

/// First retry delay of a failing key (client-go: 5 ms).
const BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest retry delay (client-go: 1000 s).
const MAX_DELAY: Duration = Duration::from_secs(1000);

/// A namespaced (or cluster-scoped, `namespace: None`) object's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace, if the kind is namespaced.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// The key of an object.
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        ObjectKey {
            namespace: obj.meta().namespace.clone(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }

    /// The namespace, or `""` for cluster-scoped objects.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

struct State<T> {
    queue: VecDeque<T>,
    /// Each waiting item, with when it was queued.
    queued: HashMap<T, Instant>,
    processing: HashSet<T>,
    /// Added again while being processed: queued when the worker is done.
    dirty: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// The queue shared by a controller's event handlers and its workers.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    /// Set when the queue's workers start, which name it.
    metrics: OnceLock<QueueMetrics>,
}

impl<T: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashMap::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
            metrics: OnceLock::new(),
        }
    }
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` unless it already waits; one being processed is queued
    /// again once its worker is done.
    pub fn add(&self, item: T) {
        let mut s = self.lock();
        if s.processing.contains(&item) {
            if s.dirty.insert(item)
                && let Some(m) = self.metrics.get()
            {
                m.added(s.queue.len());
            }
            return;
        }
        self.push(s, item, true);
    }

    /// Queues `item` unless it already waits; `counted` when this is an add
    /// for the metrics (a re-queue after processing was counted when added).
    fn push(&self, mut s: MutexGuard<'_, State<T>>, item: T, counted: bool) {
        if let Entry::Vacant(e) = s.queued.entry(item.clone()) {
            e.insert(Instant::now());
            s.queue.push_back(item);
            if let Some(m) = self.metrics.get() {
                if counted {
                    m.added(s.queue.len());
                } else {
                    m.set_depth(s.queue.len());
                }
            }
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Names the queue in its metrics (`workqueue_*{name}`); the first name
    /// given stays.
    pub fn instrument(&self, name: &str) {
        let _ = self.metrics.set(QueueMetrics::named(name));
    }

    /// Queues `item` after `delay`.
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(item);
            }
        });
    }

    /// Queues `item` after its back-off, which doubles with every failure.
    pub fn add_rate_limited(self: &Arc<Self>, item: T) {
        if let Some(m) = self.metrics.get() {
            m.retried();
        }
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(item.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(item, backoff(failures));
    }

    /// Clears `item`'s failure count.
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// Waits for the next item and marks it as being processed.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    let since = s.queued.remove(&item);
                    if let (Some(m), Some(since)) = (self.metrics.get(), since) {
                        m.taken(since.elapsed(), s.queue.len());
                    }
                    s.processing.insert(item.clone());
                    if !s.queue.is_empty() {
                        drop(s);
                        self.ready.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Marks `item` processed; queues it again if it was added meanwhile.
    pub fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if s.dirty.remove(item) {
            self.push(s, item.clone(), false);
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// The sooner of two optional waits before a key is looked at again.
pub fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a reconcile asks of the queue.
pub type ReconcileResult<E> = Result<Option<Duration>, E>;

/// Runs `workers` workers over `queue`: each reconciles one key at a time;
/// `Ok(Some(d))` looks again after `d`, an error retries with back-off.
pub async fn run_workers<T, E, F, Fut>(
    name: &'static str,
    queue: Arc<WorkQueue<T>>,
    workers: usize,
    reconcile: F,
) where
    T: Clone + Eq + Hash + Send + Sync + std::fmt::Display + 'static,
    E: std::fmt::Display,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ReconcileResult<E>> + Send,
{
    queue.instrument(&name.to_ascii_lowercase());
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (queue, reconcile) = (queue.clone(), reconcile.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let item = queue.next().await;
                let started = Instant::now();
                let outcome = reconcile(item.clone()).await;
                if let Some(m) = queue.metrics.get() {
                    m.worked(started.elapsed());
                }
                match outcome {
                    Ok(again) => {
                        queue.forget(&item);
                        if let Some(delay) = again {
                            queue.add_after(item.clone(), delay);
                        }
                    }
                    Err(err) => {
                        tracing::info!(controller = name, key = %item, error = %err, "reconcile failed; retrying");
                        queue.add_rate_limited(item.clone());
                    }
                }
                queue.done(&item);
            }
        }));
    }
    futures::future::join_all(tasks).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_waits_once_and_is_requeued_when_added_during_processing() {
        let q: Arc<WorkQueue<u32>> = Arc::default();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, 1);
        q.add(1); // while processing: not queued yet
        assert_eq!(q.len(), 1);
        q.done(&1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, 2);
        assert_eq!(q.next().await, 1);
    }

    #[tokio::test]
    async fn a_named_queue_counts_adds_as_client_go_does() {
        let q: Arc<WorkQueue<u32>> = Arc::default();
        q.instrument("queue-test");
        q.add(1);
        q.add(1); // already waiting: not an add
        q.add(2);
        assert_eq!(q.next().await, 1);
        q.add(1); // while processing: an add, queued when done
        q.done(&1); // the re-queue is not counted again
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &crate::metrics::registry())
            .expect("encode");
        for line in [
            "workqueue_adds_total{name=\"queue-test\"} 3",
            "workqueue_depth{name=\"queue-test\"} 2",
            "workqueue_queue_duration_seconds_count{name=\"queue-test\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(4), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
