//! The on-disk layout of the sqlite revision log, and the checks made when opening it.
//!
//! `log` holds one row per write (the revision is the row id); `current` maps each
//! live key to its latest row, so that reads at the current revision never scan
//! history; `meta` holds the current and compacted revisions.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;
use crate::types::Revision;

/// `PRAGMA application_id` of a Kybern store: "KYBR".
pub(super) const APPLICATION_ID: i32 = 0x4B59_4252;
/// Schema version in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i32 = 1;

const CREATE: &str = "
CREATE TABLE log (
    rev      INTEGER PRIMARY KEY,
    key      BLOB    NOT NULL,
    created  INTEGER NOT NULL,
    prev_rev INTEGER NOT NULL,
    deleted  INTEGER NOT NULL,
    value    BLOB    NOT NULL
);
CREATE INDEX log_key_rev ON log (key, rev);
CREATE TABLE current (
    key BLOB PRIMARY KEY,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0), ('purged', 0);
";

/// Revisions recorded in `meta`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Meta {
    /// Latest committed revision.
    pub revision: Revision,
    /// Reads and watches below this revision fail with `Compacted`.
    pub compacted: Revision,
    /// Rows up to this revision have been purged for the last compaction.
    pub purged: Revision,
}

/// Maps a sqlite error to a store error, keeping corruption apart from I/O trouble.
pub(super) fn sql_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(e, _) = &err
        && matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    {
        return StoreError::Corrupt(err.to_string());
    }
    StoreError::Backend(err.to_string())
}

/// Sets the connection options every connection uses.
pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql_error)?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(sql_error)?;
    // Without the query planner stability guarantee, sqlite re-prepares a
    // cached statement whenever a new value is bound to a parameter the planner
    // looked at (a `LIMIT ?`, a join on `current`), which made the writer
    // re-parse its row lookup on every write.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Creates the schema in an empty database, or checks that an existing one is ours,
/// then returns its revisions.
pub(super) fn prepare(conn: &mut Connection) -> Result<Meta, StoreError> {
    // Identify the file before changing anything in it: a foreign file stays untouched.
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_error)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_error)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(sql_error)?;

    if app_id == 0 && version == 0 && tables == 0 {
        let tx = conn.transaction().map_err(sql_error)?;
        tx.execute_batch(CREATE).map_err(sql_error)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
    } else if app_id != APPLICATION_ID {
        return Err(StoreError::Corrupt(format!(
            "application_id {app_id:#x} is not a Kybern store ({tables} tables present)"
        )));
    } else if version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "schema version {version} is not supported (this build reads {SCHEMA_VERSION})"
        )));
    }

    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "cannot enable WAL (journal mode is {mode})"
        )));
    }
    // Keep the WAL file from growing past 64 MiB once checkpointed. The
    // checkpoint thread copies the WAL into the database between commits; the
    // writer's own checkpoint, at 2,000 pages, is left with the few pages
    // written since, and lets the next commit start the WAL over, which under
    // constant writes only a checkpoint on this connection can.
    conn.execute_batch("PRAGMA journal_size_limit = 67108864; PRAGMA wal_autocheckpoint = 2000;")
        .map_err(sql_error)?;

    let meta = read_meta(conn)?;
    let max_rev: Option<Revision> = conn
        .query_row("SELECT max(rev) FROM log", [], |r| r.get(0))
        .map_err(sql_error)?;
    if let Some(max_rev) = max_rev
        && max_rev > meta.revision
    {
        return Err(StoreError::Corrupt(format!(
            "log holds revision {max_rev} past the recorded revision {}",
            meta.revision
        )));
    }
    if meta.compacted > meta.revision || meta.purged > meta.compacted {
        return Err(StoreError::Corrupt(format!(
            "inconsistent revisions {meta:?}"
        )));
    }
    Ok(meta)
}

/// Reads the revisions in `meta`.
pub(super) fn read_meta(conn: &Connection) -> Result<Meta, StoreError> {
    let get = |name: &str| -> Result<Revision, StoreError> {
        conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
            .and_then(|mut s| s.query_row(params![name], |r| r.get(0)).optional())
            .map_err(sql_error)?
            .ok_or_else(|| StoreError::Corrupt(format!("meta row {name:?} is missing")))
    };
    Ok(Meta {
        revision: get("revision")?,
        compacted: get("compacted")?,
        purged: get("purged")?,
    })
}

/// Records one revision in `meta`.
pub(super) fn write_meta(conn: &Connection, name: &str, value: Revision) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, value]))
        .map_err(sql_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_lookups_are_not_reprepared_per_binding() {
        let mut conn = Connection::open_in_memory().expect("open");
        configure(&conn).expect("configure");
        conn.execute_batch(CREATE).expect("schema");
        let tx = conn.transaction().expect("tx");
        for rev in 1..=20_i64 {
            let key = format!("/k/{rev}");
            let mut lookup = tx
                .prepare_cached(
                    "SELECT l.created FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1 LIMIT ?2",
                )
                .expect("prepare");
            let found: Option<i64> = lookup
                .query_row(params![key.as_bytes(), rev], |r| r.get(0))
                .optional()
                .expect("lookup");
            assert_eq!(found, None);
            assert_eq!(
                lookup.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "binding a new key re-prepared the statement"
            );
            drop(lookup);
            tx.execute(
                "INSERT INTO log (rev, key, created, prev_rev, deleted, value) VALUES (?1, ?2, ?1, 0, 0, x'00')",
                params![rev, key.as_bytes()],
            )
            .expect("insert");
        }
    }
}
