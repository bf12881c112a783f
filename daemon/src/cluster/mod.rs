//! The cluster: what makes several `skerryd`s one orchestrator. Today: Raft among servers
//! (`raft/`): the replicated log in front of the store's state machine. Identity (CA,
//! certificates, join tokens), the Node authorizer, gossip and agents' mirrors follow, each in
//! a room of its own.
//!
//! Invariant: consensus is openraft's job; this module only adapts the store's state machine
//! and a transport to it. Boundary: the rest of the daemon sees a `store::Proposer` and the
//! leader's term (a task set), never Raft itself.

pub mod identity;
pub mod raft;
