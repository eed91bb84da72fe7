//! Shared informers: one watch per resource kind, a local cache of every
//! object, and a fan-out of changes to each controller that subscribed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

/// Changes buffered per subscriber before a slow one is told to resync:
/// pods change in bursts of thousands (a rollout, a relist); other kinds
/// far less. Each buffer is allocated whole when the informer starts.
const POD_FAN_OUT_BUFFER: usize = 16_384;
const FAN_OUT_BUFFER: usize = 2_048;

/// One observed change of an object.
#[derive(Debug)]
pub enum Change<K> {
    /// The object appeared (first seen since the informer started).
    Added(Arc<K>),
    /// A newer version of an object already seen.
    Modified(Arc<K>),
    /// The object is gone; its last known state.
    Deleted(Arc<K>),
    /// The first list filled the cache, or this subscriber fell behind:
    /// changes may have been missed, so every object should be looked at
    /// again. (A later relist is sent as the changes it brought.)
    Resync,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Added(o) => Change::Added(o.clone()),
            Change::Modified(o) => Change::Modified(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resync => Change::Resync,
        }
    }
}

/// The cached objects of a kind: by namespace and name, and by the uid of
/// their controlling owner, each object held once and shared with the
/// changes sent to subscribers.
struct Cache<K> {
    objects: HashMap<String, HashMap<String, Arc<K>>>,
    by_controller: HashMap<String, HashSet<(String, String)>>,
    len: usize,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: HashMap::new(),
            by_controller: HashMap::new(),
            len: 0,
        }
    }
}

fn key_of<K: Resource>(obj: &K) -> (String, String) {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn controller_uid<K: Resource>(obj: &K) -> Option<String> {
    crate::pods::controller_of(obj.meta()).map(|o| o.uid.clone())
}

impl<K: Resource> Cache<K> {
    /// Stores `obj`; returns the version it replaced.
    fn insert(&mut self, obj: Arc<K>) -> Option<Arc<K>> {
        let key = key_of(obj.as_ref());
        let owner = controller_uid(obj.as_ref());
        let old = self
            .objects
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone(), obj);
        match &old {
            Some(o) => self.unindex(&key, controller_uid(o.as_ref())),
            None => self.len += 1,
        }
        // Objects without a controller are indexed under "".
        self.by_controller
            .entry(owner.unwrap_or_default())
            .or_default()
            .insert(key);
        old
    }

    fn remove(&mut self, obj: &K) -> Option<Arc<K>> {
        let key = key_of(obj);
        let names = self.objects.get_mut(&key.0)?;
        let old = names.remove(&key.1)?;
        if names.is_empty() {
            self.objects.remove(&key.0);
        }
        self.len -= 1;
        self.unindex(&key, controller_uid(old.as_ref()));
        Some(old)
    }

    /// What changed from this cache to `newer`: objects added, objects
    /// whose `resourceVersion` moved, and objects gone (as last seen here).
    fn changes_to(&self, newer: &Cache<K>) -> Vec<Change<K>> {
        let mut out = Vec::new();
        for (ns, names) in &newer.objects {
            let before = self.objects.get(ns);
            for (name, obj) in names {
                match before.and_then(|b| b.get(name)) {
                    None => out.push(Change::Added(obj.clone())),
                    Some(old) if old.meta().resource_version != obj.meta().resource_version => {
                        out.push(Change::Modified(obj.clone()));
                    }
                    Some(_) => {}
                }
            }
        }
        for (ns, names) in &self.objects {
            let after = newer.objects.get(ns);
            for (name, obj) in names {
                if after.is_none_or(|a| !a.contains_key(name)) {
                    out.push(Change::Deleted(obj.clone()));
                }
            }
        }
        out
    }

    fn unindex(&mut self, key: &(String, String), owner: Option<String>) {
        let uid = owner.unwrap_or_default();
        if let Some(set) = self.by_controller.get_mut(&uid) {
            set.remove(key);
            if set.is_empty() {
                self.by_controller.remove(&uid);
            }
        }
    }
}

/// A watched kind: its cache and its stream of changes.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    cache: Arc<RwLock<Cache<K>>>,
    changes: broadcast::Sender<Change<K>>,
    synced: watch::Receiver<bool>,
    /// The watch task; stopped when the last handle on the informer goes
    /// (a controller manager that loses its Lease).
    task: tokio::task::AbortHandle,
}

impl<K: Resource<DynamicType = ()> + 'static> std::fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("kind", &K::kind(&()))
            .finish_non_exhaustive()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Starts watching `api` (all namespaces, or one) in a background task.
    pub fn spawn(api: Api<K>) -> Arc<Self> {
        Self::spawn_with(api, watcher::Config::default())
    }

    /// Starts watching `api` with selectors in `config`.
    pub fn spawn_with(api: Api<K>, config: watcher::Config) -> Arc<Self> {
        let cache: Arc<RwLock<Cache<K>>> = Arc::default();
        let capacity = if K::kind(&()) == "Pod" {
            POD_FAN_OUT_BUFFER
        } else {
            FAN_OUT_BUFFER
        };
        let (changes, _) = broadcast::channel(capacity);
        let sender = changes.clone();
        let (synced_tx, synced) = watch::channel(false);
        let writer = cache.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).default_backoff().boxed();
            // A relist fills a fresh cache, swapped in whole when it ends.
            let mut relist: Option<Cache<K>> = None;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying");
                        continue;
                    }
                };
                let change = match event.modify(trim) {
                    Event::Apply(obj) => {
                        let obj = Arc::new(obj);
                        let old = write(&writer).insert(obj.clone());
                        Some(match old {
                            Some(_) => Change::Modified(obj),
                            None => Change::Added(obj),
                        })
                    }
                    Event::Delete(obj) => {
                        let old = write(&writer).remove(&obj);
                        Some(Change::Deleted(old.unwrap_or_else(|| Arc::new(obj))))
                    }
                    Event::Init => {
                        relist = Some(Cache::default());
                        None
                    }
                    Event::InitApply(obj) => {
                        relist
                            .get_or_insert_with(Cache::default)
                            .insert(Arc::new(obj));
                        None
                    }
                    Event::InitDone => {
                        let fresh = relist.take().unwrap_or_default();
                        let diff = {
                            let mut cache = write(&writer);
                            let old = std::mem::replace(&mut *cache, fresh);
                            // A relist after a lost watch is told as the
                            // changes it brought, as client-go's informers
                            // do: a controller counting the pods it created
                            // must see each one added.
                            (*synced_tx.borrow()).then(|| old.changes_to(&cache))
                        };
                        let _ = synced_tx.send(true);
                        match diff {
                            Some(diff) => {
                                for change in diff {
                                    let _ = changes.send(change);
                                }
                                None
                            }
                            // The first list: subscribers read the cache.
                            None => Some(Change::Resync),
                        }
                    }
                };
                if let Some(change) = change {
                    // No subscriber yet is fine: they read the cache once synced.
                    let _ = changes.send(change);
                }
            }
        });
        Arc::new(Informer {
            cache,
            changes: sender,
            synced,
            task: task.abort_handle(),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache<K>> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<K>> {
        let cache = self.read();
        let mut out = Vec::with_capacity(cache.len);
        for names in cache.objects.values() {
            out.extend(names.values().cloned());
        }
        out
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }

    /// Waits until the first list has filled the cache.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// The cached object `namespace/name`.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        self.read()
            .objects
            .get(namespace.unwrap_or_default())?
            .get(name)
            .cloned()
    }

    /// Every cached object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .objects
            .get(namespace)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The cached objects whose controlling owner has `uid` (not empty).
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<K>> {
        if uid.is_empty() {
            return Vec::new();
        }
        let cache = self.read();
        let Some(keys) = cache.by_controller.get(uid) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|(ns, name)| cache.objects.get(ns)?.get(name).cloned())
            .collect()
    }

    /// The cached objects in `namespace` without a controlling owner.
    pub fn orphans_in(&self, namespace: &str) -> Vec<Arc<K>> {
        let cache = self.read();
        let (Some(keys), Some(names)) = (cache.by_controller.get(""), cache.objects.get(namespace))
        else {
            return Vec::new();
        };
        keys.iter()
            .filter(|(ns, _)| ns == namespace)
            .filter_map(|(_, name)| names.get(name).cloned())
            .collect()
    }
}

/// Drops what no controller reads before an object is cached. Pods are
/// cached as `CachedPod`, which decodes only what the control plane reads.
fn trim<K: Resource>(obj: &mut K) {
    kybern_apimachinery::cached_pod::trim_metadata(obj.meta_mut());
}

fn write<K>(cache: &RwLock<Cache<K>>) -> RwLockWriteGuard<'_, Cache<K>> {
    cache.write().unwrap_or_else(PoisonError::into_inner)
}

/// Receives the next change, turning a subscriber that fell behind into a
/// resync rather than an error. `None` when the informer is gone.
pub async fn next_change<K>(rx: &mut broadcast::Receiver<Change<K>>) -> Option<Change<K>>
where
    K: Clone,
{
    match rx.recv().await {
        Ok(change) => Some(change),
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            tracing::warn!(missed, "controller fell behind its informer; resyncing");
            Some(Change::Resync)
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(ns: &str, name: &str, rv: &str) -> Arc<ConfigMap> {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c.metadata.resource_version = Some(rv.into());
        Arc::new(c)
    }

    fn described(changes: Vec<Change<ConfigMap>>) -> Vec<String> {
        let mut out: Vec<String> = changes
            .into_iter()
            .map(|c| {
                let (verb, o) = match c {
                    Change::Added(o) => ("added", o),
                    Change::Modified(o) => ("modified", o),
                    Change::Deleted(o) => ("deleted", o),
                    Change::Resync => return "resync".to_owned(),
                };
                let m = &o.metadata;
                format!(
                    "{verb} {}/{}@{}",
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default(),
                    m.resource_version.as_deref().unwrap_or_default()
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_relist_is_told_as_the_changes_it_brought() {
        let cache_of = |objects: [Arc<ConfigMap>; 4]| {
            let mut cache = Cache::default();
            for o in objects {
                cache.insert(o);
            }
            cache
        };
        let old = cache_of([
            cm("a", "same", "1"),
            cm("a", "moved", "2"),
            cm("a", "gone", "3"),
            cm("b", "alone", "4"),
        ]);
        let new = cache_of([
            cm("a", "same", "1"),
            cm("a", "moved", "7"),
            cm("a", "born", "8"),
            cm("c", "x", "9"),
        ]);
        assert_eq!(
            described(old.changes_to(&new)),
            [
                "added a/born@8",
                "added c/x@9",
                "deleted a/gone@3",
                "deleted b/alone@4",
                "modified a/moved@7",
            ]
        );
        assert!(new.changes_to(&new).is_empty());
    }
}
