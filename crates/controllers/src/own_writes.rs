//! Own writes: the resourceVersion of each object's last write by a
//! controller, so a sync can tell its informer has not caught up with it.
//!
//! A Job's counters live in its status, while the pods it counted lose
//! their tracking finalizer right after. The pod and Job informers are
//! separate watches: the pod's change can arrive first, and a sync that
//! reads the older Job then neither sees the pod (released) nor its count
//! (not yet seen), and starts a pod too many. Waiting for the Job informer
//! to reach the version written closes that gap.
//!
//! Kybern's resourceVersions are integers that grow with every write (the
//! SQLite log index, or the etcd revision), so in-tree controllers may
//! order them. A version that does not parse is treated as current.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::queue::ObjectKey;

/// The last version written per object, until the informer shows it.
#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<ObjectKey, u64>>,
}

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, u64>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that this controller wrote `key` at `resource_version`.
    pub fn wrote(&self, key: &ObjectKey, resource_version: Option<&str>) {
        if let Some(v) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            let mut written = self.lock();
            let at = written.entry(key.clone()).or_default();
            *at = (*at).max(v);
        }
    }

    /// Whether the cached copy of `key`, at `cached_version`, already
    /// includes this controller's last write; forgets the write once it does.
    pub fn seen(&self, key: &ObjectKey, cached_version: Option<&str>) -> bool {
        let mut written = self.lock();
        let Some(&at) = written.get(key) else {
            return true;
        };
        match cached_version.and_then(|v| v.parse::<u64>().ok()) {
            Some(v) if v < at => false,
            _ => {
                written.remove(key);
                true
            }
        }
    }

    /// Forgets `key` (the object is gone).
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Some("default".into()),
            name: name.into(),
        }
    }

    #[test]
    fn a_cache_behind_the_last_write_is_not_current_until_it_catches_up() {
        let w = OwnWrites::default();
        assert!(w.seen(&key("a"), Some("5")), "nothing written yet");
        w.wrote(&key("a"), Some("10"));
        assert!(!w.seen(&key("a"), Some("9")));
        assert!(w.seen(&key("b"), Some("1")), "other objects are unaffected");
        assert!(w.seen(&key("a"), Some("12")), "a later write by anyone");
        assert!(w.seen(&key("a"), Some("3")), "forgotten once seen");
    }

    #[test]
    fn the_latest_write_counts_and_odd_versions_count_as_current() {
        let w = OwnWrites::default();
        w.wrote(&key("a"), Some("20"));
        w.wrote(&key("a"), Some("15"));
        assert!(!w.seen(&key("a"), Some("19")));
        assert!(w.seen(&key("a"), Some("not-a-number")));
        w.wrote(&key("a"), Some("30"));
        w.forget(&key("a"));
        assert!(w.seen(&key("a"), Some("1")));
        w.wrote(&key("a"), None);
        assert!(
            w.seen(&key("a"), Some("1")),
            "an unknown write is not waited for"
        );
    }
}
