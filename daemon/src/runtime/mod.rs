//! The containerd client: images, containers, tasks, exec and container logs.
//!
//! This module owns everything Skerry asks of containerd: importing image
//! archives and pulling from registries (content store, snapshots, unpacking),
//! creating one containerd container + task per pod container, waiting, killing,
//! exec with FIFOs and a TTY, and the CRI-format log files written by the
//! `skerry-logger` binary that the shim spawns.
//!
//! Invariants: it is the only module that speaks containerd's gRPC API, and it
//! never shells out (`ctr` and friends are not used). Every request carries the
//! runtime's containerd namespace; content and snapshots are written under a
//! lease and labelled so that containerd's garbage collector keeps exactly what
//! images and containers reference. Container output never flows through
//! skerryd: the shim hands it to `skerry-logger`, so logs survive restarts.
//!
//! Boundary: callers use [`ContainerdRuntime`] (or the object-safe [`Runtime`] trait it
//! implements, so agent logic can run against `fake::FakeRuntime`, a recording fake for unit
//! tests) and the data types below;
//! [`spec::build_spec`], [`spec::merge_command`] and [`spec::merge_env`] are pure
//! helpers for building the OCI spec; [`logger`] reads CRI log files back.
//! Pod semantics (restarts, probes, volumes, networking) belong to the agent.

mod archive;
mod containers;
mod content;
mod exec;
#[cfg(test)]
pub mod fake;
mod images;
pub mod logger;
mod pull;
mod reference;
pub mod spec;
mod traits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::version_client::VersionClient;
use tonic::transport::Channel;
use tonic::Request;

pub use containers::default_logger_path;
pub use exec::{clear_fifo_dir, ExecControl, ExecSession};
pub use reference::normalize_image_name;
pub use spec::{build_spec, merge_command, merge_env, BindMount, SpecInput};
pub use traits::Runtime;

/// Everything that can go wrong talking to containerd or handling images.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {0} is not present; import it with `skerry image import FILE` or pull it")]
    ImageNotFound(String),
    #[error("container {0} does not exist in containerd; it may have been removed already")]
    ContainerNotFound(String),
    #[error("pulling {reference} failed: {reason}")]
    Pull { reference: String, reason: String },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{path}: {reason}")]
    InvalidArchive { path: PathBuf, reason: String },
    #[error("image {image} is unusable: {reason}")]
    InvalidImage { image: String, reason: String },
    #[error(
        "no command specified; set command or args in the container spec, or use an image with an Entrypoint or Cmd"
    )]
    NoCommand,
    #[error("cannot connect to containerd at {path}: {reason}; is containerd running?")]
    Connect { path: PathBuf, reason: String },
    #[error("containerd {op} failed: {message}")]
    Containerd { op: &'static str, code: tonic::Code, message: String },
    #[error("logger binary {0} not found; install skerry-logger next to skerryd or set SKERRY_LOGGER")]
    LoggerMissing(PathBuf),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl RuntimeError {
    /// True for a missing image or container.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::ImageNotFound(_) | RuntimeError::ContainerNotFound(_))
    }

    pub(crate) fn grpc(op: &'static str, status: tonic::Status) -> Self {
        RuntimeError::Containerd { op, code: status.code(), message: status.message().to_string() }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io { context: context.into(), source }
    }
}

/// An image known to containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalized name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the image's target (its manifest).
    pub digest: String,
    /// Sum of the stored blob sizes (manifest, config, compressed layers).
    pub size: u64,
    /// The config's `created` time, if it has one.
    pub created: Option<jiff::Timestamp>,
}

/// The parts of an image config the agent needs to start a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The config blob's digest (what Docker calls the image ID).
    pub image_id: String,
}

/// Progress of one layer during a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullProgress {
    /// Layer digest.
    pub layer: String,
    pub current: u64,
    pub total: u64,
    /// `downloading`, `exists`, `done`, `unpacking`.
    pub status: String,
}

/// What to run as one containerd container + task.
#[derive(Clone, Debug)]
pub struct ContainerRun {
    /// containerd container ID; also the snapshot key.
    pub id: String,
    /// Image name (normalized or not).
    pub image: String,
    /// The OCI runtime spec (see [`spec::build_spec`]).
    pub spec: serde_json::Value,
    pub labels: HashMap<String, String>,
    /// CRI-format log file that `skerry-logger` appends to.
    pub log_path: PathBuf,
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status as containerd reports it (128 + n when killed by signal n).
    pub code: i32,
    /// The signal that killed the process, inferred from `code > 128`.
    pub signal: Option<i32>,
    pub exited_at: jiff::Timestamp,
}

impl Exit {
    pub(crate) fn from_status(status: u32, at: Option<prost_types::Timestamp>) -> Exit {
        let code = status as i32;
        let signal = (code > 128 && code < 128 + 65).then_some(code - 128);
        let exited_at =
            at.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok()).unwrap_or_else(jiff::Timestamp::now);
        Exit { code, signal, exited_at }
    }
}

/// The state of a container's task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// The container exists but has no task, or the task is created and not started.
    Created,
    Running {
        pid: u32,
    },
    Exited(Exit),
}

/// A container as listed from containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub labels: HashMap<String, String>,
}

/// A process to run inside a running container.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// `KEY=value` entries added to (and overriding) the container's env.
    pub env: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub cwd: Option<String>,
}

/// Client for one containerd namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ContainerdRuntime {
    channel: Channel,
    namespace: String,
    snapshotter: String,
    logger: Option<PathBuf>,
    /// Where exec FIFOs go (see [`ContainerdRuntime::with_fifo_dir`]).
    fifo_dir: Option<PathBuf>,
}

impl ContainerdRuntime {
    /// Connects to containerd's socket. The channel reconnects by itself if
    /// containerd restarts.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, RuntimeError> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| RuntimeError::Connect { path: socket.to_path_buf(), reason: error_chain(&e) })?;
        Ok(ContainerdRuntime {
            channel,
            namespace: namespace.to_string(),
            snapshotter: "overlayfs".into(),
            logger: None,
            fifo_dir: None,
        })
    }

    /// The namespace every request uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's version string, e.g. `1.6.20`.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let resp = VersionClient::new(self.channel.clone())
            .version(Request::new(()))
            .await
            .map_err(|s| RuntimeError::grpc("version", s))?;
        Ok(resp.into_inner().version)
    }

    /// A request in our namespace.
    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", v);
        }
        req
    }

    /// A request in our namespace, under a lease.
    pub(crate) fn req_leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut req = self.req(msg);
        if let Ok(v) = lease.parse() {
            req.metadata_mut().insert("containerd-lease", v);
        }
        req
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// Formats an error with its sources, for messages that must say why.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_infers_signal() {
        assert_eq!(Exit::from_status(137, None).signal, Some(9));
        assert_eq!(Exit::from_status(3, None).signal, None);
        assert_eq!(Exit::from_status(128, None).signal, None);
    }
}
