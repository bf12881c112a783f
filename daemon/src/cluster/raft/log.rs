//! The Raft log in SQLite (`raft.db` beside `state.db`): entries, the vote, the committed and
//! purged log ids. WAL with `synchronous=FULL`: an append is acknowledged only once durable, and
//! a torn write after power loss is rolled back by SQLite, never left half-written.
//!
//! Never touches the state machine: entries are applied by `state_machine.rs`.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rusqlite::{params, Connection, OptionalExtension};

use super::{Entry, NodeId, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The log, shared by the storage handle and its readers.
#[derive(Clone)]
pub struct LogStore {
    conn: Arc<Mutex<Connection>>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    /// Opens (creating when needed) the log database at `path`.
    pub fn open(path: &Path) -> std::result::Result<LogStore, rusqlite::Error> {
        let conn = Connection::open(path)?;
        LogStore::prepare(conn)
    }

    /// An in-memory log, for tests.
    pub fn in_memory() -> std::result::Result<LogStore, rusqlite::Error> {
        LogStore::prepare(Connection::open_in_memory()?)
    }

    fn prepare(conn: Connection) -> std::result::Result<LogStore, rusqlite::Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        Ok(LogStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(write_err)?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>> {
        let value: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
            .optional()
            .map_err(read_err)?;
        value.map(|v| serde_json::from_str(&v).map_err(read_err)).transpose()
    }

    fn set_meta<T: serde::Serialize>(conn: &Connection, key: &str, value: &T) -> Result<()> {
        let json = serde_json::to_string(value).map_err(write_err)?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, json],
        )
        .map_err(write_err)?;
        Ok(())
    }

    /// Marks everything up to `log_id` as purged in a fresh log: a node whose state machine was
    /// written by a log of its own (a single-node data dir) continues after it.
    pub async fn start_after(&self, log_id: LogId<NodeId>) -> Result<()> {
        self.with(move |conn| {
            if LogStore::get_meta::<LogId<NodeId>>(conn, "purged")?.is_none() {
                LogStore::set_meta(conn, "purged", &log_id)?;
            }
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i as i64,
            Bound::Excluded(i) => *i as i64 + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => *i as i64,
            Bound::Excluded(i) => *i as i64 - 1,
            Bound::Unbounded => i64::MAX,
        };
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT entry FROM log WHERE idx >= ?1 AND idx <= ?2 ORDER BY idx")
                .map_err(read_err)?;
            let rows = stmt.query_map(params![start, end], |r| r.get::<_, String>(0)).map_err(read_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row.map_err(read_err)?).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        self.with(|conn| {
            let purged: Option<LogId<NodeId>> = LogStore::get_meta(conn, "purged")?;
            let last: Option<String> = conn
                .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| r.get(0))
                .optional()
                .map_err(read_err)?;
            let last = match last {
                Some(e) => Some(serde_json::from_str::<Entry>(&e).map_err(read_err)?.log_id),
                None => purged,
            };
            Ok(LogState { last_purged_log_id: purged, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let vote = *vote;
        self.with(move |conn| LogStore::set_meta(conn, "vote", &vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.with(|conn| LogStore::get_meta(conn, "vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.with(move |conn| LogStore::set_meta(conn, "committed", &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        self.with(|conn| Ok(LogStore::get_meta::<Option<LogId<NodeId>>>(conn, "committed")?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(write_err)?;
                for entry in &entries {
                    let json = serde_json::to_string(entry).map_err(write_err)?;
                    tx.execute(
                        "INSERT OR REPLACE INTO log (idx, entry) VALUES (?1, ?2)",
                        params![entry.log_id.index as i64, json],
                    )
                    .map_err(write_err)?;
                }
                tx.commit().map_err(write_err)?;
                Ok(())
            })
            .await;
        // Durable once the transaction committed (synchronous=FULL).
        callback.log_io_completed(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.with(move |conn| {
            conn.execute("DELETE FROM log WHERE idx >= ?1", params![log_id.index as i64]).map_err(write_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(write_err)?;
            LogStore::set_meta(&tx, "purged", &log_id)?;
            tx.execute("DELETE FROM log WHERE idx <= ?1", params![log_id.index as i64]).map_err(write_err)?;
            tx.commit().map_err(write_err)?;
            Ok(())
        })
        .await
    }
}
