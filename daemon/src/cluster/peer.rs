//! The cluster port between servers: HTTP/1.1 over mutual TLS 1.3 (the cluster CA the only
//! root on both sides). [`serve`] accepts peers and answers Raft's RPCs at `POST
//! /skerry/v1/raft` — only for a peer whose verified certificate says it is a server; an agent's
//! certificate gets `403`. [`HttpTransport`] is the matching client: Raft's [`Transport`] over
//! pooled connections. Bodies are JSON, read with a size limit before they are parsed.
//!
//! Never decides anything about Raft or the store: it carries messages.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::identity::{Credentials, Identity, Role};
use super::raft::network::{Reply, Rpc, Transport, TransportError};
use super::raft::{Member, NodeId, Server};
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

/// Serves peers on `listener` until `shutdown`: each connection's TLS handshake must present a
/// certificate of this cluster; Raft's RPCs go to `raft`.
pub async fn serve(
    listener: TcpListener,
    credentials: &Credentials,
    raft: Server,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(credentials.server_config()?));
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
        let (acceptor, raft, stop) = (acceptor.clone(), raft.clone(), shutdown.clone());
        connections.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(acceptor, tcp, from, raft) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    Ok(())
}

async fn connection(acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, from: SocketAddr, raft: Server) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            let why = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).map(super::identity::explain);
            tracing::warn!(peer = %from, error = why.unwrap_or_else(|| e.to_string()), "refused a peer at the TLS handshake");
            return;
        }
    };
    let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Identity::from_cert(c));
    let peer = match peer {
        Some(Ok(identity)) => identity,
        Some(Err(e)) => {
            tracing::warn!(peer = %from, error = %e, "refused a peer whose certificate names no node");
            return;
        }
        None => return,
    };
    let service = hyper::service::service_fn(move |req| {
        let (raft, peer) = (raft.clone(), peer.clone());
        async move { Ok::<_, std::convert::Infallible>(route(req, &peer, &raft).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(peer = %from, error = %e, "peer connection ended");
    }
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = code;
    resp
}

async fn route(req: Request<hyper::body::Incoming>, peer: &Identity, raft: &Server) -> Response<Full<Bytes>> {
    if req.method() != Method::POST || req.uri().path() != RAFT_PATH {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if peer.role != Role::Server {
        return plain(StatusCode::FORBIDDEN, &format!("{peer} may not take part in Raft: only servers may"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("reading the request: {e}")),
    };
    let rpc: Rpc = match serde_json::from_slice(&body) {
        Ok(rpc) => rpc,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("not a Raft message: {e}")),
    };
    let reply = raft.serve(rpc).await;
    match serde_json::to_vec(&reply) {
        Ok(json) => {
            let mut resp = Response::new(Full::new(Bytes::from(json)));
            resp.headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding the reply: {e}")),
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Raft's messages to peers over mutual TLS; connections are pooled and reused.
pub struct HttpTransport {
    client: Client,
}

impl HttpTransport {
    pub fn new(credentials: &Credentials) -> Result<HttpTransport, PeerError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(credentials.client_config()?)
            .https_only()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector);
        Ok(HttpTransport { client })
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
