//! What the API asks of a node: container logs, exec, images and resource metrics.
//!
//! [`NodeOps`] is the seam between the API and the machinery of the node that runs a pod: the
//! agent implements it ([`crate::agent::Node`]) over containerd and its log files; the API
//! holds it as a trait object. Neither side imports the other, so a later implementation can
//! reach the pod's node over the network instead.
//!
//! Invariant: no HTTP here — operations fail with a [`NodeError`] that says what kind of
//! failure it is (the API maps it to a Kubernetes `Status`); streams are plain bytes and
//! tokio reader/writers. Boundary: types and the trait only, no implementation.

use std::path::PathBuf;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

pub use futures::future::BoxFuture;

/// Why a node operation failed. The message is what a person reads; the variant is what kind
/// of failure it is, for the caller's status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The image, container or log asked for is not there.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served as asked (a bad archive or reference, no such log run).
    #[error("{0}")]
    BadRequest(String),
    /// The node's runtime cannot be reached right now.
    #[error("{0}")]
    Unavailable(String),
    /// The node's disk is full.
    #[error("{0}")]
    InsufficientStorage(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// Options of a log request.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// A running exec: the streams of the process and a way to resize its terminal and wait.
pub struct ExecStreams {
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub resize: Box<dyn Fn(u16, u16) -> BoxFuture<'static, ()> + Send + Sync>,
    /// Closes the process's stdin once the client's input ended (after `stdin` is dropped).
    pub close_stdin: Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
    pub wait: BoxFuture<'static, Result<i32, NodeError>>,
}

/// The node's side of the API: what needs containerd or the agent's files.
pub trait NodeOps: Send + Sync + 'static {
    fn containerd_version(&self) -> BoxFuture<'_, Result<String, NodeError>>;
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<Value>, NodeError>>;
    fn remove_image(&self, name: String) -> BoxFuture<'_, Result<(), NodeError>>;
    fn import_image(&self, file: PathBuf) -> BoxFuture<'_, Result<Vec<Value>, NodeError>>;
    /// Pulls an image; progress lines (`{"progress": ...}`) go to `progress`.
    fn pull_image(
        &self,
        image: String,
        auth: Option<(String, String)>,
        progress: tokio::sync::mpsc::UnboundedSender<Value>,
    ) -> BoxFuture<'_, Result<Value, NodeError>>;
    fn logs(&self, pod: Value, options: LogOptions) -> BoxFuture<'_, Result<BoxStream<'static, Bytes>, NodeError>>;
    fn exec(
        &self,
        pod: Value,
        container: String,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> BoxFuture<'_, Result<ExecStreams, NodeError>>;
    /// What the running containers of each pod used lately; `None` for a pod that is not running
    /// here or has not been sampled yet (metrics-server leaves such pods out).
    fn pod_metrics(&self, pods: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<PodUsage>>, NodeError>>;
    /// What the node used lately; `None` before it could be sampled.
    fn node_metrics(&self) -> BoxFuture<'_, Result<Option<NodeUsage>, NodeError>>;
    /// The node's CPUs and memory.
    fn node_capacity(&self) -> BoxFuture<'_, Result<Capacity, NodeError>>;
}

/// What a container (or the node) used over a window: CPU as a rate, memory as the working set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// The usage of a pod's running containers, by container name.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub containers: Vec<(String, Usage)>,
    /// When the usage was read (the end of the window).
    pub timestamp: jiff::Timestamp,
    pub window: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub usage: Usage,
    pub timestamp: jiff::Timestamp,
    pub window: std::time::Duration,
}

/// The node's capacity (Skerry reserves nothing, so this is also what is allocatable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cpus: u64,
    pub memory_bytes: u64,
}
