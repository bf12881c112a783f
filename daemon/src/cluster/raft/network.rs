//! Raft's messages between servers: the typed [`Rpc`]s and their [`Reply`]s, the [`Transport`]
//! seam that carries them (mutual TLS between hosts; in memory, with partitions, in tests) and
//! the adapter that gives openraft its `RaftNetwork`. [`serve`] answers an incoming RPC on the
//! receiving server. Peers are untrusted input: the transport decodes with size limits before
//! anything reaches here.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::{Member, NodeId, Outcome, Raft, TypeConfig};
use crate::store::{BoxFuture, Command};

/// A message to one server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write proposed on a follower, for the leader to commit.
    Propose(Command),
    /// A joined server asks to become a voter (answered by the leader; see `Server::add_voter`).
    AddVoter {
        id: NodeId,
        member: Member,
    },
    /// A follower asks the leader for a read index (see `Server::read_index`).
    ReadIndex,
}

/// The answer to an [`Rpc`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The command's answer and the log index it was committed at; or why it was not.
    Propose(Result<(Outcome, u64), ProposeFailure>),
    /// The log index of the membership that holds the new voter; or why not.
    Membership(Result<u64, ProposeFailure>),
    /// The leader's read index: the log index a linearizable read must see applied.
    ReadIndex(Result<u64, ProposeFailure>),
}

/// Why a forwarded proposal did not commit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ProposeFailure {
    #[error("this server is not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Other(String),
}

/// Why a message did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached now (down, partitioned): back off and retry.
    #[error("server {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The exchange failed midway: retry at once.
    #[error("talking to server {0}: {1}")]
    Network(NodeId, String),
}

/// Carries an [`Rpc`] to a server and brings back its [`Reply`].
pub trait Transport: Send + Sync + 'static {
    fn send(&self, target: NodeId, member: &Member, rpc: Rpc) -> BoxFuture<'_, Result<Reply, TransportError>>;
}

/// The transport of a cluster of one: there is nobody to reach.
pub struct Alone;

impl Transport for Alone {
    fn send(&self, target: NodeId, _member: &Member, _rpc: Rpc) -> BoxFuture<'_, Result<Reply, TransportError>> {
        Box::pin(async move { Err(TransportError::Unreachable(target, "this server has no peers".into())) })
    }
}

/// Answers an RPC on the receiving server.
pub async fn serve(raft: &Raft, rpc: Rpc) -> Reply {
    match rpc {
        Rpc::Append(req) => Reply::Append(raft.append_entries(req).await),
        Rpc::Vote(req) => Reply::Vote(raft.vote(req).await),
        Rpc::Snapshot(req) => Reply::Snapshot(raft.install_snapshot(req).await),
        Rpc::Propose(command) => Reply::Propose(match raft.client_write(command).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeFailure::NotLeader { leader: f.leader_id })
            }
            Err(e) => Err(ProposeFailure::Other(e.to_string())),
        }),
        Rpc::AddVoter { .. } => {
            Reply::Membership(Err(ProposeFailure::Other("membership changes are answered by the Server".into())))
        }
        Rpc::ReadIndex => Reply::ReadIndex(match raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ProposeFailure::NotLeader { leader: f.leader_id })
            }
            Err(e) => Err(ProposeFailure::Other(e.to_string())),
        }),
    }
}

/// openraft's network over a [`Transport`].
#[derive(Clone)]
pub struct Network {
    pub transport: std::sync::Arc<dyn Transport>,
}

/// One peer, as openraft's replication sees it.
pub struct Peer {
    transport: std::sync::Arc<dyn Transport>,
    target: NodeId,
    member: Member,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, member: &Member) -> Peer {
        Peer { transport: self.transport.clone(), target, member: member.clone() }
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl Peer {
    async fn call(&self, rpc: Rpc) -> Result<Reply, TransportError> {
        self.transport.send(self.target, &self.member, rpc).await
    }

    fn lost<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, Member, E> {
        match e {
            TransportError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::Network(..) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn remote<T, E: std::error::Error>(&self, r: Result<T, RaftError<NodeId, E>>) -> RpcResult<T, E> {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.member.clone(), e)))
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, Member, E> {
        let e = TransportError::Network(self.target, "the peer answered another message".into());
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(Rpc::Append(rpc)).await.map_err(Peer::lost)? {
            Reply::Append(r) => self.remote(r),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(Rpc::Snapshot(rpc)).await.map_err(Peer::lost)? {
            Reply::Snapshot(r) => self.remote(r),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Rpc::Vote(rpc)).await.map_err(Peer::lost)? {
            Reply::Vote(r) => self.remote(r),
            _ => Err(self.unexpected()),
        }
    }
}
