//! The single writer of the sqlite log: applies writes in batches (group commit),
//! so that concurrent writers share one transaction and one fsync, and publishes
//! each committed batch to watchers before acknowledging it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::schema::{self, Meta, sql_error};
use crate::error::StoreError;
use crate::types::{DeleteResponse, Event, EventKind, KeyValue, Precondition, Revision};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;
/// Most value bytes applied in one transaction.
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Revisions purged per compaction step, between batches of writes.
const PURGE_STEP: Revision = 2_000;

/// A request to the writer.
pub(super) enum WriteOp {
    Put {
        key: String,
        value: Bytes,
        pre: Precondition,
        reply: oneshot::Sender<Result<Revision, StoreError>>,
    },
    Delete {
        key: String,
        pre: Precondition,
        reply: oneshot::Sender<Result<DeleteResponse, StoreError>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A committed batch of events, shared by every watcher.
pub(super) type Batch = Arc<[Event]>;

/// State owned by the writer thread.
pub(super) struct Writer {
    pub conn: Connection,
    pub meta: Meta,
    pub revision: Arc<AtomicI64>,
    pub events: super::fanout::BatchPublisher,
    pub compact_waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// The result of one op inside a batch, sent once the batch commits.
enum Outcome {
    Put(
        oneshot::Sender<Result<Revision, StoreError>>,
        Result<Revision, StoreError>,
    ),
    Delete(
        oneshot::Sender<Result<DeleteResponse, StoreError>>,
        Result<DeleteResponse, StoreError>,
    ),
    Compact(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
}

impl Outcome {
    fn fail(self, err: &StoreError) -> Self {
        let e = || StoreError::Backend(err.to_string());
        match self {
            Outcome::Put(tx, _) => Outcome::Put(tx, Err(e())),
            Outcome::Delete(tx, _) => Outcome::Delete(tx, Err(e())),
            Outcome::Compact(tx, _) => Outcome::Compact(tx, Err(e())),
        }
    }

    fn send(self) {
        // A caller that gave up waiting is not an error: its write is still committed.
        match self {
            Outcome::Put(tx, r) => drop(tx.send(r)),
            Outcome::Delete(tx, r) => drop(tx.send(r)),
            Outcome::Compact(tx, r) => drop(tx.send(r)),
        }
    }
}

impl Writer {
    /// Serves requests until every sender is gone.
    pub(super) fn run(mut self, ops: Receiver<WriteOp>) {
        loop {
            let purging = self.meta.purged < self.meta.compacted;
            let first = if purging {
                match ops.recv_timeout(Duration::ZERO) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match ops.recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                }
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                let mut bytes = 0;
                while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    match ops.try_recv() {
                        Ok(op) => {
                            if let WriteOp::Put { value, .. } = &op {
                                bytes += value.len();
                            }
                            batch.push(op);
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                self.apply(batch);
            }
            if self.meta.purged < self.meta.compacted {
                self.purge_step();
            }
        }
    }

    fn apply(&mut self, batch: Vec<WriteOp>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut meta = self.meta;
        let result = (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            for op in batch {
                outcomes.push(apply_one(&tx, &mut meta, op, &mut events)?);
            }
            if meta.revision != self.meta.revision {
                schema::write_meta(&tx, "revision", meta.revision)?;
            }
            if meta.compacted != self.meta.compacted {
                schema::write_meta(&tx, "compacted", meta.compacted)?;
            }
            tx.commit().map_err(sql_error)
        })();
        match result {
            Ok(()) => {
                let compacting = meta.compacted != self.meta.compacted;
                self.meta = meta;
                self.revision.store(meta.revision, Ordering::Release);
                if !events.is_empty() {
                    // No receivers is fine: nobody is watching.
                    self.events.send(Arc::from(events));
                }
                for outcome in outcomes {
                    match outcome {
                        // Compaction is acknowledged once its purge finishes.
                        Outcome::Compact(tx, Ok(())) if compacting => self.compact_waiters.push(tx),
                        other => other.send(),
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "store write batch failed; nothing in it was committed");
                for outcome in outcomes {
                    outcome.fail(&err).send();
                }
            }
        }
    }

    /// Deletes one step of superseded history below the compaction point.
    fn purge_step(&mut self) {
        let target = self.meta.compacted;
        let lo = self.meta.purged;
        let hi = (lo + PURGE_STEP).min(target);
        let result = (|| -> Result<usize, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            // Every row written in (lo, hi] supersedes its predecessor, which is
            // now history below the compaction point, wherever it lies (it may
            // predate an earlier compaction). Deletes in the range go too.
            let superseded = tx
                .prepare_cached(
                    "DELETE FROM log WHERE rev IN (
                        SELECT prev_rev FROM log WHERE rev > ?1 AND rev <= ?2 AND prev_rev > 0)",
                )
                .and_then(|mut s| s.execute(params![lo, hi]))
                .map_err(sql_error)?;
            let tombstones = tx
                .prepare_cached("DELETE FROM log WHERE rev > ?1 AND rev <= ?2 AND deleted = 1")
                .and_then(|mut s| s.execute(params![lo, hi]))
                .map_err(sql_error)?;
            let n = superseded + tombstones;
            schema::write_meta(&tx, "purged", hi)?;
            tx.commit().map_err(sql_error)?;
            Ok(n)
        })();
        match result {
            Ok(n) => {
                tracing::debug!(from = lo, to = hi, removed = n, "purged compacted history");
                self.meta.purged = hi;
                if hi == target {
                    for tx in self.compact_waiters.drain(..) {
                        let _ = tx.send(Ok(()));
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "purging compacted history failed; will retry");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The current row of `key` as (created, rev, value), if it is live.
fn current_row(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<Option<KeyValue>, StoreError> {
    tx.prepare_cached(
        "SELECT l.created, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1",
    )
    .and_then(|mut s| {
        s.query_row(params![key.as_bytes()], |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                create_revision: r.get(0)?,
                mod_revision: r.get(1)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(2)?),
            })
        })
        .optional()
    })
    .map_err(sql_error)
}

/// Checks a precondition against the current row; `Ok(())` means the write may go ahead.
fn check(key: &str, pre: Precondition, current: Option<&KeyValue>) -> Result<(), StoreError> {
    match (pre, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists {
            key: key.to_owned(),
        }),
        (Precondition::ModRevision(_), None) => Err(StoreError::NotFound {
            key: key.to_owned(),
        }),
        (Precondition::ModRevision(expected), Some(kv)) if kv.mod_revision == expected => Ok(()),
        (Precondition::ModRevision(expected), Some(kv)) => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            current: Some(Box::new(kv.clone())),
        }),
    }
}

fn insert_log(
    tx: &rusqlite::Transaction<'_>,
    rev: Revision,
    key: &str,
    created: Revision,
    prev_rev: Revision,
    deleted: bool,
    value: &[u8],
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO log (rev, key, created, prev_rev, deleted, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![rev, key.as_bytes(), created, prev_rev, deleted, value]))
    .map_err(sql_error)?;
    Ok(())
}

/// Applies one op inside the batch transaction. A failed precondition is an
/// outcome; an `Err` is a database failure that aborts the whole batch.
fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    meta: &mut Meta,
    op: WriteOp,
    events: &mut Vec<Event>,
) -> Result<Outcome, StoreError> {
    match op {
        WriteOp::Put {
            key,
            value,
            pre,
            reply,
        } => {
            let current = current_row(tx, &key)?;
            if let Err(e) = check(&key, pre, current.as_ref()) {
                return Ok(Outcome::Put(reply, Err(e)));
            }
            let rev = meta.revision + 1;
            let (created, prev_rev) = match &current {
                Some(kv) => (kv.create_revision, kv.mod_revision),
                None => (rev, 0),
            };
            insert_log(tx, rev, &key, created, prev_rev, false, &value)?;
            tx.prepare_cached("INSERT OR REPLACE INTO current (key, rev) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![key.as_bytes(), rev]))
                .map_err(sql_error)?;
            meta.revision = rev;
            events.push(Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision: created,
                    mod_revision: rev,
                },
                prev: current,
            });
            Ok(Outcome::Put(reply, Ok(rev)))
        }
        WriteOp::Delete { key, pre, reply } => {
            let Some(prev) = current_row(tx, &key)? else {
                return Ok(Outcome::Delete(reply, Err(StoreError::NotFound { key })));
            };
            let refused = match pre {
                Precondition::Absent => Some(StoreError::Conflict {
                    key: key.clone(),
                    expected: 0,
                    current: Some(Box::new(prev.clone())),
                }),
                pre => check(&key, pre, Some(&prev)).err(),
            };
            if let Some(e) = refused {
                return Ok(Outcome::Delete(reply, Err(e)));
            }
            let rev = meta.revision + 1;
            insert_log(
                tx,
                rev,
                &key,
                prev.create_revision,
                prev.mod_revision,
                true,
                &[],
            )?;
            tx.prepare_cached("DELETE FROM current WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key.as_bytes()]))
                .map_err(sql_error)?;
            meta.revision = rev;
            events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: rev,
                },
                prev: Some(prev.clone()),
            });
            Ok(Outcome::Delete(
                reply,
                Ok(DeleteResponse {
                    revision: rev,
                    prev,
                }),
            ))
        }
        WriteOp::Compact { revision, reply } => {
            let result = if revision > meta.revision {
                Err(StoreError::FutureRevision {
                    revision,
                    current: meta.revision,
                })
            } else if revision <= meta.compacted {
                Err(StoreError::Compacted { revision })
            } else {
                meta.compacted = revision;
                Ok(())
            };
            Ok(Outcome::Compact(reply, result))
        }
    }
}
