//! Raft among servers, by openraft 0.9 (storage v2): the store's [`Command`] is the log entry
//! and `Store::apply_log` the state machine. `log.rs` keeps the log in SQLite, `state_machine.rs`
//! adapts the store (snapshots are SQLite files), `network.rs` carries Raft's messages over a
//! [`network::Transport`]. [`Server`] runs one member; its [`Server::proposer`] is how the rest
//! of the daemon writes: on the leader a write returns once committed by a majority and
//! applied; on a follower it is forwarded to the leader, and returns once applied here too.
//!
//! Timing defaults are for slow edge links, not a LAN (openraft's own: 50 ms heartbeats,
//! 150–300 ms elections).

// openraft's trait signatures return its `StorageError`, which is large; helpers return it too.
#![allow(clippy::result_large_err)]

pub mod log;
pub mod network;
pub mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::store::{Answer, Applied, BoxFuture, Command, Propose, Proposer, Store, StoreError};
pub use network::ProposeFailure;
use network::{Network, Reply, Rpc, Transport};

/// A server's id in the Raft group.
pub type NodeId = u64;

/// A voting server: its node name and where its peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
}

/// A log entry's outcome: the command's answer (`None` for Raft's own entries).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome(pub Option<Answer>);

openraft::declare_raft_types!(
    /// Skerry's Raft: commands in, answers out, SQLite files as snapshots.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

/// Raft's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range stands for election.
    pub election: (Duration, Duration),
}

impl Default for Timing {
    /// For a slow, lossy edge link: a heartbeat every 500 ms, an election after 2.5–5 s of
    /// silence (a few lost heartbeats never start one).
    fn default() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(500),
            election: (Duration::from_millis(2500), Duration::from_secs(5)),
        }
    }
}

impl Timing {
    fn config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: "skerry".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election.0.as_millis() as u64,
            election_timeout_max: self.election.1.as_millis() as u64,
            // The log is kept a while after a snapshot so a briefly absent follower catches up
            // from the log, not from a whole snapshot.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5000),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("preparing raft storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("starting raft: {0}")]
    Fatal(#[from] openraft::error::Fatal<NodeId>),
    #[error("bootstrapping the cluster: {0}")]
    Initialize(String),
}

/// One member of the Raft group.
#[derive(Clone)]
pub struct Server {
    pub id: NodeId,
    pub raft: Raft,
    transport: Arc<dyn Transport>,
}

impl Server {
    /// Starts member `id` over `store`, its `log` and `snapshots` folder.
    pub async fn start(
        id: NodeId,
        store: Store,
        log: log::LogStore,
        snapshots: &Path,
        transport: Arc<dyn Transport>,
        timing: Timing,
    ) -> Result<Server, RaftStartError> {
        let config = Arc::new(timing.config()?);
        let state_machine = state_machine::StateMachine::new(store, snapshots).await?;
        let network = Network { transport: transport.clone() };
        let raft = Raft::new(id, config, network, log, state_machine).await?;
        Ok(Server { id, raft, transport })
    }

    /// Makes a new cluster of `members` (this server among them); a no-op on a server that is
    /// already part of one.
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, Member>) -> Result<(), RaftStartError> {
        if self.raft.is_initialized().await.map_err(|e| RaftStartError::Initialize(e.to_string()))? {
            return Ok(());
        }
        self.raft.initialize(members).await.map_err(|e| RaftStartError::Initialize(e.to_string()))
    }

    /// The handle every writer of this server uses.
    pub fn proposer(&self) -> Proposer {
        Proposer::new(RaftProposer { server: self.clone() })
    }

    /// Answers an RPC from a peer.
    pub async fn serve(&self, rpc: Rpc) -> Reply {
        match rpc {
            Rpc::AddVoter { id, member } => Reply::Membership(self.add_voter(id, member).await),
            rpc => network::serve(&self.raft, rpc).await,
        }
    }

    /// Makes server `id` a voter: first a learner, caught up with the log (or a snapshot), then a
    /// voter by a joint-consensus membership change. On a follower the leader is asked. Answers
    /// the log index of the membership that holds it; adding a voter again changes nothing.
    pub async fn add_voter(&self, id: NodeId, member: Member) -> Result<u64, ProposeFailure> {
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_WAIT;
        loop {
            let leader = self.raft.current_leader().await;
            if leader == Some(self.id) {
                let added = self.raft.add_learner(id, member.clone(), true).await;
                let changed = match added {
                    Ok(_) => self.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await,
                    Err(e) => Err(e),
                };
                match changed {
                    Ok(resp) => {
                        tracing::info!(server = member.name, id, addr = member.addr, "a server joined the Raft group");
                        let voters = self.raft.metrics().borrow().membership_config.membership().voter_ids().count();
                        if voters.is_multiple_of(2) {
                            tracing::warn!(
                                voters,
                                "an even number of servers tolerates no more failures than one server fewer; \
                                 run 3 or 5 servers"
                            );
                        }
                        return Ok(resp.log_id.index);
                    }
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                    Err(e) => return Err(ProposeFailure::Other(e.to_string())),
                }
            } else if let Some(leader) = leader {
                if let Some(at) = self.member(leader) {
                    match self.transport.send(leader, &at, Rpc::AddVoter { id, member: member.clone() }).await {
                        Ok(Reply::Membership(Err(ProposeFailure::NotLeader { .. }))) | Err(_) => {}
                        Ok(Reply::Membership(answer)) => return answer,
                        Ok(_) => return Err(ProposeFailure::Other("the leader answered another message".into())),
                    }
                }
            }
            if !self.another_round(deadline).await {
                return Err(ProposeFailure::Other(no_quorum().to_string()));
            }
        }
    }

    /// Waits until this server has applied everything committed before the call: the leader
    /// confirms its leadership with a quorum (openraft's `ensure_linearizable`) for a read index;
    /// a follower asks the leader for one and waits to apply it (Raft's read-index read).
    pub async fn read_index(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + NO_LEADER_WAIT;
        loop {
            let index = match self.raft.current_leader().await {
                Some(leader) if leader == self.id => match network::serve(&self.raft, Rpc::ReadIndex).await {
                    Reply::ReadIndex(Ok(index)) => Some(index),
                    _ => None,
                },
                Some(leader) => match self.member(leader) {
                    Some(at) => match self.transport.send(leader, &at, Rpc::ReadIndex).await {
                        Ok(Reply::ReadIndex(Ok(index))) => Some(index),
                        _ => None,
                    },
                    None => None,
                },
                None => None,
            };
            if let Some(index) = index {
                return self
                    .raft
                    .wait(Some(NO_LEADER_WAIT))
                    .applied_index_at_least(Some(index), "a read index")
                    .await
                    .map(|_| ())
                    .map_err(|e| StoreError::Task(format!("waiting for a read index: {e}")));
            }
            if !self.another_round(deadline).await {
                return Err(no_quorum());
            }
        }
    }

    /// Where member `id` is reached, by this server's view of the membership.
    fn member(&self, id: NodeId) -> Option<Member> {
        self.raft.metrics().borrow().membership_config.membership().get_node(&id).cloned()
    }

    /// Between two tries of a request for the leader: `false` once `deadline` has passed;
    /// otherwise waits (briefly) for a leader to be known, and `true`.
    async fn another_round(&self, deadline: tokio::time::Instant) -> bool {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        let _ =
            self.raft.wait(Some(Duration::from_millis(250))).metrics(|m| m.current_leader.is_some(), "a leader").await;
        true
    }

    /// Removes server `id` from the voters, then from the group (`skerry delete node` of a
    /// server); on the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), String> {
        let voters: Vec<NodeId> = self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if voters.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Makes a server whose cluster lost its quorum for good into a cluster of one with the state
/// it has (k3s and dqlite users lose clusters for lack of this): its log and snapshots, which
/// name the lost members, are moved aside under `dir` (returned: kept, never deleted), and the
/// store forgets the old log's position; the next start bootstraps a new cluster of one whose
/// first entries follow the kept state (same objects, revisions going on from where they were).
pub async fn reset(store: &Store, dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let stamp = jiff::Timestamp::now().as_second();
    let kept = dir.join(format!("before-reset-{stamp}"));
    tokio::fs::create_dir_all(&kept).await?;
    for name in ["raft.db", "raft.db-wal", "raft.db-shm", "snapshots", "joining"] {
        let from = dir.join(name);
        if tokio::fs::try_exists(&from).await? {
            tokio::fs::rename(&from, kept.join(name)).await?;
        }
    }
    store.begin_new_log().await.map_err(std::io::Error::other)?;
    Ok(kept)
}

/// How long a write waits for a leader to exist before it fails.
const NO_LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long adding a voter may take (a new server may first need a whole snapshot).
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(120);

struct RaftProposer {
    server: Server,
}

fn answer(outcome: Outcome) -> Result<Applied, StoreError> {
    match outcome.0 {
        Some(Ok(applied)) => Ok(applied),
        Some(Err(rejection)) => Err(rejection.into()),
        None => Err(StoreError::Task("the log entry carried no command".into())),
    }
}

fn no_quorum() -> StoreError {
    StoreError::Task(
        "no Raft leader: the servers have lost their quorum; bring a majority of servers back, \
         or make a survivor a cluster of one with `skerryd --cluster-reset`"
            .into(),
    )
}

impl RaftProposer {
    async fn write(&self, command: Command) -> Result<Applied, StoreError> {
        let raft = &self.server.raft;
        let deadline = tokio::time::Instant::now() + NO_LEADER_WAIT;
        loop {
            let forward = match raft.client_write(command.clone()).await {
                Ok(resp) => return answer(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
                Err(e) => return Err(StoreError::Task(format!("raft: {e}"))),
            };
            if let (Some(leader), Some(member)) = (forward.leader_id, forward.leader_node) {
                let reply = self.server.transport.send(leader, &member, Rpc::Propose(command.clone())).await;
                match reply {
                    Ok(Reply::Propose(Ok((outcome, index)))) => {
                        // Acknowledged only once applied here too: a read after the write sees it.
                        raft.wait(Some(NO_LEADER_WAIT))
                            .applied_index_at_least(Some(index), "a forwarded write")
                            .await
                            .map_err(|e| StoreError::Task(format!("waiting for a forwarded write: {e}")))?;
                        return answer(outcome);
                    }
                    Ok(Reply::Propose(Err(ProposeFailure::NotLeader { .. }))) | Err(_) => {}
                    Ok(Reply::Propose(Err(ProposeFailure::Other(e)))) => return Err(StoreError::Task(e)),
                    Ok(_) => return Err(StoreError::Task("the leader answered another message".into())),
                }
            }
            // No leader known, or it changed meanwhile: wait for one, then try again.
            if !self.server.another_round(deadline).await {
                return Err(no_quorum());
            }
        }
    }
}

impl Propose for RaftProposer {
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Applied, StoreError>> {
        Box::pin(self.write(command))
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.server.read_index())
    }
}
