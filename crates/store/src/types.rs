//! Plain data carried in and out of the store: revisions, key-values, events, requests.

use bytes::Bytes;

/// A store revision. Revision 0 means "none" or "current", depending on context;
/// the first write has revision 1 or more.
pub type Revision = i64;

/// One key with its value and its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty in a delete event's `kv`).
    pub value: Bytes,
    /// Revision of the write that created this key (in its current life).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What a write did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete: the key, an empty value, and
    /// `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// True when this put created the key (rather than updating it).
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// The condition a write requires to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// No condition: put overwrites or creates; delete removes whatever is there.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this modification revision.
    ModRevision(Revision),
}

/// The answer to a single-key read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    /// The key, if it exists at the revision read.
    pub kv: Option<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// A prefix read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// Every key that starts with this prefix is in range.
    pub prefix: String,
    /// Start strictly after this key (a continue token); `None` starts at the prefix.
    pub start_after: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read at this past revision; 0 means the current revision.
    pub revision: Revision,
}

impl RangeRequest {
    /// Every key under `prefix`, at the current revision.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        RangeRequest {
            prefix: prefix.into(),
            ..RangeRequest::default()
        }
    }
}

/// The answer to a prefix read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// True when the limit cut the answer short.
    pub more: bool,
    /// How many keys the range holds from its start (ignoring the limit), so that
    /// `count - kvs.len()` keys remain after this page.
    pub count: u64,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// The answer to a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The revision of the delete.
    pub revision: Revision,
    /// What the key held before it was deleted.
    pub prev: KeyValue,
}
