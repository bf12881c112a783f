//! `skerryd`: the Skerry node daemon, as a library.
//!
//! # Layout
//! - [`objects`]: typed resources, validation, defaulting, selectors (pure).
//! - [`store`]: SQLite state, revisions, the one `apply(command)` write path, watches.
//! - [`api`]: the HTTP/JSON API on the Unix socket; tables and describe rendered here.
//! - [`controllers`]: level-triggered reconcilers (namespace lifecycle, pod binding).
//! - [`agent`]: runs the pods bound to this node: sandbox, containers, restarts, status.
//! - [`runtime`]: the containerd client; the only module that speaks containerd's gRPC.
//! - [`config`]: flags and `/etc/skerry/config.yaml`.
//! - [`daemon`]: wires the parts together and owns start-up and shutdown.

pub mod objects;
pub mod agent;
pub mod api;
pub mod config;
pub mod controllers;
pub mod daemon;
pub mod events;
pub mod store;
