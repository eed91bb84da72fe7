//! The backends under test, each started fresh for one test.

use std::sync::Arc;

use kybern_store::etcd_process::EtcdProcess;
use kybern_store::{EtcdOptions, EtcdStore, SqliteOptions, SqliteStore, Store};

/// A store and whatever must live as long as it.
pub struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdProcess>,
}

impl Backend {
    /// A fresh sqlite store in a temporary directory, without automatic compaction
    /// (the suite compacts explicitly).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = SqliteOptions::new(dir.path().join("store.db"));
        options.compaction = None;
        let store = SqliteStore::open(options).expect("open sqlite store");
        Backend {
            store,
            _dir: Some(dir),
            _etcd: None,
        }
    }

    /// A fresh etcd server on loopback, and our backend connected to it.
    pub async fn etcd() -> Self {
        let etcd = EtcdProcess::start().expect("start etcd (Debian package etcd-server)");
        let store = EtcdStore::connect(EtcdOptions::new(vec![etcd.endpoint.clone()]))
            .await
            .expect("connect to etcd");
        Backend {
            store: Arc::new(store),
            _dir: None,
            _etcd: Some(etcd),
        }
    }

    /// The store under test.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}
