//! The HTTP/JSON API on the Unix socket.
//!
//! Owns the wire format: Kubernetes-shaped paths and objects, `Status` errors, server-side
//! tables and `describe`, watch streams, and Skerry's own endpoints (`/skerry/v1/...`: discovery,
//! images, node info). A write is parsed, validated and defaulted here (through `objects`) and
//! becomes a [`crate::store::Command`].
//!
//! Invariant: a rejected request changes nothing; every error is a `Status` with an HTTP code.
//! Boundary: never touches containerd or the kernel itself — node work (logs, exec, images,
//! metrics) goes through the [`NodeOps`] handle the daemon passes in, whose [`crate::node_ops::NodeError`]s
//! `error.rs` maps to a `Status`.

mod crud;
mod describe;
mod describe_node;
mod error;
mod eviction;
mod format;
pub mod node;
mod path;
pub mod services;
mod table;
mod tokens;
mod watch;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use table::pod_status_reason;

use crate::node_ops::NodeOps;
use crate::store::{Proposer, Store};

/// What every handler may use.
#[derive(Clone)]
pub struct ApiState {
    /// Reads: the local replica.
    pub store: Store,
    /// Writes: every command goes through the node's proposer.
    pub proposer: Proposer,
    pub info: Arc<ServerInfo>,
    pub node: Arc<dyn NodeOps>,
    pub services: Arc<services::ServiceNet>,
    pub shutdown: CancellationToken,
}

/// Facts about this server that `version` and `cluster-info` report.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub node_name: String,
    pub socket: String,
    pub containerd_socket: String,
    pub containerd_namespace: String,
    pub data_dir: String,
    /// The hash of the cluster CA's bundle (join tokens carry it); `None` on agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_hash: Option<String>,
}

pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/version", get(node::version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/skerry/v1/resources", get(node::resources))
        .route("/skerry/v1/info", get(node::info))
        .route("/skerry/v1/images", get(node::list_images).delete(node::remove_image))
        .route("/skerry/v1/images/import", axum::routing::post(node::import_image))
        .route("/skerry/v1/images/pull", axum::routing::post(node::pull_image))
        // The resource metrics API, before the fallback (which would read it as a CRUD path).
        .route("/apis/metrics.k8s.io", axum::routing::any(node::metrics))
        .route("/apis/metrics.k8s.io/{*rest}", axum::routing::any(node::metrics))
        .fallback(crud::handle)
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` fires.
pub async fn serve(listener: tokio::net::UnixListener, state: ApiState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
