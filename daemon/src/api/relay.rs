//! The relay: a request about a pod that runs on another node (its logs, an exec into it, its
//! metrics) or about another node's metrics is sent on to that node's cluster port — the
//! `InternalIP` and `daemonEndpoints.kubeletEndpoint.Port` of its Node object — as the same
//! Kubernetes path, over mutual TLS with this node's certificate, and the answer comes back
//! unchanged: log streams stream, an exec's upgraded connection is spliced byte for byte both
//! ways until the pod's node closes it.
//!
//! A relayed request carries [`RELAYED_HEADER`] and is always served where it arrives, so a
//! request is relayed at most once whatever the replicas say. A node that cannot be reached
//! is a `503` that names it and its address, within [`CONNECT_TIMEOUT`] (nothing answers a
//! node that is down or cut off) or [`ANSWER_TIMEOUT`] (one that accepts but never answers).
//!
//! Never decides what a node does with the request: the node that runs the pod validates and
//! answers it; the relay only finds the node and carries bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::cluster::identity::IdentityError;
use crate::cluster::peer::Client;
use crate::cluster::renew::Live;
use crate::objects::resource;

use super::error::ApiError;
use super::ApiState;

/// The marker of a relayed request: it is served where it arrives, never relayed again.
pub const RELAYED_HEADER: HeaderName = HeaderName::from_static("x-skerry-relayed");

/// The cluster port a Node that names none is taken to serve on.
pub const DEFAULT_PORT: u16 = 6443;

/// How long a TCP connect to a peer may take: a node that is down or cut off answers nothing.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer may take, once connected, to answer a request's headers (the TLS handshake
/// included; a log stream's body or an exec session may then last as long as it lasts).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest answer read whole (a metrics list or an error `Status`); streams are not read whole.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What the API needs to reach the other nodes: this node's name and a mutual-TLS client that
/// presents its certificate (renewed certificates included) and trusts only the cluster CA.
pub struct Peers {
    pub node_name: String,
    client: Client,
}

impl Peers {
    pub fn new(node_name: String, credentials: &Arc<Live>) -> Result<Peers, IdentityError> {
        let client = crate::cluster::peer::client_with(credentials.client_config()?, Some(CONNECT_TIMEOUT));
        Ok(Peers { node_name, client })
    }
}

impl Peers {
    /// Whether `node`'s cluster port answers `GET /healthz` with `200` within `within`.
    pub async fn answers(&self, node: &Value, within: Duration) -> bool {
        let Ok(addr) = endpoint(node) else { return false };
        let Ok(uri) = format!("https://{addr}/healthz").parse::<hyper::Uri>() else { return false };
        let mut req = hyper::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        req.headers_mut().insert(RELAYED_HEADER, HeaderValue::from_static("1"));
        matches!(tokio::time::timeout(within, self.client.request(req)).await, Ok(Ok(resp)) if resp.status().is_success())
    }
}

impl crate::controllers::nodelifecycle::Probe for Peers {
    fn reachable<'a>(&'a self, node: &'a Value) -> crate::store::BoxFuture<'a, bool> {
        Box::pin(self.answers(node, crate::controllers::nodelifecycle::PROBE_TIMEOUT))
    }
}

/// Whether `headers` mark a request that a peer relayed here.
pub fn is_relayed(headers: &HeaderMap) -> bool {
    headers.contains_key(RELAYED_HEADER)
}

/// The node a request must go on to: `bound_to` when that is another node than `me` and the
/// request was not relayed already; `None` to serve it here.
pub fn destination<'a>(me: &str, relayed: bool, bound_to: Option<&'a str>) -> Option<&'a str> {
    bound_to.filter(|node| !node.is_empty() && *node != me && !relayed)
}

/// Where `pod`'s node serves, when a request about it must be relayed from this node.
pub fn for_pod<'a>(st: &'a ApiState, headers: &HeaderMap, pod: &'a Value) -> Option<(&'a Peers, &'a str)> {
    let peers = st.peers.as_deref()?;
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    destination(&peers.node_name, is_relayed(headers), node).map(|n| (peers, n))
}

/// The cluster port of a Node: its first `InternalIP` and its `kubeletEndpoint` port.
pub fn endpoint(node: &Value) -> Result<SocketAddr, String> {
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let ip = crate::objects::node::address(node, "InternalIP")
        .ok_or_else(|| format!("node {name:?} reports no InternalIP address"))?;
    let ip: IpAddr =
        ip.parse().map_err(|_| format!("node {name:?} reports the InternalIP {ip:?}, which is not an IP address"))?;
    let port = match node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port") {
        None | Some(Value::Null) => DEFAULT_PORT,
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("node {name:?} reports the port {p}, which is not a port"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn unreachable(node: &str, addr: Option<SocketAddr>, why: &str) -> ApiError {
    let at = addr.map(|a| format!(" ({a})")).unwrap_or_default();
    ApiError::unavailable(format!("unable to reach node {node:?}{at}: {why}; the node may be down"))
}

/// Sends `method path` (with `headers`) to `node`'s cluster port and waits for the answer's
/// headers. Every failure to get an answer is a `503` naming the node.
async fn send(
    st: &ApiState,
    peers: &Peers,
    node: &str,
    method: Method,
    path: &str,
    headers: HeaderMap,
) -> Result<hyper::Response<Incoming>, ApiError> {
    let obj = st
        .store
        .get(&resource::NODES.key(), "", node)
        .await?
        .ok_or_else(|| unreachable(node, None, "there is no such Node (deleted, or not registered yet)"))?;
    let addr = endpoint(&obj).map_err(|why| unreachable(node, None, &why))?;
    let uri = format!("https://{addr}{path}");
    let mut req = hyper::Request::new(Full::new(Bytes::new()));
    *req.method_mut() = method;
    *req.uri_mut() = uri.parse().map_err(|e| ApiError::bad_request(format!("cannot relay {path:?}: {e}")))?;
    *req.headers_mut() = headers;
    req.headers_mut().insert(RELAYED_HEADER, HeaderValue::from_static("1"));
    match tokio::time::timeout(ANSWER_TIMEOUT, peers.client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            // The innermost cause says what happened (refused, timed out, a certificate refused).
            let mut why: &dyn std::error::Error = &e;
            while let Some(source) = why.source() {
                why = source;
            }
            let why = if e.is_connect() { format!("cannot connect: {why}") } else { why.to_string() };
            Err(unreachable(node, Some(addr), &why))
        }
        Err(_) => Err(unreachable(node, Some(addr), &format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()))),
    }
}

/// The request headers that travel with a relayed request (nothing hop-by-hop but an upgrade).
fn forwarded(headers: &HeaderMap, upgrade: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::ACCEPT, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    if upgrade {
        if let Some(v) = headers.get(header::UPGRADE) {
            out.insert(header::UPGRADE, v.clone());
            out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
    }
    out
}

/// The answer's status and the headers that describe its body, with `body`.
fn answer(from: &hyper::Response<Incoming>, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = from.status();
    *resp.headers_mut() = answer_headers(from.headers());
    resp
}

fn answer_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::WARNING] {
        for v in from.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Relays a plain request (logs, one pod's or node's metrics) and streams the answer back as
/// it comes (a followed log included), until the peer ends it or this daemon shuts down.
pub async fn stream(
    st: &ApiState,
    peers: &Peers,
    node: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let resp = send(st, peers, node, method, path, forwarded(headers, false)).await?;
    let shutdown = st.shutdown.clone();
    let head = answer(&resp, Body::empty());
    let chunks = resp.into_body().into_data_stream().take_until(Box::pin(async move { shutdown.cancelled().await }));
    let (parts, _) = head.into_parts();
    Ok(Response::from_parts(parts, Body::from_stream(chunks)))
}

/// GETs `path` from `node` as JSON: `Some` on success, `None` when the node has no such thing
/// (`404`), an error naming the node otherwise.
pub async fn get_json(st: &ApiState, peers: &Peers, node: &str, path: &str) -> Result<Option<Value>, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let resp = send(st, peers, node, Method::GET, path, headers).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| unreachable(node, None, &format!("its answer broke off: {e}")))?
        .to_bytes();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            format!("node {node:?} answered {status} with no JSON: {e}"),
        )
    })?;
    if !status.is_success() {
        let message = value["message"].as_str().unwrap_or("no message");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            format!("node {node:?} answered {status}: {message}"),
        ));
    }
    Ok(Some(value))
}

/// Relays an exec: the peer's `101 Switching Protocols` becomes this answer, and once both
/// sides have upgraded the bytes (`skerry-exec/1` frames, exit code included) are copied both
/// ways. The session ends when the pod's node closes its side (after the exit frame); the
/// caller's end of input is passed on as a half-close. Any other answer (an error `Status`)
/// comes back as it is.
pub async fn exec(st: &ApiState, peers: &Peers, node: &str, mut req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let headers = forwarded(req.headers(), true);
    let mut resp = send(st, peers, node, Method::POST, &path, headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let body = Limited::new(resp.body_mut(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| unreachable(node, None, &format!("its answer broke off: {e}")))?;
        return Ok(answer(&resp, Body::from(body)));
    }
    let peer_side = hyper::upgrade::on(&mut resp);
    let caller_side = hyper::upgrade::on(&mut req);
    let (node, shutdown) = (node.to_string(), st.shutdown.clone());
    tokio::spawn(async move {
        let (caller, peer) = match tokio::try_join!(caller_side, peer_side) {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!(node, error = %e, "a relayed exec could not upgrade");
                return;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = splice(TokioIo::new(caller), TokioIo::new(peer)) => {
                if let Err(e) = r {
                    tracing::debug!(node, error = %e, "a relayed exec ended");
                }
            }
        }
    });
    let mut out = answer(&resp, Body::empty());
    for name in [header::CONNECTION, header::UPGRADE] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    Ok(out)
}

/// Copies `peer` to `caller` and `caller` to `peer` until `peer` has nothing more to say. The
/// end of either's output is passed on as a half-close; the caller's input ending does not end
/// the session (the process may still be writing).
pub async fn splice<C, P>(caller: C, peer: P) -> std::io::Result<()>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    P: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut caller_rd, mut caller_wr) = tokio::io::split(caller);
    let (mut peer_rd, mut peer_wr) = tokio::io::split(peer);
    let down = async {
        tokio::io::copy(&mut peer_rd, &mut caller_wr).await?;
        caller_wr.shutdown().await
    };
    let up = async {
        let _ = tokio::io::copy(&mut caller_rd, &mut peer_wr).await;
        let _ = peer_wr.shutdown().await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = down => r,
        _ = up => Ok(()),
    }
}

#[cfg(test)]
mod tests;
