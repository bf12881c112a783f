//! `skerry-cni`: a CNI 1.0/1.1 plugin that joins pods to a Linux bridge over veth pairs, with
//! host-local style IPAM built in.
//!
//! # Layout
//!
//! - [`config`]: the network configuration on stdin — parsing, defaults, validation (pure).
//! - [`ipam`]: address allocation over a small `Store` trait, and the file-backed,
//!   `flock`ed store in host-local's on-disk layout.
//! - [`link`]: netlink operations (rtnetlink), in the host or, from a dedicated thread that
//!   entered it, in the pod's network namespace.
//! - [`result`]: rendering of results, VERSION answers and error objects (pure).
//! - [`cmd`]: the commands — ADD, DEL, CHECK, GC, STATUS, VERSION — their order of
//!   operations, rollback and error codes.
//!
//! `main.rs` only reads the environment and stdin, calls [`cmd::run`] and prints.

pub mod cmd;
pub mod config;
pub mod ipam;
pub mod link;
pub mod result;
