//! `skerryd`: the Skerry node daemon, as a library (`main.rs` only parses flags and runs it).
//!
//! # Layout
//! - [`objects`]: typed resources, validation, defaulting, selectors, patches (pure).
//! - [`store`]: SQLite state, revisions, the one `apply(command)` write path, watches.
//! - [`api`]: the HTTP/JSON API on the Unix socket; tables and describe rendered here; Service
//!   address allocation.
//! - [`controllers`]: level-triggered reconcilers (pod binding, namespaces, endpoints).
//! - [`agent`]: runs the pods bound to this node: sandbox, network, containers, restarts, status.
//! - [`node_ops`]: what the API asks of a node (logs, exec, images, metrics), as a trait the
//!   agent implements; neither side imports the other.
//! - [`runtime`]: the containerd client; the only module that speaks containerd's gRPC.
//! - [`scheduler`]: pod placement over many nodes, a pure function of nodes and pods.
//! - [`net`]: CNI invocation, Skerry's nftables table (hostPorts, the Service proxy), cluster DNS.
//! - [`events`]: `Event` objects, folded and written in the background.
//! - [`config`]: flags and `/etc/skerry/config.yaml`.
//! - [`clock`]: wall-clock time behind a trait, so the agent's decisions run on a paused clock
//!   in tests.
//! - [`daemon`]: wires the parts together and owns start-up and shutdown.

pub mod agent;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod controllers;
pub mod daemon;
pub mod events;
pub mod net;
pub mod node_ops;
pub mod objects;
pub mod runtime;
pub mod scheduler;
pub mod store;
