//! The watch cache: one store watch per resource feeds the current state and a
//! ring of recent events, from which lists at `resourceVersion=0` and every
//! watch of that resource are served, so that thousands of watchers cost one
//! store watch. Objects are kept as their serialized JSON (with
//! `resourceVersion` set), packed against a sibling's (see
//! [`crate::packed_json`]), plus the few fields selectors need, so serving
//! them copies bytes instead of re-encoding objects.

mod object;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kybern_store::{EventKind, RangeRequest, Revision, Store};
use tokio::sync::broadcast;

pub use object::{CachedEvent, CachedObject, IndexedFields, LiveEvent, watch_line_into};

use crate::packed_json::Packer;
use crate::registry::ResourceInfo;
use crate::storage::ObjectStore;
use crate::written::WrittenObjects;

/// Recent events kept per resource for watches that resume from a past revision.
const RING: usize = 10_000;
/// Live events buffered per watcher before it must catch up from the ring.
const FANOUT: usize = 1_024;

/// What watchers receive.
#[derive(Clone, Debug)]
pub enum CacheMessage {
    /// A change.
    Event(LiveEvent),
    /// The cache lost its store watch and re-listed: watchers must start over.
    Reset,
}

#[derive(Default)]
struct State {
    ready: bool,
    objects: BTreeMap<Arc<str>, Arc<CachedObject>>,
    revision: Revision,
    ring: VecDeque<Arc<CachedEvent>>,
    /// The ring holds every event with a revision above this.
    ring_floor: Revision,
    /// Whether the ring has let events go (the floor then marks lost
    /// history; before, it is only where the cache started).
    trimmed: bool,
}

/// The cache of one resource.
pub struct WatchCache {
    info: Arc<ResourceInfo>,
    /// This server's writes, prepared (see [`crate::written`]).
    written: Arc<WrittenObjects>,
    state: RwLock<State>,
    fanout: broadcast::Sender<CacheMessage>,
    /// True once the first list has loaded.
    loaded: tokio::sync::watch::Sender<bool>,
}

/// A consistent start for a watcher: events (or the state) to send first, then live messages.
pub struct Subscription {
    /// Events to replay (resume) or the state as of `revision` (fresh start).
    pub initial: Initial,
    /// The revision the initial part brings the watcher up to.
    pub revision: Revision,
    /// Live messages after `revision`.
    pub live: broadcast::Receiver<CacheMessage>,
}

/// The first part of a subscription.
pub enum Initial {
    /// Every object (fresh watch without a resourceVersion).
    State(Vec<Arc<CachedObject>>),
    /// Events after the requested revision.
    Events(Vec<Arc<CachedEvent>>),
}

fn decode(
    info: &ResourceInfo,
    key: &str,
    value: &[u8],
    rev: Revision,
    line_type: &'static str,
    packer: &mut Packer,
) -> Option<(Arc<CachedObject>, Bytes)> {
    match ObjectStore::decode(value, rev) {
        Ok(obj) => {
            let (o, line) = CachedObject::with_line(info, key, &obj, rev, line_type, packer);
            Some((Arc::new(o), line))
        }
        Err(e) => {
            tracing::error!(%key, error = %e.message, "undecodable object in the store; left out of the cache");
            None
        }
    }
}

impl WatchCache {
    /// Starts the cache of a resource: lists it, then follows one store watch.
    pub fn start(
        store: Arc<dyn Store>,
        info: Arc<ResourceInfo>,
        written: Arc<WrittenObjects>,
    ) -> Arc<Self> {
        let (fanout, _) = broadcast::channel(FANOUT);
        let cache = Arc::new(WatchCache {
            info,
            written,
            state: RwLock::new(State::default()),
            fanout,
            loaded: tokio::sync::watch::Sender::new(false),
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(cache) = weak.upgrade() else { return };
                if let Err(e) = cache.run(&store).await {
                    tracing::warn!(resource = %cache.info.plural, error = %e, "watch cache lost its store watch; re-listing");
                }
                drop(cache);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        cache
    }

    async fn run(&self, store: &Arc<dyn Store>) -> Result<(), kybern_store::StoreError> {
        let prefix = self.info.key_prefix();
        let mut objects = BTreeMap::new();
        let mut revision = 0;
        let mut start_after = None;
        let mut packer = Packer::default();
        loop {
            let page = store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    start_after: start_after.take(),
                    limit: 1000,
                    revision,
                })
                .await?;
            revision = page.revision;
            for kv in &page.kvs {
                let o = decode(
                    &self.info,
                    &kv.key,
                    &kv.value,
                    kv.mod_revision,
                    "ADDED",
                    &mut packer,
                );
                if let Some((o, _)) = o {
                    objects.insert(o.key.clone(), o);
                }
            }
            if !page.more {
                break;
            }
            start_after = page.kvs.last().map(|kv| kv.key.clone());
        }
        let mut watch = store.watch(&prefix, revision + 1).await?;
        {
            let mut st = self
                .state
                .write()
                .map_err(|_| kybern_store::StoreError::Closed)?;
            let was_ready = st.ready;
            *st = State {
                ready: true,
                objects,
                revision,
                ring: VecDeque::new(),
                ring_floor: revision,
                trimmed: false,
            };
            if was_ready {
                let _ = self.fanout.send(CacheMessage::Reset);
            }
        }
        self.loaded.send_replace(true);
        while let Some(event) = watch.next().await {
            let event = event?;
            let rev = event.revision();
            let key = event.kv.key.clone();
            let line_type = match (event.kind, &event.prev) {
                (EventKind::Delete, _) => "DELETED",
                (EventKind::Put, Some(_)) => "MODIFIED",
                (EventKind::Put, None) => "ADDED",
            };
            let value = match event.kind {
                EventKind::Put => Some(&event.kv.value),
                EventKind::Delete => event.prev.as_ref().map(|p| &p.value),
            };
            let ours = match event.kind {
                EventKind::Put => self.written.take(&key, &event.kv.value),
                EventKind::Delete => None,
            };
            let object = ours
                .and_then(|w| {
                    CachedObject::from_written(&self.info, &key, w, rev, line_type, &mut packer)
                })
                .map(|(o, line)| (Arc::new(o), line))
                .or_else(|| {
                    value.and_then(|v| decode(&self.info, &key, v, rev, line_type, &mut packer))
                });
            let mut st = self
                .state
                .write()
                .map_err(|_| kybern_store::StoreError::Closed)?;
            st.revision = rev;
            // The cache follows the store's events in order, so the object it
            // holds under the key is the event's previous value: shared rather
            // than decoded again (which would cost a decode per event and a
            // second copy of every object in the ring).
            let prev = match &event.prev {
                Some(p) => match st.objects.get(key.as_str()) {
                    Some(held) if held.revision == p.mod_revision => Some(held.clone()),
                    _ => decode(
                        &self.info,
                        &key,
                        &p.value,
                        p.mod_revision,
                        "MODIFIED",
                        &mut packer,
                    )
                    .map(|(o, _)| o),
                },
                None => None,
            };
            let Some((object, line)) = object else {
                continue;
            };
            match event.kind {
                EventKind::Put => st.objects.insert(object.key.clone(), object.clone()),
                EventKind::Delete => st.objects.remove(key.as_str()),
            };
            let cached = Arc::new(CachedEvent {
                revision: rev,
                kind: event.kind,
                object,
                prev,
            });
            st.ring.push_back(cached.clone());
            if st.ring.len() > RING
                && let Some(old) = st.ring.pop_front()
            {
                st.ring_floor = old.revision;
                st.trimmed = true;
            }
            // Sent under the lock, so a subscriber sees each event exactly once:
            // either in its snapshot or on its receiver.
            let live = LiveEvent::new(cached, line, line_type);
            let _ = self.fanout.send(CacheMessage::Event(live));
        }
        Err(kybern_store::StoreError::Backend(
            "store watch ended".into(),
        ))
    }

    /// The cached objects under `namespace` (all when `None`) and the revision
    /// they are current at; `None` until the first list has loaded.
    pub fn snapshot(&self, namespace: Option<&str>) -> Option<(Vec<Arc<CachedObject>>, Revision)> {
        let st = self.state.read().ok()?;
        st.ready
            .then(|| (Self::objects_in(&self.info, &st, namespace), st.revision))
    }

    /// Waits up to `limit` for the first list to load; whether it has.
    pub async fn wait_loaded(&self, limit: Duration) -> bool {
        let mut rx = self.loaded.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|loaded| *loaded)).await,
            Ok(Ok(_))
        )
    }

    /// The revision of the last change the cache holds, once loaded.
    pub fn revision(&self) -> Option<Revision> {
        let st = self.state.read().ok()?;
        st.ready.then_some(st.revision)
    }

    /// One cached object by store key, if the cache is loaded and holds it.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        let st = self.state.read().ok()?;
        st.objects.get(key).cloned()
    }

    /// The oldest revision a watch may resume after, once the ring has let
    /// events go: older resumes are past the cache's history. `None` before
    /// then, when an older revision only predates the cache (caches load on
    /// first use), and the store serves such a resume.
    pub fn resumable_after(&self) -> Option<Revision> {
        let st = self.state.read().ok()?;
        (st.ready && st.trimmed).then_some(st.ring_floor)
    }

    /// Subscribes a watcher: from the current state (`from` is `None`), or
    /// resuming after revision `from`. `None` when the cache cannot serve it
    /// (not loaded yet, or `from` is older than the ring).
    pub fn subscribe(
        &self,
        namespace: Option<&str>,
        from: Option<Revision>,
    ) -> Option<Subscription> {
        // The feeder sends under the write lock: holding the read lock while
        // both reading and subscribing puts every event either in what is read
        // here or on the receiver, never both, never neither.
        let st = self.state.read().ok()?;
        if !st.ready {
            return None;
        }
        match from {
            None => Some(Subscription {
                initial: Initial::State(Self::objects_in(&self.info, &st, namespace)),
                revision: st.revision,
                live: self.fanout.subscribe(),
            }),
            Some(rev) if rev >= st.ring_floor => Some(Subscription {
                initial: Initial::Events(
                    st.ring
                        .iter()
                        .filter(|e| e.revision > rev)
                        .cloned()
                        .collect(),
                ),
                revision: st.revision.max(rev),
                live: self.fanout.subscribe(),
            }),
            Some(_) => None,
        }
    }

    fn objects_in(
        info: &ResourceInfo,
        st: &State,
        namespace: Option<&str>,
    ) -> Vec<Arc<CachedObject>> {
        match namespace {
            Some(ns) if info.namespaced() => {
                let start = format!("{}{ns}/", info.key_prefix());
                st.objects
                    .range::<str, _>((
                        std::ops::Bound::Included(start.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| k.starts_with(&start))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            _ => st.objects.values().cloned().collect(),
        }
    }
}

/// The caches of every resource, started on first use.
#[derive(Default)]
pub struct Caches {
    by_prefix: Mutex<BTreeMap<String, Arc<WatchCache>>>,
}

impl Caches {
    /// The cache of `info`'s resource, starting it if needed; `None` for a
    /// resource served without one.
    pub fn get(&self, objects: &ObjectStore, info: &Arc<ResourceInfo>) -> Option<Arc<WatchCache>> {
        if !info.watch_cached() {
            return None;
        }
        let mut map = self.by_prefix.lock().ok()?;
        let start = || {
            WatchCache::start(
                objects.store().clone(),
                info.clone(),
                objects.written().clone(),
            )
        };
        Some(map.entry(info.key_prefix()).or_insert_with(start).clone())
    }
}
