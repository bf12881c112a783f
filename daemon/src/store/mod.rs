//! SQLite state: objects, revisions, the change log behind watches, compaction.
//!
//! Owns `state.db`. Every write is a [`Command`] handed to [`Store::apply`], the one function
//! that changes state; in a cluster the same command will be a Raft log entry and `apply` the
//! state machine. Each applied command gets a strictly increasing revision, which becomes the
//! object's `metadata.resourceVersion`; a command is acknowledged only after its transaction is
//! durable (WAL, `synchronous=FULL`).
//!
//! Invariant: one writer; the change log holds every revision after the compaction point.
//! Boundary: callers decide *what* to write (validation lives in `objects`/`api`); the store
//! only checks preconditions (existence, resourceVersion, uid). It never calls anyone back:
//! others learn of changes through [`Store::watch`].

mod schema;
mod watch;

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::objects::meta;

pub use watch::Watcher;

/// How many revisions of history the change log keeps for watchers.
const HISTORY: u64 = 10_000;

/// A write, as proposed to the store. Legal at any time; preconditions are checked by `apply`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Insert a new object; fails if (resource, namespace, name) exists.
    Create { resource: String, object: Value },
    /// Replace an existing object. When the object carries a `resourceVersion`, it must be the
    /// stored one (optimistic concurrency).
    Update { resource: String, object: Value },
    /// Remove an object; when `uid` is given it must match (the object was not replaced).
    Delete { resource: String, namespace: String, name: String, uid: Option<String> },
}

impl Command {
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("the object has been modified; please apply your changes to the latest version and try again")]
    Conflict { resource: String, name: String },
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database holds a corrupt object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the state database task failed: {0}")]
    Task(String),
}

/// The result of an applied command.
#[derive(Debug, Clone)]
pub struct Applied {
    pub revision: u64,
    /// The object as stored (for a delete, as it was when deleted).
    pub object: Value,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Work for the store's threads.
enum Job {
    /// A command; consecutive commands share one transaction (group commit).
    Apply(Command, oneshot::Sender<Result<Applied, StoreError>>),
    /// Any other use of the connection (reads on the reader; compaction on the writer).
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

struct Inner {
    /// The writer thread: the one place commands are applied.
    writer: std::sync::mpsc::Sender<Job>,
    /// The reader thread (its own connection; WAL lets it read while the writer writes). For an
    /// in-memory store this is the writer's channel, as there is only one connection.
    reader: std::sync::mpsc::Sender<Job>,
    events: broadcast::Sender<Arc<Event>>,
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
        let broadcast = events.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(writer, wrx, broadcast))
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
        Store { inner: Arc::new(Inner { writer: wtx, reader: rtx, events }) }
    }

    async fn run_on<T: Send + 'static>(
        queue: &std::sync::mpsc::Sender<Job>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        queue
            .send(Job::Run(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            })))
            .map_err(|_| StoreError::Task("the store has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Task("the store has stopped".into()))?
    }

    /// Runs a read on the reader connection.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Store::run_on(&self.inner.reader, f).await
    }

    /// Applies one command durably and tells watchers. The only way state changes.
    pub async fn apply(&self, command: Command) -> Result<Applied, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Apply(command, tx))
            .map_err(|_| StoreError::Task("the store has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Task("the store has stopped".into()))?
    }

    pub async fn get(&self, resource: &str, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        let (r, ns, n) = (resource.to_string(), namespace.to_string(), name.to_string());
        self.blocking(move |conn| get_object(conn, &r, &ns, &n)).await
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
        let backlog = self.blocking(move |conn| changes_since(conn, from)).await?;
        Ok(Watcher::new(self.clone(), live, backlog, from))
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
}

fn get_object(conn: &Connection, resource: &str, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
    let data: Option<String> = conn
        .prepare_cached("SELECT data FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3")?
        .query_row(params![resource, namespace, name], |row| row.get(0))
        .optional()?;
    Ok(match data {
        Some(d) => Some(serde_json::from_str(&d)?),
        None => None,
    })
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

/// Applies one command inside the writer's open transaction.
fn apply_command(tx: &Connection, command: Command) -> Result<(Applied, Event), StoreError> {
    let revision = schema::revision(tx)? + 1;
    let (resource, kind, object) = match command {
        Command::Create { resource, mut object } => {
            let (ns, name) = (meta::namespace(&object).to_string(), meta::name(&object).to_string());
            if get_object(tx, &resource, &ns, &name)?.is_some() {
                return Err(StoreError::AlreadyExists { resource, name });
            }
            meta::set(&mut object, "resourceVersion", revision.to_string());
            write_object(tx, &resource, &object, revision)?;
            (resource, EventType::Added, object)
        }
        Command::Update { resource, mut object } => {
            let (ns, name) = (meta::namespace(&object).to_string(), meta::name(&object).to_string());
            let Some(current) = get_object(tx, &resource, &ns, &name)? else {
                return Err(StoreError::NotFound { resource, name });
            };
            let expected = meta::resource_version(&object);
            if !expected.is_empty() && expected != meta::resource_version(&current) {
                return Err(StoreError::Conflict { resource, name });
            }
            meta::set(&mut object, "resourceVersion", revision.to_string());
            write_object(tx, &resource, &object, revision)?;
            (resource, EventType::Modified, object)
        }
        Command::Delete { resource, namespace, name, uid } => {
            let Some(mut current) = get_object(tx, &resource, &namespace, &name)? else {
                return Err(StoreError::NotFound { resource, name });
            };
            if uid.as_deref().is_some_and(|u| u != meta::uid(&current)) {
                return Err(StoreError::Conflict { resource, name });
            }
            tx.execute(
                "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
                params![resource, namespace, name],
            )?;
            meta::set(&mut current, "resourceVersion", revision.to_string());
            (resource, EventType::Deleted, current)
        }
    };
    tx.execute(
        "INSERT INTO changes (revision, resource, type, data) VALUES (?1, ?2, ?3, ?4)",
        params![revision as i64, resource, kind.as_str(), serde_json::to_string(&object)?],
    )?;
    schema::set_meta(tx, "revision", revision)?;
    let event = Event { revision, resource, kind, object: object.clone() };
    Ok((Applied { revision, object }, event))
}

/// The writer thread: takes whatever commands are queued (up to [`GROUP`]), applies each in a
/// savepoint of one transaction, commits once, then tells watchers and callers — a command is
/// acknowledged only after the commit is durable.
fn write_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>, events: broadcast::Sender<Arc<Event>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut commands = Vec::new();
        for job in batch {
            match job {
                Job::Apply(cmd, reply) => commands.push((cmd, reply)),
                Job::Run(f) => {
                    commit_group(&mut conn, std::mem::take(&mut commands), &events);
                    f(&mut conn);
                }
            }
        }
        commit_group(&mut conn, commands, &events);
    }
}

type Reply = oneshot::Sender<Result<Applied, StoreError>>;

fn commit_group(conn: &mut Connection, commands: Vec<(Command, Reply)>, events: &broadcast::Sender<Arc<Event>>) {
    if commands.is_empty() {
        return;
    }
    #[allow(clippy::type_complexity)] // replaced by the state machine's batch apply
    let mut outcomes: Vec<(Reply, Result<(Applied, Event), StoreError>)> = Vec::with_capacity(commands.len());
    let result = (|| -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (cmd, reply) in commands {
            tx.execute_batch("SAVEPOINT command")?;
            let outcome = apply_command(&tx, cmd);
            if outcome.is_ok() {
                tx.execute_batch("RELEASE command")?;
            } else {
                tx.execute_batch("ROLLBACK TO command; RELEASE command")?;
            }
            outcomes.push((reply, outcome));
        }
        tx.commit()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            for (reply, outcome) in outcomes {
                let answer = outcome.map(|(applied, event)| {
                    // No receivers is fine: nobody is watching.
                    let _ = events.send(Arc::new(event));
                    applied
                });
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (reply, _) in outcomes {
                let _ = reply.send(Err(StoreError::Task(format!("the transaction failed: {message}"))));
            }
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

fn write_object(conn: &Connection, resource: &str, object: &Value, revision: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO objects (resource, namespace, name, uid, revision, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (resource, namespace, name) DO UPDATE SET uid = excluded.uid, revision = excluded.revision, data = excluded.data",
        params![
            resource,
            meta::namespace(object),
            meta::name(object),
            meta::uid(object),
            revision as i64,
            serde_json::to_string(object)?
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
