//! The HTTP/JSON API, on the Unix socket (as the admin) and, for peers, on the cluster port.
//!
//! Owns the wire format: Kubernetes-shaped paths and objects, `Status` errors, server-side
//! tables and `describe`, watch streams, and Skerry's own endpoints (`/skerry/v1/...`: discovery,
//! images, node info). A write is parsed, validated and defaulted here (through `objects`) and
//! becomes a [`crate::store::Command`].
//!
//! Every request is authorized by its caller's [`Principal`] (`access.rs`) before any handler
//! runs; `/skerry/v1/propose` (`propose.rs`) takes one store command from a node that writes
//! through a server.
//!
//! Invariant: a rejected request changes nothing; every error is a `Status` with an HTTP code;
//! no request without a principal reaches a handler.
//! Boundary: never touches containerd or the kernel itself — node work (logs, exec, images,
//! metrics) goes through the [`NodeOps`] handle the daemon passes in, whose [`crate::node_ops::NodeError`]s
//! `error.rs` maps to a `Status`; for a pod on another node it goes to that node's cluster port
//! (`relay`).

mod access;
mod crud;
mod describe;
mod describe_node;
mod error;
mod eviction;
mod format;
pub mod node;
mod path;
mod propose;
pub mod relay;
pub mod services;
mod table;
mod tokens;
mod watch;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio_util::sync::CancellationToken;

pub use access::PROPOSE_PATH;
pub use error::ApiError;
pub use table::pod_status_reason;

use crate::cluster::authz::Principal;
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
    /// Reaches the other nodes' cluster ports, for pods that run there (see `relay`); `None`:
    /// every request is served here (single-process tests).
    pub peers: Option<Arc<relay::Peers>>,
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
    /// On an agent, the servers it writes through (`https://ip:port`); empty on a server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The API, for any listener. Every request must carry its caller's [`Principal`] as a request
/// extension (the listener attaches it: [`serve`] the admin, the cluster port a peer's
/// identity); the router authorizes each request by it before any handler runs and refuses a
/// request without one.
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
        .route(PROPOSE_PATH, post(propose::propose))
        .fallback(crud::handle)
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::authorize))
        .with_state(state)
}

/// Serves the API on the Unix socket `listener` until `shutdown` fires. Whoever reaches the
/// socket (root and the `skerry` group) is the cluster admin.
/// An agent's socket serves what its mirror holds and its own node's work (logs, exec,
/// images); changes to the cluster are made on a server.
async fn agent_socket(
    node: String,
    servers: Vec<String>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    let node_local = path.starts_with("/skerry/v1/images") || path.ends_with("/exec");
    if req.method() == axum::http::Method::GET || node_local {
        return next.run(req).await;
    }
    let message = format!(
        "{node} is an agent: its socket reads from the node's local mirror and takes no changes; \
         make changes with skerry on a server (servers: {})",
        servers.join(", ")
    );
    axum::response::IntoResponse::into_response(ApiError::forbidden(message))
}

pub async fn serve(listener: tokio::net::UnixListener, state: ApiState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let servers = state.info.servers.clone();
    let app = if servers.is_empty() {
        router(state).layer(Extension(Principal::Admin))
    } else {
        let node = state.info.node_name.clone();
        router(state)
            .layer(axum::middleware::from_fn(move |req, next| agent_socket(node.clone(), servers.clone(), req, next)))
            .layer(Extension(Principal::Admin))
    };
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
