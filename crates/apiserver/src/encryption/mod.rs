//! Encryption at rest: an upstream `EncryptionConfiguration` names, per
//! resource, the providers that seal what the store holds (`aesgcm`,
//! `identity`); the first seals new writes, every one of them can open
//! what it sealed. [`EncryptingStore`] applies it beneath the whole API
//! server, so the watch caches, watches and every write path see plain
//! objects while the store (SQLite or etcd) sees only sealed ones.

mod config;
mod store;

pub use config::{EncryptionConfig, EncryptionError};
pub use store::EncryptingStore;
