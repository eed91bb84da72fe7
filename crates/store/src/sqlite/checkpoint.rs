//! The WAL checkpointer: copies committed WAL pages back into the database from
//! its own connection and thread, so that the writer's automatic checkpoint
//! (which runs inside a commit) finds little left to copy.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema::{configure, sql_error};
use crate::error::StoreError;

/// Time between checkpoints. Commits append to the WAL meanwhile; a passive
/// checkpoint never waits for readers or the writer.
const INTERVAL: Duration = Duration::from_millis(250);

/// A background checkpointing thread, stopped on drop.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_error)?;
        configure(&conn)?;
        // It reads WAL frames and writes database pages; it caches nothing.
        conn.execute_batch("PRAGMA cache_size = -1024;")
            .map_err(sql_error)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(&conn, &signal))
            .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (lock, wake) = stop;
    let Ok(mut stopped) = lock.lock() else { return };
    loop {
        match wake.wait_timeout(stopped, INTERVAL) {
            Ok((guard, _)) => stopped = guard,
            Err(_) => return,
        }
        if *stopped {
            return;
        }
        // (busy, frames in the WAL, frames checkpointed)
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match result {
            Ok((frames, done)) => {
                tracing::trace!(frames, done, "checkpointed the WAL");
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        wake.notify_all();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("store checkpoint thread panicked");
        }
    }
}
