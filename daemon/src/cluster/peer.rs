//! The cluster port: HTTP/1.1 over TLS 1.3 with the cluster CA as the only root on both sides.
//! [`serve`] accepts peers and routes:
//!
//! - `GET /cacerts` and `POST /skerry/v1/join` — to anyone, with or without a certificate: a
//!   joining node has none yet (see `join`);
//! - `POST /skerry/v1/raft` — Raft's RPCs, only for a peer whose verified certificate says it is
//!   a server (an agent's gets `403`);
//! - everything else — the API, for a peer with a verified node certificate, which the API
//!   authorizes as `Principal::Node` (a peer without one gets `401`).
//!
//! A peer that presents a certificate must present a valid one of this cluster: the handshake
//! fails otherwise. [`HttpTransport`] is the client side of Raft's RPCs over pooled
//! connections. Bodies are JSON, read with a size limit before they are parsed.
//!
//! Never decides anything about Raft or the store: it carries messages.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::authz::Principal;
use super::identity::{Identity, Role};
use super::join::{self, Authority, JoinRequest};
use super::raft::network::{Reply, Rpc, Transport, TransportError};
use super::raft::{Member, NodeId, Server};
use super::renew::{sign_renewal, Live, RenewRequest, RENEW_PATH};
use crate::store::BoxFuture;

/// The path of Raft's RPCs.
pub const RAFT_PATH: &str = "/skerry/v1/raft";

/// The largest RPC body a server reads (snapshot chunks are far smaller).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cluster TLS: {0}")]
    Tls(#[from] super::identity::IdentityError),
    #[error("cluster port: {0}")]
    Io(#[from] std::io::Error),
}

/// What the cluster port serves.
#[derive(Clone)]
pub struct Port {
    /// `None` on agents.
    pub raft: Option<Server>,
    /// Signs joining nodes in (servers have the CA).
    pub authority: Option<Arc<Authority>>,
    /// The API, as on the Unix socket; `None`: not served here.
    pub api: Option<Router>,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    identity: Option<Identity>,
}

/// Serves peers on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    credentials: &Arc<Live>,
    port: Port,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(credentials.port_config()?));
    let app = app(port);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, from) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a peer failed");
                    continue;
                }
            },
        };
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), shutdown.clone());
        connections.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(acceptor, tcp, from, app) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    Ok(())
}

fn app(port: Port) -> Router {
    let mut app = Router::new()
        .route(join::CACERTS_PATH, get(cacerts))
        .route(join::JOIN_PATH, post(join_node))
        .route(RAFT_PATH, post(raft_rpc))
        .route(RENEW_PATH, post(renew_cert))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(port.clone());
    if let Some(api) = port.api {
        app = app.fallback_service(api.layer(axum::middleware::from_fn(node_principal)));
    }
    app
}

async fn connection(acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, from: SocketAddr, app: Router) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            let why = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).map(super::identity::explain);
            tracing::warn!(peer = %from, error = why.unwrap_or_else(|| e.to_string()), "refused a peer at the TLS handshake");
            return;
        }
    };
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Identity::from_cert(c)) {
        Some(Ok(identity)) => Some(identity),
        Some(Err(e)) => {
            tracing::warn!(peer = %from, error = %e, "refused a peer whose certificate names no node");
            return;
        }
        None => None,
    };
    let app = app.layer(Extension(Peer { addr: from, identity }));
    let service = hyper_util::service::TowerToHyperService::new(app);
    if let Err(e) =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).with_upgrades().await
    {
        tracing::debug!(peer = %from, error = %e, "peer connection ended");
    }
}

fn plain(code: StatusCode, text: &str) -> AxumResponse {
    (code, format!("{text}\n")).into_response()
}

fn status(code: StatusCode, message: &str) -> AxumResponse {
    let reason = code.canonical_reason().unwrap_or("").replace(' ', "");
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

async fn cacerts(State(port): State<Port>) -> AxumResponse {
    match &port.authority {
        Some(a) => a.ca.bundle_pem().to_string().into_response(),
        None => plain(StatusCode::NOT_FOUND, "this node is not a server; join through a server"),
    }
}

async fn join_node(State(port): State<Port>, Extension(peer): Extension<Peer>, body: Bytes) -> AxumResponse {
    let Some(authority) = &port.authority else {
        return status(StatusCode::NOT_FOUND, "this node is not a server; join through a server");
    };
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, &format!("not a join request: {e}")),
    };
    let (name, token) = (req.node_name.clone(), req.token_id.clone());
    match authority.join(peer.addr.ip(), req, jiff::Timestamp::now()).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(refusal) => {
            tracing::warn!(peer = %peer.addr, node = name, token, reason = %refusal, "refused a join");
            status(StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN), &refusal.to_string())
        }
    }
}

async fn renew_cert(State(port): State<Port>, Extension(peer): Extension<Peer>, body: Bytes) -> AxumResponse {
    let Some(authority) = &port.authority else {
        return status(StatusCode::NOT_FOUND, "this node is not a server; renew through a server");
    };
    let Some(identity) = &peer.identity else {
        return status(StatusCode::UNAUTHORIZED, "renewing needs the node's current certificate");
    };
    let req: RenewRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, &format!("not a renewal request: {e}")),
    };
    match sign_renewal(&authority.ca, identity, peer.addr.ip(), &req, jiff::Timestamp::now()) {
        Ok(reply) => {
            tracing::info!(node = identity.node_name, "renewed a node's certificate");
            axum::Json(reply).into_response()
        }
        Err(e) => status(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn raft_rpc(State(port): State<Port>, Extension(peer): Extension<Peer>, body: Bytes) -> AxumResponse {
    match &peer.identity {
        Some(identity) if identity.role == Role::Server => {}
        Some(identity) => {
            return plain(StatusCode::FORBIDDEN, &format!("{identity} may not take part in Raft: only servers may"))
        }
        None => return plain(StatusCode::UNAUTHORIZED, "Raft needs a server's certificate"),
    }
    let rpc: Rpc = match serde_json::from_slice(&body) {
        Ok(rpc) => rpc,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("not a Raft message: {e}")),
    };
    let Some(raft) = &port.raft else {
        return plain(StatusCode::NOT_FOUND, "this node is an agent: it takes no part in Raft");
    };
    let reply = raft.serve(rpc).await;
    match serde_json::to_vec(&reply) {
        Ok(json) => ([(hyper::header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding the reply: {e}")),
    }
}

/// The API on the cluster port is for nodes: their certificate is who they are.
async fn node_principal(mut req: axum::extract::Request, next: axum::middleware::Next) -> AxumResponse {
    let identity = req.extensions().get::<Peer>().and_then(|p| p.identity.clone());
    match identity {
        Some(identity) => {
            req.extensions_mut().insert(Principal::Node(identity));
            next.run(req).await
        }
        None => status(
            StatusCode::UNAUTHORIZED,
            "the API on the cluster port needs a node certificate; use skerry on a server's socket",
        ),
    }
}

/// An HTTPS client with `config` (pooled connections, HTTP/1.1 only).
pub fn client(config: rustls::ClientConfig) -> Client {
    client_with(config, None)
}

/// [`client`] whose TCP connects give up after `connect_timeout` (a peer that is down or cut
/// off answers nothing), with keep-alive probes on its connections.
pub fn client_with(config: rustls::ClientConfig, connect_timeout: Option<std::time::Duration>) -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(connect_timeout);
    http.set_keepalive(Some(std::time::Duration::from_secs(30)));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build(connector)
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Raft's messages to peers over mutual TLS; connections are pooled and reused.
pub struct HttpTransport {
    client: Client,
}

impl HttpTransport {
    pub fn new(credentials: &Arc<Live>) -> Result<HttpTransport, PeerError> {
        Ok(HttpTransport { client: client(credentials.client_config()?) })
    }

    async fn call(&self, target: NodeId, member: &Member, rpc: Rpc) -> Result<Reply, TransportError> {
        let body = serde_json::to_vec(&rpc).map_err(|e| TransportError::Network(target, e.to_string()))?;
        let req = Request::post(format!("https://{}{RAFT_PATH}", member.addr))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TransportError::Network(target, e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| {
            let why = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
            if e.is_connect() {
                TransportError::Unreachable(target, why)
            } else {
                TransportError::Network(target, why)
            }
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| TransportError::Network(target, e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            return Err(TransportError::Unreachable(target, format!("{status}: {text}")));
        }
        serde_json::from_slice(&body).map_err(|e| TransportError::Network(target, format!("not a Raft reply: {e}")))
    }
}

impl Transport for HttpTransport {
    fn send(&self, target: NodeId, member: &Member, rpc: Rpc) -> BoxFuture<'_, Result<Reply, TransportError>> {
        let member = member.clone();
        Box::pin(async move { self.call(target, &member, rpc).await })
    }
}

#[cfg(test)]
mod tests;
