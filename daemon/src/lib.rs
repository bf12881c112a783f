//! skerryd: the Skerry node daemon as a library.
//!
//! # Layout
//! - [`runtime`]: the containerd client (images, containers, tasks, exec, logs).

pub mod runtime;
