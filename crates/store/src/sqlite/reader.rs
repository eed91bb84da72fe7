//! Reads from the sqlite log: a pool of read connections, each read in one
//! snapshot transaction so that the rows and the revision it reports agree.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::schema::{self, Meta, sql_error};
use crate::error::StoreError;
use crate::key::prefix_range_end;
use crate::types::{
    Event, EventKind, GetResponse, KeyValue, RangeRequest, RangeResponse, Revision,
};

/// Reads running at once, each on its own connection. A burst of reads
/// waits for a connection rather than opening more: opening one (parsing the
/// schema, allocating its cache) costs far more than a read.
const POOL_SIZE: usize = 8;

/// A pool of read-only connections to one database file.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection the pool may have in use.
    permits: tokio::sync::Semaphore,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(POOL_SIZE),
        }
    }

    /// Runs `f` inside a read transaction on a pooled connection, on the blocking pool.
    pub(super) async fn read<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, Meta) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.read_blocking(f))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>, Meta) -> Result<T, StoreError>,
    {
        let popped = self.idle.lock().map_err(|_| StoreError::Closed)?.pop();
        let mut conn = match popped {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = (|| {
            let tx = conn.transaction().map_err(sql_error)?;
            let meta = schema::read_meta(&tx)?;
            let out = f(&tx, meta)?;
            tx.finish().map_err(sql_error)?;
            Ok(out)
        })();
        // The permits bound the connections to POOL_SIZE: all go back.
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        result
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_error)?;
        schema::configure(&conn)?;
        // Readers share the OS page cache; a large private cache per pooled
        // reader only multiplies resident memory (8 x 64 MiB). Reading through
        // a memory map spares a reader from refilling its private cache page
        // by page (a malloc and a copy each) after every write invalidates it.
        conn.execute_batch(
            "PRAGMA query_only = ON; PRAGMA cache_size = -4096; PRAGMA mmap_size = 1073741824;",
        )
        .map_err(sql_error)?;
        Ok(conn)
    }
}

/// Checks that `revision` (0 = current) can be read, and returns the revision to read at.
pub(super) fn read_revision(meta: Meta, revision: Revision) -> Result<Revision, StoreError> {
    if revision == 0 {
        return Ok(meta.revision);
    }
    if revision > meta.revision {
        return Err(StoreError::FutureRevision {
            revision,
            current: meta.revision,
        });
    }
    if revision < meta.compacted {
        return Err(StoreError::Compacted { revision });
    }
    Ok(revision)
}

fn key_string(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))
}

/// Reads the columns (key, created, rev, value).
fn kv_from_row(row: &Row<'_>) -> rusqlite::Result<(Vec<u8>, Revision, Revision, Vec<u8>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn to_kv(cols: (Vec<u8>, Revision, Revision, Vec<u8>)) -> Result<KeyValue, StoreError> {
    let (key, create_revision, mod_revision, value) = cols;
    Ok(KeyValue {
        key: key_string(key)?,
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    })
}

/// Reads one key at `at` (the current revision when `at == meta.revision`).
pub(super) fn get(
    tx: &rusqlite::Transaction<'_>,
    meta: Meta,
    key: &str,
    revision: Revision,
) -> Result<GetResponse, StoreError> {
    let at = read_revision(meta, revision)?;
    let row =
        if at == meta.revision {
            tx.prepare_cached(
                "SELECT c.key, l.created, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev
             WHERE c.key = ?1",
            )
            .and_then(|mut s| s.query_row(params![key.as_bytes()], kv_from_row).optional())
        } else {
            tx.prepare_cached(
            "SELECT key, created, rev, value FROM log WHERE key = ?1 AND rev <= ?2 AND deleted = 0
             AND rev = (SELECT max(rev) FROM log WHERE key = ?1 AND rev <= ?2)",
        )
        .and_then(|mut s| s.query_row(params![key.as_bytes(), at], kv_from_row).optional())
        }
        .map_err(sql_error)?;
    Ok(GetResponse {
        kv: row.map(to_kv).transpose()?,
        revision: at,
    })
}

/// Reads a prefix, at the current or a past revision.
pub(super) fn range(
    tx: &rusqlite::Transaction<'_>,
    meta: Meta,
    req: &RangeRequest,
) -> Result<RangeResponse, StoreError> {
    let at = read_revision(meta, req.revision)?;
    let start: Vec<u8> = match &req.start_after {
        Some(after) => crate::key::key_successor(after),
        None => req.prefix.as_bytes().to_vec(),
    };
    let end = prefix_range_end(&req.prefix);
    // Ask for one more row than the limit to learn whether more remain.
    let fetch: i64 = if req.limit == 0 {
        -1
    } else {
        req.limit as i64 + 1
    };
    let current = at == meta.revision;
    let (rows_sql, count_sql) = if current {
        (
            "SELECT c.key, l.created, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev
             WHERE c.key >= ?1 AND c.key < ?2 ORDER BY c.key LIMIT ?3",
            "SELECT count(*) FROM current WHERE key >= ?1 AND key < ?2",
        )
    } else {
        (
            "SELECT l.key, l.created, l.rev, l.value FROM log l
             WHERE l.key >= ?1 AND l.key < ?2 AND l.rev <= ?4 AND l.deleted = 0
               AND l.rev = (SELECT max(m.rev) FROM log m WHERE m.key = l.key AND m.rev <= ?4)
             ORDER BY l.key LIMIT ?3",
            // The count now, corrected by the keys changed since: a past
            // revision is recent (compaction keeps a minute or so), so the
            // changes since are few beside every row of the range, which
            // counting the past state directly would visit on every page.
            "SELECT (SELECT count(*) FROM current WHERE key >= ?1 AND key < ?2)
              - (SELECT coalesce(sum(
                    EXISTS (SELECT 1 FROM current c WHERE c.key = d.key)
                  - coalesce((SELECT 1 - l.deleted FROM log l WHERE l.key = d.key AND l.rev <= ?3
                              ORDER BY l.rev DESC LIMIT 1), 0)), 0)
                 FROM (SELECT DISTINCT key FROM log NOT INDEXED
                       WHERE rev > ?3 AND key >= ?1 AND key < ?2) d)",
        )
    };
    let mut stmt = tx.prepare_cached(rows_sql).map_err(sql_error)?;
    let rows = if current {
        stmt.query_map(params![start, end, fetch], kv_from_row)
    } else {
        stmt.query_map(params![start, end, fetch, at], kv_from_row)
    }
    .map_err(sql_error)?;
    let mut kvs = Vec::new();
    for row in rows {
        kvs.push(to_kv(row.map_err(sql_error)?)?);
    }
    let more = req.limit != 0 && kvs.len() > req.limit;
    let count = if more {
        kvs.truncate(req.limit);
        let mut stmt = tx.prepare_cached(count_sql).map_err(sql_error)?;
        let n: i64 = if current {
            stmt.query_row(params![start, end], |r| r.get(0))
        } else {
            stmt.query_row(params![start, end, at], |r| r.get(0))
        }
        .map_err(sql_error)?;
        n as u64
    } else {
        kvs.len() as u64
    };
    Ok(RangeResponse {
        kvs,
        more,
        count,
        revision: at,
    })
}

/// Reads up to `page` events under `prefix` from revision `from`, in revision order,
/// with their previous values. Fails with `Compacted` if `from` was compacted.
pub(super) fn events(
    tx: &rusqlite::Transaction<'_>,
    meta: Meta,
    prefix: &str,
    from: Revision,
    page: usize,
) -> Result<Vec<Event>, StoreError> {
    if from <= meta.compacted {
        return Err(StoreError::Compacted { revision: from });
    }
    let mut stmt = tx
        .prepare_cached(
            "SELECT l.rev, l.key, l.created, l.deleted, l.value, p.created, p.rev, p.value
             FROM log l LEFT JOIN log p ON p.rev = l.prev_rev AND l.prev_rev > 0
             WHERE l.rev >= ?1 AND l.rev <= ?2 AND l.key >= ?3 AND l.key < ?4
             ORDER BY l.rev LIMIT ?5",
        )
        .map_err(sql_error)?;
    let rows = stmt
        .query_map(
            params![
                from,
                meta.revision,
                prefix.as_bytes(),
                prefix_range_end(prefix),
                page as i64
            ],
            |r| {
                let rev: Revision = r.get(0)?;
                let key: Vec<u8> = r.get(1)?;
                let created: Revision = r.get(2)?;
                let deleted: bool = r.get(3)?;
                let value: Vec<u8> = r.get(4)?;
                let prev_created: Option<Revision> = r.get(5)?;
                let prev_rev: Option<Revision> = r.get(6)?;
                let prev_value: Option<Vec<u8>> = r.get(7)?;
                let prev = match (prev_created, prev_rev, prev_value) {
                    (Some(c), Some(p), Some(v)) => Some((c, p, v)),
                    _ => None,
                };
                Ok((rev, key, created, deleted, value, prev))
            },
        )
        .map_err(sql_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (rev, key, created, deleted, value, prev) = row.map_err(sql_error)?;
        let key = key_string(key)?;
        let prev = prev.map(|(c, p, v)| KeyValue {
            key: key.clone(),
            value: Bytes::from(v),
            create_revision: c,
            mod_revision: p,
        });
        let (kind, kv) = if deleted {
            (
                EventKind::Delete,
                KeyValue {
                    key,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: rev,
                },
            )
        } else {
            (
                EventKind::Put,
                KeyValue {
                    key,
                    value: Bytes::from(value),
                    create_revision: created,
                    mod_revision: rev,
                },
            )
        };
        out.push(Event { kind, kv, prev });
    }
    Ok(out)
}
