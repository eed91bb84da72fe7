//! The `Store` trait: etcd's model, implemented by every backend.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::Result;
use crate::types::{
    DeleteResponse, Event, GetResponse, Precondition, RangeRequest, RangeResponse, Revision,
};

/// A stream of watch events in revision order. It never skips or repeats an event.
/// After it yields an error (for instance [`crate::StoreError::Compacted`] when the
/// watcher fell behind compaction) it ends.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// A key-value store with etcd's semantics.
///
/// Every write is durable before its future resolves and is given the next global
/// revision. Reads return the revision they were served at, so that a caller can
/// watch from the revision after it and see every later change exactly once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision, or at `revision` when it is not 0.
    async fn get(&self, key: &str, revision: Revision) -> Result<GetResponse>;

    /// Reads the keys under a prefix, in key order.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Writes `value` under `key` if `precondition` holds and returns the new revision.
    ///
    /// Fails with `AlreadyExists` (for [`Precondition::Absent`]), `NotFound` or
    /// `Conflict` (for [`Precondition::ModRevision`]) without writing anything.
    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<Revision>;

    /// Deletes `key` if `precondition` holds ([`Precondition::Absent`] is not
    /// meaningful here and is rejected as a conflict). Fails with `NotFound` when
    /// the key does not exist.
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<DeleteResponse>;

    /// Streams every change under `prefix` with revision `>= start_revision`, each
    /// with the previous value. `start_revision` 0 means "changes after now".
    /// Fails with `Compacted` when `start_revision` is at or below the compaction point.
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream>;

    /// Discards history older than `revision`: reads below it fail with `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The size of the database on disk, in bytes.
    async fn db_size(&self) -> Result<u64>;

    /// Whether a watch event of this process's own write carries the very
    /// `Bytes` the write was given (not a copy), so that a caller can tell
    /// its own writes from others' by identity.
    fn shares_written_values(&self) -> bool {
        false
    }

    /// Creates `key`; fails with `AlreadyExists` if it is present.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.put(key, value, Precondition::Absent).await
    }

    /// Replaces `key` if its mod revision is `expected`.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        self.put(key, value, Precondition::ModRevision(expected))
            .await
    }
}
