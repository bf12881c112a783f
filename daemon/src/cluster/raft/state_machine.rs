//! The store as Raft's state machine: committed entries go to `Store::apply_log` with Raft's
//! bookkeeping (the last applied log id and the membership) written in the same transaction,
//! so a restart resumes exactly where the state is. Snapshots are the store's own files:
//! `VACUUM INTO` a file that is streamed from disk to a follower, which restores it with
//! SQLite's backup API — never built in memory.

use std::path::{Path, PathBuf};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};

use super::{Entry, Member, NodeId, Outcome, TypeConfig};
use crate::store::Store;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

const LAST_APPLIED: &str = "raft.last_applied";
const MEMBERSHIP: &str = "raft.membership";

fn sm_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &e).into()
}

/// The state machine: the node's store, and a folder for snapshot files.
pub struct StateMachine {
    store: Store,
    dir: PathBuf,
    membership: StoredMembership<NodeId, Member>,
    /// Where the snapshot being received is written.
    incoming: Option<PathBuf>,
}

/// What the snapshot folder keeps beside `snapshot.db`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Current {
    meta: SnapshotMeta<NodeId, Member>,
}

impl StateMachine {
    /// The state machine over `store`; snapshot files go to `dir`.
    /// A store never driven by Raft (a single-node data dir of an earlier release) has an
    /// applied index of its own log: it is reset, so Raft's first entries are not mistaken for
    /// entries already applied. Its objects and revision are kept.
    pub async fn new(store: Store, dir: &Path) -> std::io::Result<StateMachine> {
        tokio::fs::create_dir_all(dir).await?;
        if store.log_state(LAST_APPLIED).await.map_err(std::io::Error::other)?.is_none() {
            store.begin_new_log().await.map_err(std::io::Error::other)?;
        }
        let membership = match store.log_state(MEMBERSHIP).await {
            Ok(Some(json)) => serde_json::from_str(&json).map_err(std::io::Error::other)?,
            Ok(None) => StoredMembership::default(),
            Err(e) => return Err(std::io::Error::other(e)),
        };
        Ok(StateMachine { store, dir: dir.to_path_buf(), membership, incoming: None })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("snapshot.db")
    }
}

/// Builds a snapshot of the store into the snapshot folder.
pub struct Builder {
    store: Store,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let tmp = self.dir.join(format!("building-{}.db", uuid::Uuid::new_v4().simple()));
        self.store.snapshot(&tmp).await.map_err(snap_err)?;
        // The snapshot's position is what the file itself says (written in the same
        // transactions as the state it holds).
        let file = tmp.clone();
        let (last, membership) =
            tokio::task::spawn_blocking(move || read_position(&file)).await.map_err(snap_err)??;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, uuid::Uuid::new_v4().simple()),
            None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
        };
        let meta = SnapshotMeta { last_log_id: last, last_membership: membership, snapshot_id };
        install_current(&self.dir, &tmp, &meta).await?;
        let data = tokio::fs::File::open(self.dir.join("snapshot.db")).await.map_err(snap_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(data) })
    }
}

/// Where a state stands in the log: the last applied log id and the membership then.
type Position = (Option<LogId<NodeId>>, StoredMembership<NodeId, Member>);

/// Reads Raft's bookkeeping from a snapshot file.
fn read_position(path: &Path) -> Result<Position> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sm_read)?;
    let get = |key: &str| -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        conn.query_row("SELECT value FROM log_state WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(sm_read)
    };
    let last = get(LAST_APPLIED)?.map(|j| serde_json::from_str(&j)).transpose().map_err(sm_read)?;
    let membership =
        get(MEMBERSHIP)?.map(|j| serde_json::from_str(&j)).transpose().map_err(sm_read)?.unwrap_or_default();
    Ok((last, membership))
}

/// Makes `file` the current snapshot, with its meta beside it.
async fn install_current(dir: &Path, file: &Path, meta: &SnapshotMeta<NodeId, Member>) -> Result<()> {
    let json = serde_json::to_vec(&Current { meta: meta.clone() }).map_err(snap_err)?;
    let tmp_meta = dir.join("snapshot.json.tmp");
    tokio::fs::write(&tmp_meta, json).await.map_err(snap_err)?;
    tokio::fs::rename(file, dir.join("snapshot.db")).await.map_err(snap_err)?;
    tokio::fs::rename(&tmp_meta, dir.join("snapshot.json")).await.map_err(snap_err)?;
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<Position> {
        let last = self.store.log_state(LAST_APPLIED).await.map_err(sm_read)?;
        let last = last.map(|j| serde_json::from_str(&j)).transpose().map_err(sm_read)?;
        Ok((last, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut batch = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            let command = match entry.payload {
                EntryPayload::Normal(command) => Some(command),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
                EntryPayload::Blank => None,
            };
            batch.push((entry.log_id.index, command));
        }
        let Some(last) = last else { return Ok(Vec::new()) };
        let state = vec![
            (LAST_APPLIED.to_string(), serde_json::to_string(&last).map_err(sm_write)?),
            (MEMBERSHIP.to_string(), serde_json::to_string(&self.membership).map_err(sm_write)?),
        ];
        // A fault here stops Raft on this node: a committed entry can never be skipped.
        let answers = self.store.apply_log(batch, state).await.map_err(|e| StorageIOError::apply(last, &e))?;
        Ok(answers.into_iter().map(Outcome).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder { store: self.store.clone(), dir: self.dir.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        let path = self.dir.join(format!("incoming-{}.db", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&path).await.map_err(snap_err)?;
        if let Some(old) = self.incoming.replace(path) {
            let _ = tokio::fs::remove_file(old).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<()> {
        snapshot.sync_all().await.map_err(snap_err)?;
        drop(snapshot);
        let Some(path) = self.incoming.take() else {
            return Err(snap_err(std::io::Error::other("a snapshot was installed that was never received")));
        };
        self.store.restore(&path).await.map_err(snap_err)?;
        self.membership = meta.last_membership.clone();
        install_current(&self.dir, &path, meta).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Ok(json) = tokio::fs::read(self.dir.join("snapshot.json")).await else { return Ok(None) };
        let current: Current = serde_json::from_slice(&json).map_err(sm_read)?;
        let data = tokio::fs::File::open(self.current_path()).await.map_err(sm_read)?;
        Ok(Some(Snapshot { meta: current.meta, snapshot: Box::new(data) }))
    }
}
