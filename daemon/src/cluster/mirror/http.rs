//! An agent's two ways to the servers, over the Kubernetes API they serve on the cluster port
//! (HTTP/1.1, mutual TLS with the node's certificate, the cluster CA the only root):
//! [`HttpSource`], the mirror's [`Source`] (list, NDJSON watch, get), and [`RemoteProposer`],
//! which sends the agent's writes as [`Command`]s to `POST /skerry/v1/propose`.
//!
//! Several servers may be given: each request goes first to the one that last answered and
//! moves on to the next when a server cannot be reached or answers with a server error (5xx).
//! Every answer is read with a size limit; requests and watches have time limits, so a server
//! that stops answering is left rather than waited on for ever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;

use serde_json::Value;

use super::{Events, Listed, Source, SourceError, Stream, WatchEvent};
use crate::cluster::identity::IdentityError;
use crate::objects::resource::ResourceType;
use crate::store::{Answer, Applied, BoxFuture, Command, Propose, Rejection, StoreError};

/// The path of the propose endpoint on a server's cluster port.
pub const PROPOSE_PATH: &str = "/skerry/v1/propose";

/// The largest answer (a list, one watch event, a propose reply) read from a server.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Time limits of the requests to the servers.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Connecting (TCP and TLS) to one server.
    pub connect: Duration,
    /// A list, get or propose, from sending to the whole answer.
    pub request: Duration,
    /// How long a server keeps one watch open (`timeoutSeconds`); the watch is dropped when
    /// nothing has come for this long plus `request`.
    pub watch: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), request: Duration::from_secs(30), watch: Duration::from_secs(300) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no server address was given; name at least one, like https://10.0.0.1:6443")]
    NoServers,
    #[error("server address {0:?} is not an https:// URL; write it like https://10.0.0.1:6443")]
    BadUrl(String),
    #[error("cluster TLS: {0}")]
    Tls(#[from] IdentityError),
}

type Client = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The servers and one pooled mutual-TLS client to them.
pub struct Servers {
    urls: Vec<String>,
    /// The server that answered last: tried first.
    preferred: AtomicUsize,
    client: Client,
    timeouts: Timeouts,
}

/// How sending one request to the servers went.
enum Sent {
    /// A server answered (not with a 5xx).
    Answered(Response<Incoming>),
    /// No server could be reached or each answered 5xx: nothing was done.
    Unreached(String),
    /// The request went out and the answer was lost: it may or may not have been acted on.
    Lost(String),
}

impl Servers {
    /// `urls` like `https://10.251.0.2:6443`; `tls` is the node's client side (its certificate,
    /// the cluster CA as the only root): `renew::Live::client_config`, which follows renewals.
    pub fn new(urls: Vec<String>, tls: rustls::ClientConfig, timeouts: Timeouts) -> Result<Servers, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::NoServers);
        }
        let urls: Vec<String> = urls.into_iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        if let Some(bad) = urls.iter().find(|u| !u.starts_with("https://")) {
            return Err(ClientError::BadUrl(bad.clone()));
        }
        let client = crate::cluster::peer::client_with(tls, Some(timeouts.connect));
        Ok(Servers { urls, preferred: AtomicUsize::new(0), client, timeouts })
    }

    /// Sends `method path` (with `body`) to the servers in turn, starting with the preferred
    /// one. `resend` says whether a request whose answer was lost may go to the next server
    /// (reads) or not (writes: it may have been applied).
    async fn send(&self, method: Method, path: &str, body: Option<Bytes>, resend: bool) -> Sent {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in (0..self.urls.len()).map(|k| (first + k) % self.urls.len()) {
            let url = &self.urls[i];
            let mut req = Request::builder().method(method.clone()).uri(format!("{url}{path}"));
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = match req.body(Full::new(body.clone().unwrap_or_default())) {
                Ok(r) => r,
                Err(e) => return Sent::Unreached(format!("{url}{path} is not a valid request: {e}")),
            };
            match tokio::time::timeout(self.timeouts.request, self.client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_server_error() => {
                    let status = resp.status();
                    let message = status_message(&read_body(resp.into_body()).await.unwrap_or_default());
                    failures.push(format!("{url}: {status}: {message}"));
                }
                Ok(Ok(resp)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Sent::Answered(resp);
                }
                Ok(Err(e)) => {
                    let why = error_chain(&e);
                    if !e.is_connect() && !resend {
                        return Sent::Lost(format!("{url}: {why}"));
                    }
                    failures.push(format!("{url}: {why}"));
                }
                Err(_) => {
                    let why = format!("no answer within {:?}", self.timeouts.request);
                    if !resend {
                        return Sent::Lost(format!("{url}: {why}"));
                    }
                    failures.push(format!("{url}: {why}"));
                }
            }
        }
        Sent::Unreached(failures.join("; "))
    }

    /// A GET whose whole answer is read: `Ok((status, body))` from the server that answered.
    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), SourceError> {
        match self.send(Method::GET, path, None, true).await {
            Sent::Answered(resp) => {
                let status = resp.status();
                let body = tokio::time::timeout(self.timeouts.request, read_body(resp.into_body()))
                    .await
                    .map_err(|_| SourceError::Unreachable(format!("the answer to {path} did not finish in time")))?
                    .map_err(SourceError::Unreachable)?;
                Ok((status, body))
            }
            Sent::Unreached(why) | Sent::Lost(why) => Err(SourceError::Unreachable(why)),
        }
    }
}

/// The message of a Kubernetes `Status` body, or the body as text.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes()).map_err(|e| format!("reading the answer: {e}"))
}

/// An error with its causes, which say what actually went wrong (refused, TLS, …).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// An answer that is not 2xx as a [`SourceError`].
fn refused(status: StatusCode, body: &[u8]) -> SourceError {
    let message = status_message(body);
    if status == StatusCode::GONE {
        SourceError::Expired(message)
    } else {
        SourceError::Refused { code: status.as_u16(), message }
    }
}

/// `/api/v1` or `/apis/<group>/<version>`.
fn group_path(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        format!("/api/{}", rt.version)
    } else {
        format!("/apis/{}/{}", rt.group, rt.version)
    }
}

/// A list's items may lack `kind` and `apiVersion` (the API server leaves them out): put them
/// back, so the mirror holds whole objects.
fn complete(rt: &ResourceType, mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.entry("kind").or_insert_with(|| Value::String(rt.kind.to_string()));
        map.entry("apiVersion").or_insert_with(|| Value::String(rt.api_version()));
    }
    object
}

/// The mirror's [`Source`]: the servers' Kubernetes API.
pub struct HttpSource {
    servers: Arc<Servers>,
}

impl HttpSource {
    pub fn new(servers: Arc<Servers>) -> HttpSource {
        HttpSource { servers }
    }

    fn query(stream: &Stream, extra: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, String)> = extra.to_vec();
        if let Some(fs) = &stream.field_selector {
            pairs.push(("fieldSelector", fs.clone()));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }

    async fn list_stream(&self, stream: &Stream) -> Result<Listed, SourceError> {
        let query = HttpSource::query(stream, &[]);
        let path = format!("{}/{}?{query}", group_path(&stream.resource), stream.resource.name);
        let (status, body) = self.servers.get(&path).await?;
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        let mut list: Value = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Malformed(format!("a list of {}: {e}", stream.id)))?;
        let resource_version = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| SourceError::Malformed(format!("a list of {} without a resourceVersion", stream.id)))?;
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => return Err(SourceError::Malformed(format!("a list of {} whose items are no array", stream.id))),
        };
        let items = items.into_iter().map(|o| complete(&stream.resource, o)).collect();
        Ok(Listed { items, resource_version })
    }

    async fn watch_stream(&self, stream: &Stream, from: u64) -> Result<Events, SourceError> {
        let timeouts = &self.servers.timeouts;
        let query = HttpSource::query(
            stream,
            &[
                ("watch", "1".into()),
                ("resourceVersion", from.to_string()),
                ("allowWatchBookmarks", "false".into()),
                ("timeoutSeconds", timeouts.watch.as_secs().max(1).to_string()),
            ],
        );
        let path = format!("{}/{}?{query}", group_path(&stream.resource), stream.resource.name);
        let resp = match self.servers.send(Method::GET, &path, None, true).await {
            Sent::Answered(resp) => resp,
            Sent::Unreached(why) | Sent::Lost(why) => return Err(SourceError::Unreachable(why)),
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let body = read_body(resp.into_body()).await.unwrap_or_default();
            return Err(refused(status, &body));
        }
        Ok(watch_events(resp.into_body(), stream.resource, timeouts.watch + timeouts.request))
    }

    async fn get_object(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Option<Value>, SourceError> {
        let path = if rt.namespaced {
            format!("{}/namespaces/{namespace}/{}/{name}", group_path(rt), rt.name)
        } else {
            format!("{}/{}/{name}", group_path(rt), rt.name)
        };
        let (status, body) = self.servers.get(&path).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        let object = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Malformed(format!("{} {namespace}/{name}: {e}", rt.singular_name)))?;
        Ok(Some(complete(rt, object)))
    }
}

impl Source for HttpSource {
    fn list<'a>(&'a self, stream: &'a Stream) -> BoxFuture<'a, Result<Listed, SourceError>> {
        Box::pin(self.list_stream(stream))
    }
    fn watch<'a>(&'a self, stream: &'a Stream, from: u64) -> BoxFuture<'a, Result<Events, SourceError>> {
        Box::pin(self.watch_stream(stream, from))
    }
    fn get<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, SourceError>> {
        Box::pin(self.get_object(resource, namespace, name))
    }
}

/// A watch body — one `{"type", "object"}` JSON event per line — as [`WatchEvent`]s. Ends after
/// the first error; a line longer than [`MAX_BODY`] or a silence longer than `idle` is one.
fn watch_events(body: Incoming, rt: ResourceType, idle: Duration) -> Events {
    let state = Some((body, BytesMut::new()));
    let events = futures::stream::unfold(state, move |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(end + 1);
                match parse_event(&line[..end], &rt) {
                    Ok(None) => continue,
                    Ok(Some(event)) => return Some((Ok(event), Some((body, buf)))),
                    Err(e) => return Some((Err(e), None)),
                }
            }
            if buf.len() > MAX_BODY {
                return Some((
                    Err(SourceError::Malformed(format!("a watch event longer than {MAX_BODY} bytes"))),
                    None,
                ));
            }
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    let why = format!("the watch was silent for {idle:?}");
                    return Some((Err(SourceError::Unreachable(why)), None));
                }
                Ok(None) => {
                    // The server ended the watch; a last line without its newline still counts.
                    return match parse_event(&buf, &rt) {
                        Ok(Some(event)) => Some((Ok(event), None)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), None)),
                    };
                }
                Ok(Some(Err(e))) => {
                    return Some((Err(SourceError::Unreachable(format!("the watch broke: {}", error_chain(&e)))), None))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    });
    Box::pin(events)
}

/// One watch line; `None` for a blank line or a bookmark.
fn parse_event(line: &[u8], rt: &ResourceType) -> Result<Option<WatchEvent>, SourceError> {
    if line.trim_ascii().is_empty() {
        return Ok(None);
    }
    let mut event: Value =
        serde_json::from_slice(line).map_err(|e| SourceError::Malformed(format!("a watch event: {e}")))?;
    let object = event.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    let kind = event["type"].as_str().unwrap_or_default();
    if kind != "BOOKMARK" && kind != "ERROR" && !object.is_object() {
        return Err(SourceError::Malformed(format!("a {kind} watch event without an object")));
    }
    Ok(Some(match kind {
        "ADDED" => WatchEvent::Added(complete(rt, object)),
        "MODIFIED" => WatchEvent::Modified(complete(rt, object)),
        "DELETED" => WatchEvent::Deleted(complete(rt, object)),
        "ERROR" => WatchEvent::Error(object),
        "BOOKMARK" => return Ok(None),
        other => return Err(SourceError::Malformed(format!("a watch event of type {other:?}"))),
    }))
}

/// An agent's [`Propose`]: each command goes to a server's `POST /skerry/v1/propose` (body: the
/// command's JSON; a 200 carries the command's [`Answer`], a 403 a `Status` saying the node may
/// not do this).
///
/// A write is acknowledged once the server applied it; it does **not** wait for the change to
/// come back into the agent's mirror, so a read of the local store right after may still show
/// the old object. The agent is level-triggered: it acts again on the mirrored change when it
/// arrives.
///
/// A server that cannot be reached, or answers with a server error, is passed over for the
/// next. A write whose answer is lost once sent (the connection broke, no answer in time) is
/// not sent again — it may have been applied — and fails saying so; the caller reads the
/// mirror and decides again.
pub struct RemoteProposer {
    servers: Arc<Servers>,
}

impl RemoteProposer {
    pub fn new(servers: Arc<Servers>) -> RemoteProposer {
        RemoteProposer { servers }
    }

    async fn send(&self, command: Command) -> Result<Applied, StoreError> {
        let body = serde_json::to_vec(&command).map_err(|e| StoreError::Task(format!("encoding a command: {e}")))?;
        let resp = match self.servers.send(Method::POST, PROPOSE_PATH, Some(Bytes::from(body)), false).await {
            Sent::Answered(resp) => resp,
            Sent::Unreached(why) => {
                return Err(StoreError::Task(format!(
                    "the servers are unreachable, the write was not applied ({why}); it is tried again when the node retries"
                )))
            }
            Sent::Lost(why) => {
                return Err(StoreError::Task(format!(
                    "the write was sent but its answer was lost ({why}); it may or may not have been applied"
                )))
            }
        };
        let status = resp.status();
        let body = tokio::time::timeout(self.servers.timeouts.request, read_body(resp.into_body()))
            .await
            .map_err(|_| StoreError::Task("the server's answer to a write did not finish in time".into()))?
            .map_err(StoreError::Task)?;
        match status {
            StatusCode::OK => {
                let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
                    StoreError::Task(format!("the server's answer to a write is not a command's answer: {e}"))
                })?;
                answer.map_err(StoreError::Rejected)
            }
            StatusCode::FORBIDDEN => Err(StoreError::Rejected(Rejection::Forbidden { message: status_message(&body) })),
            other => Err(StoreError::Task(format!("the server refused the write: {other}: {}", status_message(&body)))),
        }
    }
}

impl Propose for RemoteProposer {
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Applied, StoreError>> {
        Box::pin(self.send(command))
    }
}

#[cfg(test)]
mod tests;
