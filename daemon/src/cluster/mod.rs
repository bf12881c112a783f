//! The cluster: what makes several `skerryd`s one orchestrator. Raft among servers (`raft/`):
//! the replicated log in front of the store's state machine. Identity (`identity`): the cluster
//! CA, node keys and certificates, their renewal and the mutual-TLS configs. Join tokens
//! (`token`): their syntax, making and checking, and the `JoinToken` object that stores only a
//! hash of the secret. The Node authorizer (`authz`): what a node's certificate may do, as a
//! pure function. An agent's mirror (`mirror`): list+watch from the servers into the agent's own
//! store, and the agent's writes sent to a server. Gossip follows in a room of its own.
//!
//! Invariant: consensus is openraft's job; this module only adapts the store's state machine
//! and a transport to it. `identity`, `token` and `authz` are pure library code: no sockets, no
//! store access, no clock of their own (time is passed in). Boundary: the rest of the daemon
//! sees a `store::Proposer` and the leader's term (a task set), never Raft itself.

pub mod authz;
pub mod identity;
pub mod join;
pub mod mirror;
pub mod peer;
pub mod pki;
pub mod raft;
pub mod renew;
pub mod token;
