//! Where the scheduler learns of pods: its own watch, or a feed of pods its
//! process already caches for other components (the controller manager's
//! informer inside `kybern server`), so that one copy of every pod serves both.

use std::sync::Arc;

use futures::stream::BoxStream;
use kube::runtime::watcher;
use kybern_apimachinery::cached_pod::CachedPod;

/// One change of the pods the scheduler sees, in a watcher's terms.
#[derive(Clone, Debug)]
pub enum PodEvent {
    /// A full list begins: what it does not apply afterwards is gone.
    Init,
    /// A pod as it is now (from a list or a change).
    Apply(Arc<CachedPod>),
    /// A pod was deleted; its last state.
    Delete(Arc<CachedPod>),
    /// The full list ended.
    InitDone,
}

/// Makes a fresh feed each time the scheduler starts (it starts again on
/// every leadership term). Pods arrive as
/// `kybern_apimachinery::cached_pod::CachedPod`s.
pub type PodFeed = Arc<dyn Fn() -> BoxStream<'static, PodEvent> + Send + Sync>;

/// A change from the scheduler's own watch of every pod, decoded as the
/// shared feed's pods are, so that it decides the same either way.
pub(crate) fn from_watch(event: watcher::Event<CachedPod>) -> PodEvent {
    let cached = |mut pod: CachedPod| {
        kybern_apimachinery::cached_pod::trim_metadata(&mut pod.metadata);
        Arc::new(pod)
    };
    match event {
        watcher::Event::Init => PodEvent::Init,
        watcher::Event::InitApply(p) | watcher::Event::Apply(p) => PodEvent::Apply(cached(p)),
        watcher::Event::Delete(p) => PodEvent::Delete(cached(p)),
        watcher::Event::InitDone => PodEvent::InitDone,
    }
}
