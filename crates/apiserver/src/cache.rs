//! The watch cache: one store watch per resource feeds the current state and a
//! ring of recent events, from which lists at `resourceVersion=0` and every
//! watch of that resource are served, so that thousands of watchers cost one
//! store watch. Objects are kept as their serialized JSON (with
//! `resourceVersion` set), packed against a sibling's (see
//! [`crate::packed_json`]), plus the few fields selectors need, so serving
//! them copies bytes instead of re-encoding objects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use kybern_store::{EventKind, RangeRequest, Revision, Store};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::handlers::list::{field_of, selectable_fields};
use crate::object;
use crate::packed_json::{PackedJson, Packer, family_of};
use crate::packed_strings::PackedStrings;
use crate::registry::ResourceInfo;
use crate::request::ListOptions;
use crate::storage::ObjectStore;

/// Recent events kept per resource for watches that resume from a past revision.
const RING: usize = 10_000;
/// Live events buffered per watcher before it must catch up from the ring.
const FANOUT: usize = 1_024;

/// One object as the cache holds it.
#[derive(Debug)]
pub struct CachedObject {
    /// Store key (`<resource prefix>[<namespace>/]<name>`), shared with the
    /// cache's index; name and namespace are read from it.
    pub key: Arc<str>,
    /// Whether the key holds a namespace segment.
    pub namespaced: bool,
    /// `metadata.labels`, as keys and values in turn.
    pub labels: PackedStrings,
    /// The kind's selectable fields (beyond name and namespace).
    pub field_names: &'static [&'static str],
    /// Their values, in that order (empty where the object has none).
    pub fields: PackedStrings,
    /// The object as JSON, with its `resourceVersion`, packed.
    body: PackedJson,
    /// That `resourceVersion`: the store revision of the object's last change.
    pub revision: Revision,
}

impl CachedObject {
    /// The cached form of `obj`, its JSON kept whole (for caches of few objects).
    pub fn new(info: &ResourceInfo, key: &str, obj: &Value, revision: Revision) -> Self {
        let json = Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
        Self::with_json(info, key, obj, revision, PackedJson::whole(json))
    }

    /// The cached form of `obj`, packed by `packer`, and the watch line
    /// `{"type":<line_type>,"object":<json>}\n` for live watchers, encoded
    /// once for both.
    pub(crate) fn with_line(
        info: &ResourceInfo,
        key: &str,
        obj: &Value,
        revision: Revision,
        line_type: &'static str,
        packer: &mut Packer,
    ) -> (Self, Bytes) {
        let encoded = serde_json::to_vec(obj).unwrap_or_default();
        // Exact-size, so that a whole object keeps no growth slack.
        let mut framed = BytesMut::with_capacity(encoded.len() + line_type.len() + 24);
        watch_line_into(line_type, &encoded, &mut framed);
        let line = framed.freeze();
        let json = line.slice(line_prefix(line_type)..line.len() - 2);
        let body = packer.pack(family_of(obj), json);
        (Self::with_json(info, key, obj, revision, body), line)
    }

    fn with_json(
        info: &ResourceInfo,
        key: &str,
        obj: &Value,
        revision: Revision,
        body: PackedJson,
    ) -> Self {
        let field_names = selectable_fields(info);
        let values: Vec<String> = field_names
            .iter()
            .map(|f| field_of(obj, f).unwrap_or_default())
            .collect();
        let labels = object::labels(obj).and_then(Value::as_object);
        let labels = labels
            .into_iter()
            .flatten()
            .flat_map(|(k, v)| [k.as_str(), v.as_str().unwrap_or_default()]);
        CachedObject {
            key: Arc::from(key),
            namespaced: info.namespaced(),
            labels: PackedStrings::new(labels),
            field_names,
            fields: PackedStrings::new(values.iter().map(String::as_str)),
            body,
            revision,
        }
    }

    /// The object as JSON, with its `resourceVersion`.
    pub fn json(&self) -> Bytes {
        self.body.json()
    }

    /// Bytes this object's JSON holds in the cache.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.body.held()
    }

    /// `metadata.name`: the key's last segment (names hold no `/`).
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }

    /// `metadata.namespace`: the key's second-to-last segment, for namespaced kinds.
    pub fn namespace(&self) -> &str {
        if !self.namespaced {
            return "";
        }
        self.key.rsplit('/').nth(1).unwrap_or_default()
    }

    /// The value of the selectable field `name` (beyond name and namespace).
    pub fn field(&self, name: &str) -> Option<&str> {
        let i = self.field_names.iter().position(|f| *f == name)?;
        self.fields.get(i)
    }

    /// Whether the object passes the request's selectors.
    pub fn matches(&self, opts: &ListOptions) -> bool {
        opts.labels.matches_with(|k| self.labels.value_of(k))
            && opts.fields.matches(|f| match f {
                "metadata.name" => Some(self.name().to_owned()),
                "metadata.namespace" => Some(self.namespace().to_owned()),
                other => self.field(other).map(str::to_owned),
            })
    }
}

/// One change, as the cache fans it out.
#[derive(Debug)]
pub struct CachedEvent {
    /// Store revision of the change.
    pub revision: Revision,
    /// Put or delete.
    pub kind: EventKind,
    /// The object after the change; for a delete, the last state with the
    /// delete's revision as its `resourceVersion`.
    pub object: Arc<CachedObject>,
    /// The object before the change.
    pub prev: Option<Arc<CachedObject>>,
}

impl CachedEvent {
    /// The event type an unfiltered watcher sees.
    pub fn natural_type(&self) -> &'static str {
        match (self.kind, &self.prev) {
            (EventKind::Delete, _) => "DELETED",
            (EventKind::Put, Some(_)) => "MODIFIED",
            (EventKind::Put, None) => "ADDED",
        }
    }
}

/// A change as it happens: the event, and its watch line as every
/// unfiltered JSON watcher receives it, shared (a refcount per watcher, not
/// a copy). The line lives as long as some watcher has yet to read it; the
/// ring keeps only the packed event.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    /// The change.
    pub event: Arc<CachedEvent>,
    line: Bytes,
}

impl LiveEvent {
    fn new(event: Arc<CachedEvent>, line: Bytes, line_type: &'static str) -> Self {
        let kind = event.natural_type();
        let line = if kind == line_type {
            line
        } else {
            let json = line.slice(line_prefix(line_type)..line.len() - 2);
            let mut b = BytesMut::new();
            watch_line_into(kind, &json, &mut b);
            b.freeze()
        };
        LiveEvent { event, line }
    }

    /// `{"type":<natural type>,"object":<json>}\n`.
    pub fn line(&self) -> Bytes {
        self.line.clone()
    }

    /// The object's JSON: a slice of the line, not unpacked again.
    pub fn json(&self) -> Bytes {
        let start = line_prefix(self.event.natural_type());
        self.line.slice(start..self.line.len() - 2)
    }
}

/// Length of `{"type":"<kind>","object":`.
fn line_prefix(kind: &str) -> usize {
    kind.len() + 20
}

/// Appends one JSON watch line for an object already encoded as JSON.
pub fn watch_line_into(kind: &str, json: &[u8], out: &mut BytesMut) {
    out.reserve(json.len() + kind.len() + 24);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(json);
    out.put_slice(b"}\n");
}

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
    pub fn start(store: Arc<dyn Store>, info: Arc<ResourceInfo>) -> Arc<Self> {
        let (fanout, _) = broadcast::channel(FANOUT);
        let cache = Arc::new(WatchCache {
            info,
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
            let object =
                value.and_then(|v| decode(&self.info, &key, v, rev, line_type, &mut packer));
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
    pub fn get(&self, store: &Arc<dyn Store>, info: &Arc<ResourceInfo>) -> Option<Arc<WatchCache>> {
        if !info.watch_cached() {
            return None;
        }
        let mut map = self.by_prefix.lock().ok()?;
        Some(
            map.entry(info.key_prefix())
                .or_insert_with(|| WatchCache::start(store.clone(), info.clone()))
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn cached_pods_match_label_and_field_selectors() {
        let info = Registry::with_builtins()
            .get("", "v1", "pods")
            .expect("pods");
        let obj = serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": ""}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running"},
        });
        let pod = CachedObject::new(&info, "/registry/core/pods/ns/p", &obj, 3);
        assert_eq!(pod.field("spec.nodeName"), Some("n1"));
        assert_eq!(pod.field("status.podIP"), Some(""));
        assert_eq!(pod.field("spec.unknown"), None);
        let opts = |labels: &str, fields: &str| ListOptions {
            labels: kybern_apimachinery::labels::Selector::parse(labels).expect("labels"),
            fields: kybern_apimachinery::fields::FieldSelector::parse(fields).expect("fields"),
            limit: 0,
            continue_from: None,
            revision: crate::request::ListRevision::Latest,
            resource_version: None,
            watch: false,
            bookmarks: false,
            timeout_seconds: None,
            send_initial_events: None,
        };
        for (labels, fields, want) in [
            ("", "", true),
            ("app=web", "spec.nodeName=n1", true),
            ("app in (web,api),tier", "status.phase!=Pending", true),
            ("tier=", "metadata.name=p,metadata.namespace=ns", true),
            ("app=api", "", false),
            ("!tier", "", false),
            ("web", "", false),
            ("", "spec.nodeName=n2", false),
            ("", "status.podIP=10.0.0.1", false),
        ] {
            assert_eq!(
                pod.matches(&opts(labels, fields)),
                want,
                "{labels} / {fields}"
            );
        }
    }

    #[test]
    fn a_live_line_shares_the_cached_objects_bytes() {
        let info = Registry::with_builtins()
            .get("", "v1", "configmaps")
            .expect("configmaps");
        let obj =
            serde_json::json!({"metadata": {"name": "c", "namespace": "ns"}, "data": {"k": "v"}});
        let key = "/registry/core/configmaps/ns/c";
        let mut packer = Packer::default();
        let (object, line) = CachedObject::with_line(&info, key, &obj, 5, "MODIFIED", &mut packer);
        let object = Arc::new(object);
        let json = object.json();
        assert_eq!(
            serde_json::from_slice::<Value>(&json).ok(),
            Some(obj.clone())
        );
        let event = |kind, prev| {
            Arc::new(CachedEvent {
                revision: 5,
                kind,
                object: object.clone(),
                prev,
            })
        };
        let modified = LiveEvent::new(
            event(EventKind::Put, Some(object.clone())),
            line.clone(),
            "MODIFIED",
        );
        let expected = format!(
            "{{\"type\":\"MODIFIED\",\"object\":{}}}\n",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(modified.line(), expected.as_bytes());
        assert_eq!(modified.json(), json);
        // A small object is kept whole: the very bytes of the line, not a copy.
        let offset = modified.line().len() - json.len() - 2;
        assert_eq!(modified.line()[offset..].as_ptr(), json.as_ptr());
        // Another type than the line was made with is encoded apart.
        let added = LiveEvent::new(event(EventKind::Put, None), line, "MODIFIED");
        assert!(
            added
                .line()
                .starts_with(b"{\"type\":\"ADDED\",\"object\":{")
        );
        assert!(!added.line().as_ptr_range().contains(&json.as_ptr()));
        assert_eq!(added.json(), json);
    }

    #[test]
    fn large_siblings_are_held_packed_and_read_back_whole() {
        let info = Registry::with_builtins()
            .get("", "v1", "configmaps")
            .expect("configmaps");
        let mut packer = Packer::default();
        let held: Vec<(usize, usize)> = (0..3)
            .map(|i| {
                let obj = serde_json::json!({"metadata": {"name": format!("c{i}"), "namespace": "ns"},
                    "data": {"config": "setting = value\n".repeat(40)}});
                let key = format!("/registry/core/configmaps/ns/c{i}");
                let (o, line) = CachedObject::with_line(&info, &key, &obj, 5, "ADDED", &mut packer);
                assert_eq!(serde_json::from_slice::<Value>(&o.json()).ok(), Some(obj));
                (o.held(), line.len())
            })
            .collect();
        // The first is its family's reference; the rest pack against it.
        assert!(held[0].0 > 600, "{held:?}");
        assert!(
            held[1].0 * 10 < held[1].1 && held[2].0 * 10 < held[2].1,
            "{held:?}"
        );
    }
}
