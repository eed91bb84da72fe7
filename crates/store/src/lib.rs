//! The Kybern store: the only place cluster state lives, with etcd's data model.
//!
//! This crate owns the [`Store`] trait and its two backends: [`SqliteStore`], an
//! embedded revision log (the default), and [`EtcdStore`], a client of a real etcd
//! cluster. Both share one model: a global, strictly increasing revision; reads at
//! the current or a past revision; compare-and-swap writes; ordered watches that
//! carry the previous value; and compaction of old history.
//!
//! Only the API server uses this crate. It knows nothing of Kubernetes objects:
//! keys are strings and values are opaque bytes.

mod compactor;
mod error;
mod etcd;
pub mod etcd_process;
mod key;
mod sqlite;
mod store;
mod types;
mod url;

pub use compactor::{Compactor, CompactorOptions};
pub use error::StoreError;
pub use etcd::{EtcdOptions, EtcdStore};
pub use key::{MAX_KEY_BYTES, MAX_VALUE_BYTES, prefix_range_end, validate_key, validate_prefix};
pub use sqlite::{SqliteOptions, SqliteStore};
pub use store::{Store, WatchStream};
pub use types::{
    DeleteResponse, Event, EventKind, GetResponse, KeyValue, Precondition, RangeRequest,
    RangeResponse, Revision,
};
pub use url::StoreUrl;

/// Result type of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
