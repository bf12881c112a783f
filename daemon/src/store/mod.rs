//! SQLite state: objects, revisions, the change log behind watches, compaction, snapshots.
//!
//! Owns `state.db`. State changes only through the state machine, [`Store::apply`]: an ordered
//! batch of log entries `(index, Command)` applied in one transaction that records the last
//! applied index (so a replayed batch changes nothing). Writers never call it directly: they
//! hand commands to a [`Proposer`] (the local store today, Raft in a cluster). Each command
//! that succeeds gets the next revision, which becomes the object's
//! `metadata.resourceVersion`; a command's *answer* (applied, or a [`Rejection`]) is kept apart
//! from faults (SQLite I/O, corrupt JSON), which fail the whole batch. A write is acknowledged
//! only after its transaction is durable (WAL, `synchronous=FULL`). On an agent the store is a
//! *mirror* of a server's (`mirror.rs`): [`Command::Mirror`] and its kin put objects verbatim,
//! the server's `resourceVersion` kept, and record each stream's position in the same
//! transaction; local watchers still see every change in local revision order.
//!
//! Invariant: one writer; revisions are dense and strictly increasing; the change log holds
//! every revision after the compaction point; a value that must be unique cluster-wide
//! (ClusterIP, NodePort, pod CIDR) is held by at most one object.
//! Boundary: callers decide *what* to write (validation lives in `objects`/`api`); the state
//! machine checks only preconditions (existence, resourceVersion, uid, namespace open,
//! uniqueness). It never calls anyone back: others learn of changes through [`Store::watch`].

mod claims;
mod machine;
mod mirror;
mod proposer;
mod schema;
mod watch;

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::objects::meta;

pub use machine::Answer;
pub use proposer::{BoxFuture, Propose, Proposer};
pub use watch::Watcher;

/// How many revisions of history the change log keeps for watchers.
const HISTORY: u64 = 10_000;

/// A write, as proposed. Legal at any time; preconditions are checked by the state machine.
/// Everything non-deterministic (UIDs, timestamps) is decided before a command is proposed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Insert a new object; rejected if (resource, namespace, name) exists or its namespace
    /// is missing or terminating.
    Create { resource: String, object: Value },
    /// Replace an existing object. When the object carries a `resourceVersion`, it must be the
    /// stored one (optimistic concurrency).
    Update { resource: String, object: Value },
    /// Replace only `status` of an existing object (the agent's and the controllers' writes),
    /// so it never collides with a change of spec or metadata. `uid` and `resource_version`,
    /// when given, must match.
    UpdateStatus {
        resource: String,
        namespace: String,
        name: String,
        uid: Option<String>,
        resource_version: Option<String>,
        status: Value,
    },
    /// Set a pod's `spec.nodeName` (and `PodScheduled`, at `at`) if it is still unset.
    Bind { namespace: String, name: String, uid: String, node: String, at: String },
    /// Remove an object; when `uid` is given it must match (the object was not replaced).
    Delete { resource: String, namespace: String, name: String, uid: Option<String> },
    /// An agent's mirror (`cluster::mirror`): puts `object` exactly as a server has it — its
    /// `resourceVersion` is the server's and is kept — with no precondition, and records
    /// `position` in the same transaction. An object equal to the stored one changes nothing
    /// (no revision, no event). Only ever proposed to the agent's own store: it skips every
    /// check, so a server must never accept it from a peer.
    Mirror { resource: String, object: Value, position: Option<MirrorPosition> },
    /// An agent's mirror: removes an object the server removed (an absent one is no error) and
    /// records `position`.
    Unmirror { resource: String, namespace: String, name: String, position: Option<MirrorPosition> },
    /// An agent's mirror after a relist: `objects` is now the whole set of `resource` the
    /// mirror holds; stored objects of `resource` that are not in it are removed, the others
    /// put as by [`Command::Mirror`]; `position` is recorded. Answered with a `null` object.
    MirrorSet { resource: String, objects: Vec<Value>, position: Option<MirrorPosition> },
}

/// How far an agent's mirror has read one stream of a server: the last server
/// `resourceVersion` seen on it (see [`Store::mirror_position`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MirrorPosition {
    pub stream: String,
    pub resource_version: u64,
}

impl Command {
    /// An agent's bookkeeping of its own mirror: applied to its local store only, never proposed
    /// to the cluster.
    pub fn is_mirror(&self) -> bool {
        matches!(self, Command::Mirror { .. } | Command::Unmirror { .. } | Command::MirrorSet { .. })
    }

    /// Deletes exactly `object` (by namespace, name and uid) of `resource`.
    pub fn delete_of(resource: impl Into<String>, object: &Value) -> Command {
        Command::Delete {
            resource: resource.into(),
            namespace: meta::namespace(object).to_string(),
            name: meta::name(object).to_string(),
            uid: Some(meta::uid(object).to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
    fn parse(s: &str) -> EventType {
        match s {
            "ADDED" => EventType::Added,
            "DELETED" => EventType::Deleted,
            _ => EventType::Modified,
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub resource: String,
    pub kind: EventType,
    pub object: Value,
}

/// Why the state machine refused a command: part of the command's replicated outcome, the
/// same on every server (unlike a [`StoreError`] fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Rejection {
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("the object has been modified; please apply your changes to the latest version and try again")]
    Conflict { resource: String, name: String },
    #[error("pod {name} is already assigned to node {node:?}")]
    AlreadyBound { name: String, node: String },
    #[error("{message}")]
    Forbidden { message: String },
    /// A value that must be unique is held by another object.
    #[error("{kind} {name:?} is invalid: {field}: Invalid value: {value}: {reason}")]
    Invalid { kind: String, name: String, field: String, value: String, reason: String },
    #[error("log entry {index} was already applied")]
    Replayed { index: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The command's answer: refused by the state machine. Nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database holds a corrupt object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the state database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// A fault (I/O, corruption, a stopped store), as opposed to a command's answer.
    pub fn is_fault(&self) -> bool {
        matches!(self, StoreError::Sqlite(_) | StoreError::Json(_) | StoreError::Task(_))
    }

    /// A fault no retry can cure: the state no longer reads back. The node must stop rather
    /// than answer from, or diverge on, a broken replica.
    pub fn is_corruption(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            StoreError::Json(_) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, DatabaseCorrupt | NotADatabase)
            }
            _ => false,
        }
    }

    /// The disk under the state database is full: nothing was written; the write can be
    /// retried once there is space.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
    }
}

/// Where a snapshot leaves off: its last revision and last applied log index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub revision: u64,
    pub applied: u64,
}

/// The result of an applied command.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub revision: u64,
    /// The object as stored (for a delete, as it was when deleted).
    pub object: Value,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the store's threads.
enum Job {
    /// A command proposed locally: the writer gives it the next log index (a log of one
    /// server). Consecutive proposals share one transaction (group commit).
    Propose(Command, Reply<Answer>),
    /// Log entries ordered elsewhere (Raft), with the log's bookkeeping: applied as one batch.
    Apply(Vec<(u64, Option<Command>)>, Vec<(String, String)>, Reply<Vec<Option<Answer>>>),
    /// Any other use of the connection (reads on the reader; compaction, snapshots on the
    /// writer).
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

struct Inner {
    /// The writer thread: the one place commands are applied.
    writer: std::sync::mpsc::Sender<Job>,
    /// The reader thread (its own connection; WAL lets it read while the writer writes). For an
    /// in-memory store this is the writer's channel, as there is only one connection.
    reader: std::sync::mpsc::Sender<Job>,
    events: broadcast::Sender<Arc<Event>>,
    /// Bumped when a snapshot replaces the state: every watch then ends with `410 Gone`.
    epoch: tokio::sync::watch::Sender<u64>,
    /// Set once when the writer meets corruption (see [`StoreError::is_corruption`]).
    corrupt: tokio::sync::watch::Sender<Option<String>>,
}

/// The most commands one transaction carries.
const GROUP: usize = 128;

impl Store {
    /// Opens (creating when needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let writer = Connection::open(path)?;
        schema::prepare(&writer)?;
        let reader = Connection::open(path)?;
        reader.pragma_update(None, "query_only", true)?;
        Ok(Store::start(writer, Some(reader)))
    }

    /// An in-memory store for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        schema::prepare(&conn)?;
        Ok(Store::start(conn, None))
    }

    fn start(writer: Connection, reader: Option<Connection>) -> Store {
        let (events, _) = broadcast::channel(4096);
        let (wtx, wrx) = std::sync::mpsc::channel::<Job>();
        let (corrupt, _) = tokio::sync::watch::channel(None);
        let out = Outlets { events: events.clone(), corrupt: corrupt.clone() };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(writer, wrx, out))
            .expect("spawning the store writer thread");
        let rtx = match reader {
            Some(conn) => {
                let (rtx, rrx) = std::sync::mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("store-reader".into())
                    .spawn(move || read_loop(conn, rrx))
                    .expect("spawning the store reader thread");
                rtx
            }
            None => wtx.clone(),
        };
        let (epoch, _) = tokio::sync::watch::channel(0);
        Store { inner: Arc::new(Inner { writer: wtx, reader: rtx, events, epoch, corrupt }) }
    }

    async fn send<T>(queue: &std::sync::mpsc::Sender<Job>, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        queue.send(job(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn run_on<T: Send + 'static>(
        queue: &std::sync::mpsc::Sender<Job>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Store::send(queue, |tx| {
            Job::Run(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
        })
        .await
    }

    /// Runs a read on the reader connection.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Store::run_on(&self.inner.reader, f).await
    }

    /// The state machine: applies log entries (strictly increasing indexes) durably in one
    /// transaction, tells watchers, and returns each command's answer. Entries at or below the
    /// applied index change nothing (`Rejection::Replayed`). `Err` is a fault: nothing of the
    /// batch was applied.
    pub async fn apply(&self, entries: Vec<(u64, Command)>) -> Result<Vec<Answer>, StoreError> {
        let entries = entries.into_iter().map(|(i, c)| (i, Some(c))).collect();
        let answers = self.apply_log(entries, Vec::new()).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// [`Store::apply`] for a log whose entries may carry no command (Raft's blank and
    /// membership entries: they only advance the applied index, and get `None`), with `state`
    /// — the log's bookkeeping — written in the same transaction (see [`Store::log_state`]).
    pub async fn apply_log(
        &self,
        entries: Vec<(u64, Option<Command>)>,
        state: Vec<(String, String)>,
    ) -> Result<Vec<Option<Answer>>, StoreError> {
        Store::send(&self.inner.writer, |tx| Job::Apply(entries, state, tx)).await
    }

    /// A value of the log's bookkeeping, as last written by [`Store::apply_log`].
    pub async fn log_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.blocking(move |conn| schema::log_state(conn, &key)).await
    }

    /// Proposes one command to this store as its own log (see [`Proposer::local`]).
    async fn propose_local(&self, command: Command) -> Result<Applied, StoreError> {
        Ok(Store::send(&self.inner.writer, |tx| Job::Propose(command, tx)).await??)
    }

    /// Resolves with a description when the writer met corruption: the node must stop.
    pub async fn corrupted(&self) -> String {
        let mut rx = self.inner.corrupt.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Forgets which log the store followed — its applied index and the log's bookkeeping —
    /// keeping the state itself: the store is about to follow a new log.
    pub async fn begin_new_log(&self) -> Result<(), StoreError> {
        Store::run_on(&self.inner.writer, |conn| {
            let tx = conn.transaction()?;
            schema::set_meta(&tx, "applied", 0)?;
            tx.execute("DELETE FROM log_state", [])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The last server `resourceVersion` an agent's mirror recorded for `stream` (see
    /// [`Command::Mirror`]); `None` when the stream was never synced.
    pub async fn mirror_position(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let stream = stream.to_string();
        self.blocking(move |conn| schema::mirror_position(conn, &stream)).await
    }

    /// The index of the last log entry applied.
    pub async fn applied_index(&self) -> Result<u64, StoreError> {
        self.blocking(|conn| schema::meta(conn, "applied")).await
    }

    pub async fn get(&self, resource: &str, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        let (r, ns, n) = (resource.to_string(), namespace.to_string(), name.to_string());
        self.blocking(move |conn| machine::get(conn, &r, &ns, &n)).await
    }

    /// Lists objects of a resource, in one namespace or all (`None`), with the store revision.
    pub async fn list(&self, resource: &str, namespace: Option<&str>) -> Result<(Vec<Value>, u64), StoreError> {
        let r = resource.to_string();
        let ns = namespace.map(str::to_string);
        self.blocking(move |conn| {
            let tx = conn.transaction()?;
            let revision = schema::revision(&tx)?;
            let mut stmt = tx.prepare_cached(
                "SELECT data FROM objects WHERE resource = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name",
            )?;
            let rows = stmt.query_map(params![r, ns], |row| row.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row?)?);
            }
            drop(stmt);
            tx.commit()?;
            Ok((out, revision))
        })
        .await
    }

    /// Lists every object in a namespace, of any resource, as (resource, object).
    pub async fn list_namespace(&self, namespace: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let ns = namespace.to_string();
        self.blocking(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT resource, data FROM objects WHERE namespace = ?1")?;
            let rows = stmt.query_map(params![ns], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (r, d) = row?;
                out.push((r, serde_json::from_str(&d)?));
            }
            Ok(out)
        })
        .await
    }

    pub async fn revision(&self) -> Result<u64, StoreError> {
        self.blocking(|conn| schema::revision(conn)).await
    }

    /// Watches every change after revision `from`; callers filter by resource and namespace.
    pub async fn watch(&self, from: u64) -> Result<Watcher, StoreError> {
        let live = self.inner.events.subscribe();
        let epoch = self.inner.epoch.subscribe();
        let backlog = self.blocking(move |conn| changes_since(conn, from)).await?;
        Ok(Watcher::new(self.clone(), live, epoch, backlog, from))
    }

    /// Drops change-log entries older than the kept history and checkpoints the WAL.
    pub async fn compact(&self) -> Result<(), StoreError> {
        Store::run_on(&self.inner.writer, |conn| {
            let revision = schema::revision(conn)?;
            if revision > HISTORY {
                let cut = revision - HISTORY;
                conn.execute("DELETE FROM changes WHERE revision <= ?1", params![cut as i64])?;
                schema::set_meta(conn, "compacted", cut)?;
            }
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Writes the whole state — objects, change log, revision, applied index — to a new file
    /// at `path`, which must not exist (`VACUUM INTO`: SQLite copies page by page, nothing is
    /// built in memory). Runs on the writer thread, so no command lands between reading the
    /// position and copying.
    pub async fn snapshot(&self, path: &Path) -> Result<SnapshotMeta, StoreError> {
        let target = path.to_string_lossy().into_owned();
        Store::run_on(&self.inner.writer, move |conn| {
            let at = SnapshotMeta { revision: schema::revision(conn)?, applied: schema::meta(conn, "applied")? };
            conn.execute("VACUUM INTO ?1", params![target])?;
            Ok(at)
        })
        .await
    }

    /// Replaces the whole state with the snapshot at `path` (SQLite's backup API, page by
    /// page), with its revision and applied index. Every running watch ends with `410 Gone`,
    /// since revisions after the snapshot's may now mean other changes.
    pub async fn restore(&self, path: &Path) -> Result<SnapshotMeta, StoreError> {
        let source = path.to_path_buf();
        let at = Store::run_on(&self.inner.writer, move |conn| {
            conn.restore(rusqlite::MAIN_DB, &source, None::<fn(rusqlite::backup::Progress)>)?;
            schema::prepare(conn)?;
            Ok(SnapshotMeta { revision: schema::revision(conn)?, applied: schema::meta(conn, "applied")? })
        })
        .await?;
        self.inner.epoch.send_modify(|e| *e += 1);
        Ok(at)
    }
}

/// An in-memory store holding the built-in namespaces, and its local proposer: for unit tests.
#[cfg(test)]
pub async fn test_store() -> (Store, Proposer) {
    let store = Store::in_memory().expect("an in-memory store");
    let proposer = Proposer::local(&store);
    crate::controllers::namespace::ensure_built_in(&store, &proposer).await.expect("the built-in namespaces");
    (store, proposer)
}

fn stopped() -> StoreError {
    StoreError::Task("the store has stopped".into())
}

pub(crate) fn changes_since(conn: &Connection, from: u64) -> Result<Vec<Arc<Event>>, StoreError> {
    let compacted = schema::meta(conn, "compacted")?;
    if from < compacted {
        return Err(StoreError::Gone { requested: from, oldest: compacted + 1 });
    }
    let mut stmt = conn
        .prepare_cached("SELECT revision, resource, type, data FROM changes WHERE revision > ?1 ORDER BY revision")?;
    let rows = stmt.query_map(params![from as i64], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, String>(3)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (revision, resource, kind, data) = row?;
        out.push(Arc::new(Event {
            revision: revision as u64,
            resource,
            kind: EventType::parse(&kind),
            object: serde_json::from_str(&data)?,
        }));
    }
    Ok(out)
}

/// Where the writer thread reports: applied changes to watchers, corruption to the daemon.
struct Outlets {
    events: broadcast::Sender<Arc<Event>>,
    corrupt: tokio::sync::watch::Sender<Option<String>>,
}

/// The writer thread: takes whatever jobs are queued (up to [`GROUP`]); consecutive local
/// proposals get the next log indexes and are applied as one batch (one transaction, one
/// fsync), then watchers and callers are told — a command is acknowledged only after the
/// commit is durable.
fn write_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>, out: Outlets) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut proposals = Vec::new();
        for job in batch {
            match job {
                Job::Propose(cmd, reply) => proposals.push((cmd, reply)),
                Job::Apply(entries, state, reply) => {
                    apply_proposals(&mut conn, std::mem::take(&mut proposals), &out);
                    let _ = reply.send(apply_and_publish(&mut conn, entries, &state, &out));
                }
                Job::Run(f) => {
                    apply_proposals(&mut conn, std::mem::take(&mut proposals), &out);
                    f(&mut conn);
                }
            }
        }
        apply_proposals(&mut conn, proposals, &out);
    }
}

/// Numbers local proposals after the applied index and applies them as one batch.
fn apply_proposals(conn: &mut Connection, proposals: Vec<(Command, Reply<Answer>)>, out: &Outlets) {
    if proposals.is_empty() {
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<Reply<Answer>>) = proposals.into_iter().unzip();
    let result = schema::meta(conn, "applied").and_then(|applied| {
        apply_and_publish(conn, (applied + 1..).zip(commands.into_iter().map(Some)).collect(), &[], out)
    });
    match result {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers.into_iter().flatten()) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            let message = e.to_string();
            let full = e.is_disk_full();
            for reply in replies {
                let _ = reply.send(Err(if full {
                    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                        Some(message.clone()),
                    ))
                } else {
                    StoreError::Task(format!("the transaction failed: {message}"))
                }));
            }
        }
    }
}

/// Applies a batch, then hands its events to watchers (after the commit). A fault is logged,
/// and reported to the daemon when it is corruption.
fn apply_and_publish(
    conn: &mut Connection,
    entries: Vec<(u64, Option<Command>)>,
    state: &[(String, String)],
    out: &Outlets,
) -> Result<Vec<Option<Answer>>, StoreError> {
    match machine::apply_batch(conn, entries, state) {
        Ok((answers, applied)) => {
            for event in applied {
                // No receivers is fine: nobody is watching.
                let _ = out.events.send(Arc::new(event));
            }
            Ok(answers)
        }
        Err(e) => {
            tracing::error!(error = %e, "the state database could not apply a batch of commands; nothing of it was applied");
            if e.is_corruption() {
                out.corrupt.send_replace(Some(e.to_string()));
            }
            Err(e)
        }
    }
}

fn read_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        if let Job::Run(f) = job {
            f(&mut conn);
        }
    }
}

#[cfg(test)]
mod tests;
