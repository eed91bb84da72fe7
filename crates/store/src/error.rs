//! The store's error type: one variant per outcome a caller must tell apart.

use crate::types::{KeyValue, Revision};

/// Why a store operation failed.
///
/// The API server maps these to Kubernetes `Status` reasons: `AlreadyExists` to 409
/// AlreadyExists, `Conflict` to 409 Conflict, `NotFound` to 404, `Compacted` to
/// 410 Expired, `InvalidKey`/`ValueTooLarge` to 4xx, the rest to 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key (or prefix) is empty or malformed.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key, cut to a printable length.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value is larger than [`crate::MAX_VALUE_BYTES`].
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A create found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key is absent (update, delete or a conditional write on a missing key).
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap found another modification revision.
    #[error("key {key:?} was modified: expected mod revision {expected}, found {}", current.as_ref().map_or(0, |kv| kv.mod_revision))]
    Conflict {
        /// The key.
        key: String,
        /// The mod revision the caller expected.
        expected: Revision,
        /// What the key holds now, so that a caller can retry without another read.
        current: Option<Box<KeyValue>>,
    },
    /// The requested revision is older than the compaction point.
    #[error("revision {revision} has been compacted")]
    Compacted {
        /// The revision that was asked for.
        revision: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {revision} is in the future (current is {current})")]
    FutureRevision {
        /// The revision that was asked for.
        revision: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The database file is not a Kybern store, or is damaged.
    #[error("database is corrupt or not a Kybern store: {0}")]
    Corrupt(String),
    /// The backend failed (I/O error, full disk, lost connection). Nothing in the
    /// failed request was acknowledged.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// True when retrying the same request later might succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}
