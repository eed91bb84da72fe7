//! The embedded sqlite backend: a revision log in one database file.
//!
//! Writes go through one writer thread that batches concurrent requests into one
//! transaction (group commit); the WAL is fsynced (`synchronous = FULL`) before any
//! write in the batch is acknowledged. Reads use a pool of snapshot readers.
//! Watchers are fed from the write path and from the log when they fall behind.

mod checkpoint;
mod fanout;
mod reader;
mod schema;
mod watch;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::compactor::{Compactor, CompactorOptions};
use crate::error::StoreError;
use crate::key::{validate_key, validate_prefix, validate_value};
use crate::store::{Store, WatchStream};
use crate::types::{
    DeleteResponse, GetResponse, Precondition, RangeRequest, RangeResponse, Revision,
};
use reader::ReadPool;
use writer::{WriteOp, Writer};

/// Options for [`SqliteStore::open`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The database file; created if absent.
    pub path: PathBuf,
    /// Automatic compaction; `None` keeps all history until [`Store::compact`] is called.
    pub compaction: Option<CompactorOptions>,
    /// Committed batches buffered for watchers before a slow one falls back to the log.
    pub watch_buffer: usize,
    /// The most bytes of keys and values those batches may hold.
    pub watch_buffer_bytes: usize,
    /// Events buffered per watcher between the store and its consumer.
    pub watcher_queue: usize,
}

impl SqliteOptions {
    /// Defaults for a database at `path`: automatic compaction on.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            compaction: Some(CompactorOptions::default()),
            watch_buffer: 1024,
            watch_buffer_bytes: 32 << 20,
            watcher_queue: 1024,
        }
    }
}

/// The embedded store. Cheap to share through the `Arc` that [`SqliteStore::open`] returns.
pub struct SqliteStore {
    path: PathBuf,
    writes: Mutex<Option<std_mpsc::Sender<WriteOp>>>,
    revision: Arc<AtomicI64>,
    events: fanout::BatchPublisher,
    pool: Arc<ReadPool>,
    watcher_queue: usize,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: File,
    compactor: Mutex<Option<Compactor>>,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl SqliteStore {
    /// Opens (or creates) the store. Must be called inside a tokio runtime when
    /// automatic compaction is on. Fails with `Corrupt` for a file that is not a
    /// Kybern store, and with `Backend` when another process has it open.
    pub fn open(options: SqliteOptions) -> Result<Arc<Self>, StoreError> {
        let path = options.path.clone();
        let lock = File::create(lock_path(&path))
            .map_err(|e| StoreError::Backend(format!("cannot create lock file: {e}")))?;
        lock.try_lock().map_err(|_| {
            StoreError::Backend(format!("{} is in use by another process", path.display()))
        })?;

        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(schema::sql_error)?;
        schema::configure(&conn)?;
        let meta = schema::prepare(&mut conn)?;
        tracing::info!(path = %path.display(), revision = meta.revision, compacted = meta.compacted, "opened sqlite store");

        let revision = Arc::new(AtomicI64::new(meta.revision));
        let events = fanout::feed(options.watch_buffer.max(16), options.watch_buffer_bytes);
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            conn,
            meta,
            revision: revision.clone(),
            events: events.clone(),
            compact_waiters: Vec::new(),
        };
        let checkpointer = checkpoint::Checkpointer::start(&path)?;
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;

        let store = Arc::new(SqliteStore {
            pool: Arc::new(ReadPool::new(path.clone())),
            path,
            writes: Mutex::new(Some(tx)),
            revision,
            events,
            watcher_queue: options.watcher_queue.max(1),
            writer_thread: Mutex::new(Some(writer_thread)),
            _lock: lock,
            compactor: Mutex::new(None),
            checkpointer: Mutex::new(Some(checkpointer)),
        });
        if let Some(opts) = options.compaction {
            let compactor = Compactor::spawn(Arc::downgrade(&store), opts);
            if let Ok(mut slot) = store.compactor.lock() {
                *slot = Some(compactor);
            }
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting writes and waits for those already queued to commit.
    pub fn close(&self) {
        if let Ok(mut writes) = self.writes.lock() {
            writes.take();
        }
        if let Ok(mut compactor) = self.compactor.lock() {
            compactor.take();
        }
        if let Ok(mut checkpointer) = self.checkpointer.lock() {
            checkpointer.take();
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let writes = self.writes.lock().map_err(|_| StoreError::Closed)?;
            let sender = writes.as_ref().ok_or(StoreError::Closed)?;
            sender.send(make(reply)).map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str, revision: Revision) -> Result<GetResponse, StoreError> {
        validate_key(key)?;
        let key = key.to_owned();
        self.pool
            .read(move |tx, meta| reader::get(tx, meta, &key, revision))
            .await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        validate_prefix(&request.prefix)?;
        if let Some(after) = &request.start_after {
            validate_prefix(after)?;
        }
        self.pool
            .read(move |tx, meta| reader::range(tx, meta, &request))
            .await
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        precondition: Precondition,
    ) -> Result<Revision, StoreError> {
        validate_key(key)?;
        validate_value(&value)?;
        let key = key.to_owned();
        self.submit(|reply| WriteOp::Put {
            key,
            value,
            pre: precondition,
            reply,
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<DeleteResponse, StoreError> {
        validate_key(key)?;
        let key = key.to_owned();
        self.submit(|reply| WriteOp::Delete {
            key,
            pre: precondition,
            reply,
        })
        .await
    }

    async fn watch(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        validate_prefix(prefix)?;
        if start_revision < 0 {
            return Err(StoreError::Compacted {
                revision: start_revision,
            });
        }
        // Subscribe before reading the revision, so nothing falls between the two.
        let live = self.events.subscribe();
        let (next, catch_up) = if start_revision == 0 {
            (self.revision.load(Ordering::Acquire) + 1, false)
        } else {
            // Fail fast on a compacted start; later compaction is reported in-stream.
            let from = start_revision;
            let compacted = self.pool.read(move |_, meta| Ok(meta.compacted)).await?;
            if from <= compacted {
                return Err(StoreError::Compacted { revision: from });
            }
            (from, true)
        };
        let (tx, rx) = mpsc::channel(self.watcher_queue);
        tokio::spawn(watch::run(
            self.pool.clone(),
            prefix.to_owned(),
            next,
            catch_up,
            live,
            tx,
        ));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.submit(|reply| WriteOp::Compact { revision, reply })
            .await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.revision.load(Ordering::Acquire))
    }

    fn shares_written_values(&self) -> bool {
        // The writer moves a put's value into its event (writer.rs).
        true
    }

    async fn db_size(&self) -> Result<u64, StoreError> {
        let mut size = 0;
        for suffix in ["", "-wal"] {
            let mut name = self.path.as_os_str().to_owned();
            name.push(suffix);
            if let Ok(meta) = std::fs::metadata(PathBuf::from(name)) {
                size += meta.len();
            }
        }
        Ok(size)
    }
}
