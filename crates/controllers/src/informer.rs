//! Shared informers: one watch per resource kind, a local cache of every
//! object, and a fan-out of changes to each controller that subscribed.

use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

/// Changes buffered per subscriber before a slow one is told to resync.
const FAN_OUT_BUFFER: usize = 16_384;

/// One observed change of an object.
#[derive(Debug)]
pub enum Change<K> {
    /// The object appeared (first seen since the informer started).
    Added(Arc<K>),
    /// A newer version of an object already seen.
    Modified(Arc<K>),
    /// The object is gone; its last known state.
    Deleted(Arc<K>),
    /// The cache was rebuilt from a fresh list (or this subscriber fell
    /// behind): deletions may have been missed, so every object should be
    /// looked at again.
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

/// A watched kind: its cache and its stream of changes.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    synced: watch::Receiver<bool>,
    /// The watch task; stopped when the last handle on the informer goes
    /// (a controller manager that loses its Lease).
    task: tokio::task::AbortHandle,
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
        let (store, mut writer) = reflector::store();
        let reader = store.clone();
        let (changes, _) = broadcast::channel(FAN_OUT_BUFFER);
        let sender = changes.clone();
        let (synced_tx, synced) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying");
                        continue;
                    }
                };
                let change = match &event {
                    Event::Apply(obj) => {
                        let seen = store.get(&ObjectRef::from_obj(obj)).is_some();
                        let obj = Arc::new(obj.clone());
                        Some(if seen {
                            Change::Modified(obj)
                        } else {
                            Change::Added(obj)
                        })
                    }
                    Event::Delete(obj) => Some(Change::Deleted(Arc::new(obj.clone()))),
                    Event::InitDone => Some(Change::Resync),
                    Event::Init | Event::InitApply(_) => None,
                };
                writer.apply_watcher_event(&event);
                if matches!(event, Event::InitDone) {
                    let _ = synced_tx.send(true);
                }
                if let Some(change) = change {
                    // No subscriber yet is fine: they read the cache once synced.
                    let _ = changes.send(change);
                }
            }
        });
        Arc::new(Informer {
            store: reader,
            changes: sender,
            synced,
            task: task.abort_handle(),
        })
    }

    /// The cache of every object seen.
    pub fn store(&self) -> &Store<K> {
        &self.store
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
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// Every cached object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .collect()
    }
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
