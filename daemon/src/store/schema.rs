//! The SQLite schema, pragmas, and the `meta` key/value table (revision, last applied log
//! index, compaction point, schema version).

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

pub(super) fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Cap what the WAL keeps after a checkpoint: small flash disks must not fill up.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS objects (
             resource  TEXT NOT NULL,
             namespace TEXT NOT NULL,
             name      TEXT NOT NULL,
             uid       TEXT NOT NULL,
             revision  INTEGER NOT NULL,
             data      TEXT NOT NULL,
             PRIMARY KEY (resource, namespace, name)
         );
         CREATE INDEX IF NOT EXISTS objects_by_namespace ON objects (namespace);
         CREATE TABLE IF NOT EXISTS changes (
             revision INTEGER PRIMARY KEY,
             resource TEXT NOT NULL,
             type     TEXT NOT NULL,
             data     TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS meta (
             key   TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS reservations (
             space     TEXT NOT NULL,
             value     TEXT NOT NULL,
             resource  TEXT NOT NULL,
             namespace TEXT NOT NULL,
             name      TEXT NOT NULL,
             PRIMARY KEY (space, value)
         );
         CREATE INDEX IF NOT EXISTS reservations_by_owner ON reservations (resource, namespace, name);
         CREATE TABLE IF NOT EXISTS log_state (
             key   TEXT PRIMARY KEY,
             value TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS mirror_positions (
             stream           TEXT PRIMARY KEY,
             resource_version INTEGER NOT NULL
         );",
    )?;
    upgrade(conn)
}

/// The schema this release writes. 1: objects, changes, meta. 2: reservations. (Tables that
/// start empty — `log_state`, `mirror_positions` — need no step: they are created above.)
const VERSION: u64 = 2;

/// Brings a data dir written by an older release up to [`VERSION`], in place.
fn upgrade(conn: &Connection) -> Result<(), StoreError> {
    let found = meta(conn, "schema")?;
    if found >= VERSION {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    if found < 2 {
        super::machine::rebuild_reservations(&tx)?;
    }
    set_meta(&tx, "schema", VERSION)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn meta(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row(params![key], |row| row.get(0))
        .optional()?;
    Ok(value.unwrap_or(0) as u64)
}

pub(super) fn set_meta(conn: &Connection, key: &str, value: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value as i64],
    )?;
    Ok(())
}

/// The log's own bookkeeping kept with the state (Raft's last applied log id, membership).
pub(super) fn log_state(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM log_state WHERE key = ?1")?
        .query_row(params![key], |row| row.get(0))
        .optional()?)
}

pub(super) fn set_log_state(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO log_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// An agent's mirror: the last server resourceVersion recorded for a stream.
pub(super) fn mirror_position(conn: &Connection, stream: &str) -> Result<Option<u64>, StoreError> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT resource_version FROM mirror_positions WHERE stream = ?1")?
        .query_row(params![stream], |row| row.get(0))
        .optional()?;
    Ok(value.map(|v| v as u64))
}

pub(super) fn set_mirror_position(conn: &Connection, stream: &str, resource_version: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO mirror_positions (stream, resource_version) VALUES (?1, ?2)
         ON CONFLICT (stream) DO UPDATE SET resource_version = excluded.resource_version",
        params![stream, resource_version as i64],
    )?;
    Ok(())
}

pub(super) fn revision(conn: &Connection) -> Result<u64, StoreError> {
    meta(conn, "revision")
}
