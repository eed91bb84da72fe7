//! Objects this server has just written, encoded and indexed once: the
//! watch cache that meets a write's event takes its object from here instead
//! of decoding the stored bytes and encoding them again. An event is matched
//! to its write by the identity of the value's bytes (the store hands its
//! watchers the very `Bytes` it was given), so another server's write, or a
//! value the store changed, is never mistaken for one of these.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::cache::IndexedFields;
use crate::object::Object;
use crate::packed_json::family_of;
use crate::registry::ResourceInfo;
use crate::storage::Encoded;

/// Writes held at most: more than are ever between a put and its event,
/// few enough that notes nobody takes (a resource whose cache has not
/// started, a cache restarting) cost little.
const HELD: usize = 1024;
/// Bytes of JSON held at most, whatever the count (objects reach 3 MiB).
const HELD_BYTES: usize = 32 << 20;

/// One written object as its watch cache wants it.
#[derive(Debug)]
pub struct Prepared {
    /// The stored JSON and where its `resourceVersion` goes.
    pub encoded: Encoded,
    /// The labels and selectable fields.
    pub index: IndexedFields,
    /// Its family, for packing (see [`family_of`]).
    pub family: String,
}

impl Prepared {
    /// `obj`, of `info`'s kind, encoded as `encoded`.
    pub fn new(info: &ResourceInfo, obj: &Object, encoded: Encoded) -> Self {
        Prepared {
            encoded,
            index: IndexedFields::of(info, obj),
            family: family_of(obj).to_owned(),
        }
    }
}

/// Recent writes by store key, the newest per key.
#[derive(Default)]
pub struct WrittenObjects {
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    by_key: HashMap<String, (u64, Prepared)>,
    /// Keys in the order noted, with the note's sequence number.
    order: VecDeque<(u64, String)>,
    next: u64,
    /// JSON bytes of the notes in `by_key`.
    bytes: usize,
}

impl Held {
    fn remove(&mut self, key: &str) -> Option<Prepared> {
        let (_, p) = self.by_key.remove(key)?;
        self.bytes -= p.encoded.bytes.len();
        Some(p)
    }
}

fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

impl WrittenObjects {
    /// Notes a write about to be put under `key`.
    pub fn note(&self, key: &str, prepared: Prepared) {
        let Ok(mut held) = self.inner.lock() else {
            return;
        };
        let seq = held.next;
        held.next += 1;
        held.remove(key);
        held.bytes += prepared.encoded.bytes.len();
        held.by_key.insert(key.to_owned(), (seq, prepared));
        held.order.push_back((seq, key.to_owned()));
        while held.order.len() > HELD || held.bytes > HELD_BYTES {
            let Some((old, key)) = held.order.pop_front() else {
                break;
            };
            if held.by_key.get(&key).is_some_and(|(s, _)| *s == old) {
                held.remove(&key);
            }
        }
    }

    /// The write whose stored value is `value`, if this server noted it.
    pub fn take(&self, key: &str, value: &Bytes) -> Option<Prepared> {
        let mut held = self.inner.lock().ok()?;
        match held.by_key.get(key) {
            Some((_, p)) if same_bytes(&p.encoded.bytes, value) => held.remove(key),
            _ => None,
        }
    }

    /// Drops the note of a write that failed.
    pub fn forget(&self, key: &str, value: &Bytes) {
        let _ = self.take(key, value);
    }

    /// Writes held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.inner.lock().map(|h| h.by_key.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use crate::storage::ObjectStore;
    use serde_json::json;

    fn prepared(name: &str) -> Prepared {
        let info = Registry::with_builtins()
            .get("", "v1", "configmaps")
            .expect("configmaps");
        let mut obj = json!({"kind": "ConfigMap", "metadata": {"name": name, "namespace": "d"}});
        let encoded = ObjectStore::encode(&mut obj).expect("encodes");
        Prepared::new(&info, &obj, encoded)
    }

    #[test]
    fn a_write_is_taken_only_by_its_own_bytes() {
        let written = WrittenObjects::default();
        let p = prepared("a");
        let ours = p.encoded.bytes.clone();
        let copy = Bytes::copy_from_slice(&ours);
        written.note("k", p);
        assert!(
            written.take("k", &copy).is_none(),
            "equal bytes elsewhere are not ours"
        );
        assert!(written.take("other", &ours).is_none());
        assert!(written.take("k", &ours).is_some());
        assert!(written.take("k", &ours).is_none(), "taken once");
    }

    #[test]
    fn a_newer_write_replaces_the_older_and_failures_are_forgotten() {
        let written = WrittenObjects::default();
        let (a, b) = (prepared("a"), prepared("b"));
        let (first, second) = (a.encoded.bytes.clone(), b.encoded.bytes.clone());
        written.note("k", a);
        written.note("k", b);
        assert!(written.take("k", &first).is_none());
        written.forget("k", &second);
        assert_eq!(written.held(), 0);
    }

    #[test]
    fn notes_nobody_takes_are_let_go_by_count_and_by_size() {
        let written = WrittenObjects::default();
        for i in 0..HELD + 100 {
            written.note(&format!("k{i}"), prepared("a"));
        }
        assert_eq!(written.held(), HELD);
        let big = "x".repeat(3 << 20);
        for i in 0..20 {
            written.note(&format!("big{i}"), prepared(&big));
        }
        let bytes = written.inner.lock().map(|h| h.bytes).unwrap_or(usize::MAX);
        assert!(bytes <= HELD_BYTES, "{bytes}");
        assert!(written.held() < 12, "{}", written.held());
    }
}
