//! Expectations: the creations and deletions a controller asked for and has
//! not yet seen in its informer, so that a sync reading a cache that lags
//! behind its own writes does not create or delete the same pods twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::ObjectKey;

/// After this long, expectations are assumed lost (client-go: 5 minutes).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
struct Pending {
    adds: i64,
    /// Pods asked to be deleted and not yet seen terminating or gone, by uid,
    /// so a pod seen several times counts once (client-go's UID tracking).
    deletes: HashSet<String>,
    set_at: Instant,
}

/// Pending creations and deletions per controller object.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `adds` creations and the deletions of `deletes` (pod
    /// uids) are on the way.
    pub fn expect(&self, key: &ObjectKey, adds: usize, deletes: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.clone(),
            Pending {
                adds: i64::try_from(adds).unwrap_or(i64::MAX),
                deletes: deletes.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// One expected creation was seen (or will never happen).
    pub fn creation_observed(&self, key: &ObjectKey) {
        if let Some(p) = self.lock().get_mut(key) {
            p.adds -= 1;
        }
    }

    /// The pod `uid` was seen terminating or gone (or will not be deleted).
    pub fn deletion_observed(&self, key: &ObjectKey, uid: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.deletes.remove(uid);
        }
    }

    /// Records what a pod change tells the expectations of its controller,
    /// if that is of `kind`, and returns the controller's key to sync. A
    /// terminating pod counts as deleted, as upstream: it is no longer
    /// active, and it may take its whole grace period to go.
    pub fn pod_changed(
        &self,
        kind: &str,
        pod: &kybern_apimachinery::cached_pod::CachedPod,
        added: bool,
        deleted: bool,
    ) -> Option<ObjectKey> {
        let owner = crate::pods::controller_of(&pod.metadata).filter(|o| o.kind == kind)?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let key = ObjectKey::namespaced(ns, &owner.name);
        if added {
            self.creation_observed(&key);
        }
        if deleted || pod.metadata.deletion_timestamp.is_some() {
            self.deletion_observed(&key, pod.metadata.uid.as_deref().unwrap_or_default());
        }
        Some(key)
    }

    /// Whether the cache has caught up with every write asked for, so the
    /// controller may act on what it sees.
    pub fn satisfied(&self, key: &ObjectKey) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(p) => {
                (p.adds <= 0 && p.deletes.is_empty()) || p.set_at.elapsed() > EXPECTATIONS_TTL
            }
        }
    }

    /// How long until the unsatisfied expectations of `key` lapse (`None`
    /// when they are satisfied): a controller that waits on them looks
    /// again then, since no event may ever come to satisfy them.
    pub fn lapse_in(&self, key: &ObjectKey) -> Option<Duration> {
        let pending = self.lock();
        let p = pending.get(key)?;
        if p.adds <= 0 && p.deletes.is_empty() {
            return None;
        }
        EXPECTATIONS_TTL.checked_sub(p.set_at.elapsed())
    }

    /// Drops the record of a controller object that is gone.
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_every_write_is_observed() {
        let e = Expectations::default();
        let k = ObjectKey::namespaced("ns", "rs");
        assert!(e.satisfied(&k));
        e.expect(&k, 2, ["u1".to_owned()]);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        e.creation_observed(&k);
        assert!(!e.satisfied(&k));
        e.deletion_observed(&k, "other");
        assert!(!e.satisfied(&k));
        assert!(e.lapse_in(&k).is_some_and(|d| d > Duration::from_secs(290)));
        e.deletion_observed(&k, "u1");
        e.deletion_observed(&k, "u1");
        assert!(e.satisfied(&k));
        assert_eq!(e.lapse_in(&k), None);
    }
}
