//! Endpoints that reach this node's machinery through [`NodeOps`]: logs, exec, images, the
//! resource metrics API (`metrics.k8s.io/v1beta1`, as metrics-server serves it); plus version,
//! discovery and node info.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::node_ops::{ExecStreams, LogOptions, NodeUsage, PodUsage, Usage};
use crate::objects::{meta, resource};

use super::crud::{wants_table, Query};
use super::error::ApiError;
use super::path::Target;
use super::{relay, ApiState, VERSION};

pub async fn version(State(st): State<ApiState>) -> Response {
    let containerd = st.node.containerd_version().await.unwrap_or_else(|e| format!("unreachable: {e}"));
    axum::Json(json!({
        "major": "0", "minor": "1",
        "gitVersion": VERSION,
        "platform": format!("linux/{}", std::env::consts::ARCH),
        "containerdVersion": containerd,
    }))
    .into_response()
}

pub async fn resources() -> Response {
    axum::Json(json!({"resources": resource::ALL, "legacy": resource::LEGACY})).into_response()
}

/// The server's facts, and the node's capacity (what `top nodes` divides by).
pub async fn info(State(st): State<ApiState>) -> Response {
    let mut info = serde_json::to_value(&*st.info).expect("json");
    if let Ok(c) = st.node.node_capacity().await {
        info["capacity"] = json!({"cpu": c.cpus.to_string(), "memory": format_memory(c.memory_bytes)});
    }
    axum::Json(info).into_response()
}

pub async fn list_images(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let images = st.node.list_images().await?;
    if !wants_table(&headers) {
        return Ok(axum::Json(json!({"images": images})).into_response());
    }
    let rows: Vec<Value> = images
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap_or("");
            let (repo, tag) = split_reference(name);
            let digest = i["digest"].as_str().unwrap_or("");
            let short = digest.strip_prefix("sha256:").unwrap_or(digest).chars().take(12).collect::<String>();
            json!({"cells": [repo, tag, short, human_size(i["size"].as_u64().unwrap_or(0))], "object": i})
        })
        .collect();
    let defs: Vec<Value> = ["IMAGE", "TAG", "IMAGE ID", "SIZE"]
        .iter()
        .map(|n| json!({"name": n, "type": "string", "priority": 0}))
        .collect();
    Ok(axum::Json(json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": defs, "rows": rows})).into_response())
}

fn split_reference(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "<none>"),
    }
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1}MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1}KiB", bytes as f64 / 1024.0)
    }
}

pub async fn remove_image(State(st): State<ApiState>, q: axum::extract::RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q.0.as_deref())?;
    let name =
        q.get("name").filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request("name the image: ?name=IMAGE"))?;
    st.node.remove_image(name.to_string()).await?;
    Ok(axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}))
        .into_response())
}

/// Streams the uploaded archive into a file under the data dir, then imports it.
pub async fn import_image(State(st): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let dir = PathBuf::from(&st.info.data_dir).join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("import-{}.tar", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut body = req.into_body().into_data_stream();
        let mut file = match tokio::fs::File::create(&path).await {
            Ok(f) => f,
            Err(e) => return Err(drain(&mut body, disk_error(&path, e)).await),
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
            if let Err(e) = file.write_all(&chunk).await {
                return Err(drain(&mut body, disk_error(&path, e)).await);
            }
        }
        file.sync_all().await.map_err(|e| disk_error(&path, e))?;
        drop(file);
        Ok(st.node.import_image(path.clone()).await?)
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    Ok((StatusCode::CREATED, axum::Json(json!({"images": result?}))).into_response())
}

/// Reads (and discards) the rest of an upload, so the client gets the error instead of a
/// broken connection, then returns the error.
async fn drain<S>(body: &mut S, error: ApiError) -> ApiError
where
    S: futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    while let Some(Ok(_)) = body.next().await {}
    error
}

fn disk_error(path: &std::path::Path, e: std::io::Error) -> ApiError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            format!(
                "no space left on the device holding {}; free some space (skerry image rm, old logs) and try again",
                path.display()
            ),
        )
    } else {
        ApiError::internal(format!("writing {}: {e}", path.display()))
    }
}

pub async fn pull_image(State(st): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let req = super::crud::parse_body(&body)?;
    let image = req["image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("name the image to pull"))?
        .to_string();
    let auth = match (req["username"].as_str(), req["password"].as_str()) {
        (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
        _ => None,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let node = st.node.clone();
    let done = tokio::spawn(async move { node.pull_image(image, auth, tx).await });
    let progress = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|p| json!({"progress": p}));
    let last = futures::stream::once(async move {
        match done.await {
            Ok(Ok(info)) => json!({"done": info}),
            Ok(Err(e)) => {
                let e = ApiError::from(e);
                json!({"error": {"message": e.message, "reason": e.reason}})
            }
            Err(e) => json!({"error": {"message": e.to_string()}}),
        }
    });
    let lines = progress.chain(last).map(|v| {
        let mut line = serde_json::to_vec(&v).expect("json");
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

async fn pod_for(st: &ApiState, target: &Target) -> Result<Value, ApiError> {
    if target.rt.kind != "Pod" {
        return Err(ApiError::path_not_found(&format!(
            "{}/{}",
            target.rt.name,
            target.subresource.as_deref().unwrap_or("")
        )));
    }
    let ns = target.namespace.as_deref().unwrap_or("");
    let name = target.name.as_deref().unwrap_or("");
    st.store.get(&resource::PODS.key(), ns, name).await?.ok_or_else(|| ApiError::not_found("pods", name))
}

/// Picks the container a request means: the named one, or the only one.
fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {}; choose one of: [{}]",
            meta::name(pod),
            names.join(" ")
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            meta::name(pod),
            names.join(" ")
        ))),
    }
}

pub async fn logs(
    st: ApiState,
    target: Target,
    q: Query,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Response, ApiError> {
    let pod = pod_for(&st, &target).await?;
    if let Some((peers, node)) = relay::for_pod(&st, headers, &pod) {
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        return relay::stream(&st, peers, node, axum::http::Method::GET, path, headers).await;
    }
    let container = pick_container(&pod, q.get("container"))?;
    let options = LogOptions {
        container,
        follow: q.flag("follow"),
        previous: q.flag("previous"),
        tail: q.int("tailLines")?.and_then(|t| usize::try_from(t).ok()),
        timestamps: q.flag("timestamps"),
    };
    let stream = st.node.logs(pod, options).await?;
    let shutdown = st.shutdown.clone();
    let body = stream.take_until(Box::pin(async move { shutdown.cancelled().await })).map(Ok::<_, Infallible>);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(body)).into_response())
}

/// Frame channels of the exec protocol (`skerry-exec/1`).
pub mod frame {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const RESIZE: u8 = 3;
    pub const EXIT: u8 = 4;
    pub const STDIN_EOF: u8 = 5;

    pub fn encode(channel: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(channel);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
}

pub async fn exec(
    st: ApiState,
    target: Target,
    q: Query,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let pod = pod_for(&st, &target).await?;
    if let Some((peers, node)) = relay::for_pod(&st, &headers, &pod) {
        return relay::exec(&st, peers, node, req).await;
    }
    let container = pick_container(&pod, q.get("container"))?;
    let command = q.all("command");
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if upgrade != "skerry-exec/1" {
        return Err(ApiError::bad_request("exec needs a connection upgrade to skerry-exec/1"));
    }
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found ({container}); the pod is not running"
        )));
    }
    let tty = q.flag("tty");
    let want_stdin = q.flag("stdin");
    let streams = st.node.exec(pod, container, command, tty, want_stdin).await?;
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                if let Err(e) = pump(io, streams).await {
                    tracing::debug!(error = %e, "exec stream ended");
                }
            }
            Err(e) => tracing::warn!(error = %e, "exec upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("skerry-exec/1"));
    Ok(resp)
}

/// Moves bytes between the upgraded connection and the process until it exits.
async fn pump<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(io: S, streams: ExecStreams) -> std::io::Result<()> {
    let (mut rd, wr) = tokio::io::split(io);
    let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
    let ExecStreams { stdin, stdout, stderr, resize, close_stdin, wait } = streams;
    let copy_out = |mut src: Box<dyn AsyncRead + Send + Unpin>, channel: u8| {
        let wr = wr.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match src.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if wr.lock().await.write_all(&frame::encode(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        })
    };
    let out_task = copy_out(stdout, frame::STDOUT);
    let err_task = stderr.map(|e| copy_out(e, frame::STDERR));
    let input = tokio::spawn(async move {
        let mut stdin = stdin;
        loop {
            let mut head = [0u8; 5];
            if rd.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut payload = vec![0u8; len];
            if rd.read_exact(&mut payload).await.is_err() {
                break;
            }
            match head[0] {
                frame::STDIN => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&payload).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                frame::STDIN_EOF => {
                    if let Some(mut s) = stdin.take() {
                        let _ = s.shutdown().await;
                        drop(s);
                        close_stdin().await;
                    }
                }
                frame::RESIZE if payload.len() == 4 => {
                    let cols = u16::from_be_bytes([payload[0], payload[1]]);
                    let rows = u16::from_be_bytes([payload[2], payload[3]]);
                    resize(cols, rows).await;
                }
                _ => {}
            }
        }
    });
    let code = wait.await.unwrap_or(-1);
    // The process is gone: let its last output drain before the exit frame.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), out_task).await;
    if let Some(t) = err_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    input.abort();
    let exit = serde_json::to_vec(&json!({"exitCode": code})).expect("json");
    let mut w = wr.lock().await;
    w.write_all(&frame::encode(frame::EXIT, &exit)).await?;
    w.flush().await?;
    w.shutdown().await
}

/// The resource metrics API: what a path under `/apis/metrics.k8s.io` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsTarget {
    /// `/apis/metrics.k8s.io`: the API group.
    Group,
    /// `/apis/metrics.k8s.io/v1beta1`: its resources.
    Resources,
    /// `.../pods` (all namespaces), `.../namespaces/{ns}/pods[/{name}]`.
    Pods { namespace: Option<String>, name: Option<String> },
    /// `.../nodes[/{name}]`.
    Nodes { name: Option<String> },
}

pub const METRICS_GROUP: &str = "metrics.k8s.io";
const METRICS_VERSION: &str = "metrics.k8s.io/v1beta1";

/// Parses a metrics API path; `None` for anything else under the group.
pub fn metrics_target(path: &str) -> Option<MetricsTarget> {
    let rest = path.strip_prefix("/apis/metrics.k8s.io")?.trim_end_matches('/');
    if rest.is_empty() {
        return Some(MetricsTarget::Group);
    }
    let parts: Vec<&str> = rest.strip_prefix("/v1beta1")?.split('/').skip(1).collect();
    let owned = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match parts.as_slice() {
        [] => Some(MetricsTarget::Resources),
        ["pods"] => Some(MetricsTarget::Pods { namespace: None, name: None }),
        ["namespaces", ns, "pods"] => Some(MetricsTarget::Pods { namespace: Some(owned(ns)?), name: None }),
        ["namespaces", ns, "pods", name] => {
            Some(MetricsTarget::Pods { namespace: Some(owned(ns)?), name: Some(owned(name)?) })
        }
        ["nodes"] => Some(MetricsTarget::Nodes { name: None }),
        ["nodes", name] => Some(MetricsTarget::Nodes { name: Some(owned(name)?) }),
        _ => None,
    }
}

/// CPU as a canonical Kubernetes quantity from nanocores: `"5m"` when whole millicores, else
/// `"12345n"` (metrics-server's form).
pub fn format_cpu(nanocores: u64) -> String {
    match nanocores {
        0 => "0".into(),
        n if n.is_multiple_of(1_000_000_000) => format!("{}", n / 1_000_000_000),
        n if n.is_multiple_of(1_000_000) => format!("{}m", n / 1_000_000),
        n if n.is_multiple_of(1_000) => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Memory as a canonical binary quantity: the largest suffix that divides exactly (`"1234Ki"`,
/// `"12Mi"`), plain bytes otherwise.
pub fn format_memory(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (shift, suffix) in [(60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A duration as Go prints it (`metav1.Duration`): `"10.5s"`, `"1m0.25s"`, `"500ms"`; rounded to
/// milliseconds, as metrics-server's windows are.
pub fn format_window(d: std::time::Duration) -> String {
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (secs, frac) = (ms / 1000, ms % 1000);
    let mut out = String::new();
    if secs >= 3600 {
        out.push_str(&format!("{}h", secs / 3600));
    }
    if secs >= 60 {
        out.push_str(&format!("{}m", secs % 3600 / 60));
    }
    out.push_str(&(secs % 60).to_string());
    if frac > 0 {
        out.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": format_cpu(u.cpu_nanocores), "memory": format_memory(u.memory_bytes)})
}

/// A `PodMetrics` object for `pod`.
pub fn pod_metrics_json(pod: &Value, u: &PodUsage) -> Value {
    let containers: Vec<Value> =
        u.containers.iter().map(|(name, c)| json!({"name": name, "usage": usage_json(c)})).collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": METRICS_VERSION,
        "metadata": {
            "name": meta::name(pod),
            "namespace": meta::namespace(pod),
            "creationTimestamp": meta::now(),
            "labels": pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
        },
        "timestamp": meta::timestamp(u.timestamp),
        "window": format_window(u.window),
        "containers": containers,
    })
}

/// A `NodeMetrics` object for `node` (with its labels, as metrics-server writes them).
pub fn node_metrics_json(node: &Value, u: &NodeUsage) -> Value {
    let labels = node.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "NodeMetrics",
        "apiVersion": METRICS_VERSION,
        "metadata": {"name": meta::name(node), "creationTimestamp": meta::now(), "labels": labels},
        "timestamp": meta::timestamp(u.timestamp),
        "window": format_window(u.window),
        "usage": usage_json(&u.usage),
    })
}

/// `GET /apis/metrics.k8s.io/...`: pod and node metrics from [`NodeOps`] for pods bound to this
/// node and running (a pod not sampled yet is left out, as metrics-server does) and for this
/// node; pods and nodes elsewhere are asked of their nodes through the relay. A node that cannot
/// be reached is left out of a list with a warning, as metrics-server leaves out what it has no
/// sample of; asked for by name, it is the relay's `503`.
pub async fn metrics(
    State(st): State<ApiState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    q: axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let target = metrics_target(path).ok_or_else(|| ApiError::path_not_found(path))?;
    if method != axum::http::Method::GET {
        return Err(ApiError::method_not_allowed(method.as_str(), path));
    }
    let path_and_query = uri.path_and_query().map_or(path, |p| p.as_str());
    let q = Query::parse(q.0.as_deref())?;
    let filter = super::crud::Filter::from_query(&q)?;
    // The peers, when this request may be relayed at all.
    let peers = st.peers.as_deref().filter(|_| !relay::is_relayed(&headers));
    match target {
        MetricsTarget::Group => Ok(axum::Json(json!({
            "kind": "APIGroup", "apiVersion": "v1", "name": METRICS_GROUP,
            "versions": [{"groupVersion": METRICS_VERSION, "version": "v1beta1"}],
            "preferredVersion": {"groupVersion": METRICS_VERSION, "version": "v1beta1"},
        }))
        .into_response()),
        MetricsTarget::Resources => Ok(axum::Json(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": METRICS_VERSION,
            "resources": [
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            ],
        }))
        .into_response()),
        MetricsTarget::Pods { namespace: Some(ns), name: Some(n) } => {
            let pod = st.store.get(&resource::PODS.key(), &ns, &n).await?.ok_or_else(|| ApiError::not_found("pods", &n))?;
            if let Some((peers, node)) = relay::for_pod(&st, &headers, &pod) {
                return relay::stream(&st, peers, node, method, path_and_query, &headers).await;
            }
            let usage = st.node.pod_metrics(vec![pod.clone()]).await?;
            match usage.into_iter().next().flatten() {
                Some(u) => Ok(axum::Json(pod_metrics_json(&pod, &u)).into_response()),
                None => Err(ApiError::not_found("podmetrics.metrics.k8s.io", &format!("{ns}/{n}"))),
            }
        }
        MetricsTarget::Pods { namespace, .. } => {
            let key = resource::PODS.key();
            let pods = st.store.list(&key, namespace.as_deref()).await?.0.into_iter().filter(|p| filter.matches(p));
            // This node's pods, and the names of other nodes' pods by node.
            let mut here = Vec::new();
            let mut elsewhere: std::collections::BTreeMap<String, std::collections::HashSet<(String, String)>> =
                Default::default();
            for pod in pods {
                let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
                match peers.and_then(|p| relay::destination(&p.node_name, false, node)) {
                    Some(node) => {
                        let key = (meta::namespace(&pod).to_string(), meta::name(&pod).to_string());
                        elsewhere.entry(node.to_string()).or_default().insert(key);
                    }
                    None => here.push(pod),
                }
            }
            let usage = st.node.pod_metrics(here.clone()).await?;
            let mut items: Vec<Value> =
                here.iter().zip(usage).filter_map(|(p, u)| u.map(|u| pod_metrics_json(p, &u))).collect();
            let mut warnings = Vec::new();
            if let Some(peers) = peers {
                let asks = elsewhere.keys().map(|node| {
                    let path = pods_of_node(&uri, &q, node);
                    let st = &st;
                    async move { relay::get_json(st, peers, node, &path).await }
                });
                for ((node, names), answer) in elsewhere.iter().zip(futures::future::join_all(asks).await) {
                    match answer {
                        Ok(list) => items.extend(
                            list.and_then(|l| l["items"].as_array().cloned())
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|m| names.contains(&(meta::namespace(m).to_string(), meta::name(m).to_string()))),
                        ),
                        Err(e) => warnings.push(format!("metrics of the pods on node {node:?} are missing: {}", e.message)),
                    }
                }
            }
            items.sort_by(|a, b| (meta::namespace(a), meta::name(a)).cmp(&(meta::namespace(b), meta::name(b))));
            let list = json!({"kind": "PodMetricsList", "apiVersion": METRICS_VERSION, "metadata": {}, "items": items});
            Ok(super::crud::json_response(StatusCode::OK, &list, &warnings))
        }
        MetricsTarget::Nodes { name } => {
            let me = st.info.node_name.clone();
            let stored = |name: &str| {
                let st = st.clone();
                let name = name.to_string();
                async move { st.store.get(&resource::NODES.key(), "", &name).await }
            };
            if let Some(n) = name {
                if n != me {
                    return match peers {
                        Some(peers) if stored(&n).await?.is_some() => {
                            relay::stream(&st, peers, &n, method, path_and_query, &headers).await
                        }
                        _ => Err(ApiError::not_found("nodes", &n)),
                    };
                }
                let node = stored(&me).await?.unwrap_or_else(|| json!({"metadata": {"name": me}}));
                return match st.node.node_metrics().await? {
                    Some(u) => Ok(axum::Json(node_metrics_json(&node, &u)).into_response()),
                    None => Err(ApiError::not_found("nodemetrics.metrics.k8s.io", &n)),
                };
            }
            // Every Node (this one also before it registered), as the selector filters them.
            let mut nodes = st.store.list(&resource::NODES.key(), None).await?.0;
            if !nodes.iter().any(|n| meta::name(n) == me) {
                nodes.push(json!({"metadata": {"name": me}}));
            }
            nodes.retain(|n| filter.matches(n) && (meta::name(n) == me || peers.is_some()));
            let asks = nodes.iter().map(|node| {
                let (st, me) = (&st, &me);
                async move {
                    let name = meta::name(node);
                    if name == me.as_str() {
                        return Ok(st.node.node_metrics().await?.map(|u| node_metrics_json(node, &u)));
                    }
                    let peers = peers.expect("only this node is kept without peers");
                    let path = format!("/apis/{METRICS_VERSION}/nodes/{name}");
                    relay::get_json(st, peers, name, &path).await
                }
            });
            let mut items = Vec::new();
            let mut warnings = Vec::new();
            for (node, answer) in nodes.iter().zip(futures::future::join_all(asks).await) {
                match answer {
                    Ok(metrics) => items.extend(metrics),
                    Err(e) if meta::name(node) == me => return Err(e),
                    Err(e) => warnings.push(format!("metrics of node {:?} are missing: {}", meta::name(node), e.message)),
                }
            }
            items.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
            let list = json!({"kind": "NodeMetricsList", "apiVersion": METRICS_VERSION, "metadata": {}, "items": items});
            Ok(super::crud::json_response(StatusCode::OK, &list, &warnings))
        }
    }
}

/// The metrics path that asks `node` for the pods of this request that run there: the same
/// path and selectors, narrowed to `spec.nodeName=<node>`.
fn pods_of_node(uri: &axum::http::Uri, q: &Query, node: &str) -> String {
    let mut fields: Vec<String> =
        q.get("fieldSelector").filter(|f| !f.is_empty()).map(str::to_string).into_iter().collect();
    fields.push(format!("spec.nodeName={node}"));
    let mut pairs: Vec<(String, String)> = q.pairs.iter().filter(|(k, _)| k != "fieldSelector").cloned().collect();
    pairs.push(("fieldSelector".into(), fields.join(",")));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("{}?{query}", uri.path())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::node_ops::{BoxFuture, Capacity, NodeError, NodeOps};
    use futures::stream::BoxStream;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn metrics_paths() {
        let pods = |ns: Option<&str>, name: Option<&str>| {
            Some(MetricsTarget::Pods { namespace: ns.map(String::from), name: name.map(String::from) })
        };
        assert_eq!(metrics_target("/apis/metrics.k8s.io"), Some(MetricsTarget::Group));
        assert_eq!(metrics_target("/apis/metrics.k8s.io/v1beta1"), Some(MetricsTarget::Resources));
        assert_eq!(metrics_target("/apis/metrics.k8s.io/v1beta1/pods"), pods(None, None));
        assert_eq!(metrics_target("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"), pods(Some("default"), None));
        assert_eq!(
            metrics_target("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web/"),
            pods(Some("default"), Some("web"))
        );
        assert_eq!(metrics_target("/apis/metrics.k8s.io/v1beta1/nodes"), Some(MetricsTarget::Nodes { name: None }));
        assert_eq!(
            metrics_target("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(MetricsTarget::Nodes { name: Some("n1".into()) })
        );
        for bad in [
            "/apis/metrics.k8s.io/v1/pods",
            "/apis/metrics.k8s.io/v1beta1/services",
            "/apis/metrics.k8s.io/v1beta1/namespaces//pods",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web/log",
            "/apis/metrics.k8s.io.evil/v1beta1/pods",
            "/api/v1/pods",
        ] {
            assert_eq!(metrics_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_errors_become_statuses_by_kind() {
        let status = |e: NodeError| {
            let e = ApiError::from(e);
            (e.code.as_u16(), e.reason, e.message)
        };
        assert_eq!(status(NodeError::NotFound("no".into())), (404, "NotFound", "no".into()));
        assert_eq!(status(NodeError::BadRequest("bad".into())), (400, "BadRequest", "bad".into()));
        assert_eq!(status(NodeError::Unavailable("down".into())), (503, "ServiceUnavailable", "down".into()));
        assert_eq!(status(NodeError::InsufficientStorage("full".into())), (507, "InsufficientStorage", "full".into()));
        assert_eq!(status(NodeError::Internal("oops".into())), (500, "InternalError", "oops".into()));
    }

    #[test]
    fn quantities() {
        assert_eq!(format_cpu(0), "0");
        assert_eq!(format_cpu(12_345), "12345n");
        assert_eq!(format_cpu(5_000_000), "5m");
        assert_eq!(format_cpu(7_000), "7u");
        assert_eq!(format_cpu(2_000_000_000), "2");
        assert_eq!(format_cpu(1_500_000_000), "1500m");
        assert_eq!(format_memory(0), "0");
        assert_eq!(format_memory(1_263_616), "1234Ki");
        assert_eq!(format_memory(12 << 20), "12Mi");
        assert_eq!(format_memory(3 << 30), "3Gi");
        assert_eq!(format_memory(1500), "1500");
        assert_eq!(format_window(Duration::from_millis(10_500)), "10.5s");
        assert_eq!(format_window(Duration::from_micros(20_064_400)), "20.064s");
        assert_eq!(format_window(Duration::from_secs(1)), "1s");
        assert_eq!(format_window(Duration::from_millis(60_250)), "1m0.25s");
        assert_eq!(format_window(Duration::from_millis(500)), "500ms");
    }

    /// Node operations with fixed usage: 0.25 CPU and 12 MiB per sampled container.
    struct FakeNode;

    fn unsupported<T>() -> Result<T, NodeError> {
        Err(NodeError::Internal("not in this fake".into()))
    }

    impl NodeOps for FakeNode {
        fn containerd_version(&self) -> BoxFuture<'_, Result<String, NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn list_images(&self) -> BoxFuture<'_, Result<Vec<Value>, NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn remove_image(&self, _: String) -> BoxFuture<'_, Result<(), NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn import_image(&self, _: PathBuf) -> BoxFuture<'_, Result<Vec<Value>, NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn pull_image(
            &self,
            _: String,
            _: Option<(String, String)>,
            _: tokio::sync::mpsc::UnboundedSender<Value>,
        ) -> BoxFuture<'_, Result<Value, NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn logs(&self, _: Value, _: LogOptions) -> BoxFuture<'_, Result<BoxStream<'static, Bytes>, NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn exec(
            &self,
            _: Value,
            _: String,
            _: Vec<String>,
            _: bool,
            _: bool,
        ) -> BoxFuture<'_, Result<ExecStreams, NodeError>> {
            Box::pin(async { unsupported() })
        }
        fn pod_metrics(&self, pods: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<PodUsage>>, NodeError>> {
            let usage = |p: &Value| {
                // Only running pods bound to n1 are "sampled".
                (p.pointer("/spec/nodeName").and_then(Value::as_str) == Some("n1")
                    && p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
                .then(|| PodUsage {
                    containers: vec![("c".into(), Usage { cpu_nanocores: 250_000_000, memory_bytes: 12 << 20 })],
                    timestamp: jiff::Timestamp::UNIX_EPOCH,
                    window: Duration::from_secs(10),
                })
            };
            let out = pods.iter().map(usage).collect();
            Box::pin(async move { Ok(out) })
        }
        fn node_metrics(&self) -> BoxFuture<'_, Result<Option<NodeUsage>, NodeError>> {
            let u = NodeUsage {
                usage: Usage { cpu_nanocores: 1_234_567, memory_bytes: 1 << 30 },
                timestamp: jiff::Timestamp::UNIX_EPOCH,
                window: Duration::from_millis(10_500),
            };
            Box::pin(async move { Ok(Some(u)) })
        }
        fn node_capacity(&self) -> BoxFuture<'_, Result<Capacity, NodeError>> {
            Box::pin(async { Ok(Capacity { cpus: 2, memory_bytes: 4 << 30 }) })
        }
    }

    fn pod(ns: &str, name: &str, node: &str, phase: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": format!("u-{name}"), "labels": labels},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": phase}})
    }

    /// Serves the real router over `store` (with [`FakeNode`]) on a socket in a temp dir.
    pub(in crate::api) async fn serve_store(
        store: crate::store::Store,
        proposer: crate::store::Proposer,
    ) -> (tempfile::TempDir, PathBuf) {
        let state = test_state(store, proposer);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(super::super::serve(listener, state));
        (dir, socket)
    }

    /// The API's state over `store`, with [`FakeNode`] (node `n1`).
    pub(crate) fn test_state(store: crate::store::Store, proposer: crate::store::Proposer) -> ApiState {
        ApiState {
            store,
            proposer,
            info: Arc::new(super::super::ServerInfo {
                node_name: "n1".into(),
                socket: String::new(),
                containerd_socket: String::new(),
                containerd_namespace: String::new(),
                data_dir: String::new(),
                ca_hash: None,
                servers: Vec::new(),
            }),
            node: Arc::new(FakeNode),
            services: Arc::new(super::super::services::ServiceNet {
                cidr: ("10.96.0.0".parse().unwrap(), 12),
                dns_ip: "10.96.0.10".parse().unwrap(),
                node_ports: (30000, 32767),
            }),
            peers: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Serves the real router (fake node, in-memory store) on a socket; returns a request function.
    async fn serve() -> (tempfile::TempDir, impl Fn(&'static str, String) -> BoxFuture<'static, (u16, Value)>) {
        let (store, proposer) = crate::store::test_store().await;
        let other = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other", "uid": "other"}});
        proposer
            .propose(crate::store::Command::Create { resource: resource::NAMESPACES.key(), object: other })
            .await
            .unwrap();
        for p in [
            pod("default", "web", "n1", "Running", json!({"app": "web"})),
            pod("default", "db", "n1", "Running", json!({"app": "db"})),
            pod("default", "new", "n1", "Pending", json!({})),
            pod("default", "elsewhere", "n2", "Running", json!({})),
            pod("other", "job", "n1", "Running", json!({})),
        ] {
            proposer
                .propose(crate::store::Command::Create { resource: resource::PODS.key(), object: p })
                .await
                .unwrap();
        }
        let (dir, socket) = serve_store(store, proposer).await;
        let request = move |method: &'static str, path: String| -> BoxFuture<'static, (u16, Value)> {
            let socket = socket.clone();
            Box::pin(async move {
                let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let req = axum::http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "localhost")
                    .body(Body::empty())
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                let code = resp.status().as_u16();
                let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
                (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
            })
        };
        (dir, request)
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["metadata"]["namespace"].as_str().unwrap_or(""),
                    i["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn metrics_routes_come_before_the_crud_fallback() {
        let (_dir, get) = serve().await;
        const V: &str = "/apis/metrics.k8s.io/v1beta1";

        let (code, list) = get("GET", format!("{V}/namespaces/default/pods")).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["kind"], "PodMetricsList");
        assert_eq!(names(&list), ["default/db", "default/web"], "running pods on this node only");
        let web = &list["items"][1];
        assert_eq!(web["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(web["kind"], "PodMetrics");
        assert_eq!(web["metadata"]["labels"]["app"], "web");
        assert_eq!(web["window"], "10s");
        assert_eq!(web["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(web["containers"], json!([{"name": "c", "usage": {"cpu": "250m", "memory": "12Mi"}}]));

        let (_, list) = get("GET", format!("{V}/pods")).await;
        assert_eq!(names(&list), ["default/db", "default/web", "other/job"]);
        let (_, list) = get("GET", format!("{V}/namespaces/default/pods?labelSelector=app%3Dweb")).await;
        assert_eq!(names(&list), ["default/web"]);

        let (code, one) = get("GET", format!("{V}/namespaces/default/pods/web")).await;
        assert_eq!((code, one["metadata"]["name"].as_str()), (200, Some("web")));
        let (code, status) = get("GET", format!("{V}/namespaces/default/pods/new")).await;
        assert_eq!(
            (code, status["message"].as_str()),
            (404, Some("podmetrics.metrics.k8s.io \"default/new\" not found"))
        );
        let (code, status) = get("GET", format!("{V}/namespaces/default/pods/nope")).await;
        assert_eq!((code, status["message"].as_str()), (404, Some("pods \"nope\" not found")));

        let (code, nodes) = get("GET", format!("{V}/nodes")).await;
        assert_eq!(code, 200);
        assert_eq!(nodes["kind"], "NodeMetricsList");
        assert_eq!(nodes["items"][0]["metadata"]["name"], "n1");
        assert_eq!(nodes["items"][0]["usage"], json!({"cpu": "1234567n", "memory": "1Gi"}));
        assert_eq!(nodes["items"][0]["window"], "10.5s");
        let (code, node) = get("GET", format!("{V}/nodes/n1")).await;
        assert_eq!((code, node["kind"].as_str()), (200, Some("NodeMetrics")));
        let (code, status) = get("GET", format!("{V}/nodes/n9")).await;
        assert_eq!((code, status["message"].as_str()), (404, Some("nodes \"n9\" not found")));
        let (_, nodes) = get("GET", format!("{V}/nodes?labelSelector=role%3Dedge")).await;
        assert_eq!(nodes["items"], json!([]));

        let (code, resources) = get("GET", V.to_string()).await;
        assert_eq!((code, resources["kind"].as_str()), (200, Some("APIResourceList")));
        let (code, status) = get("GET", format!("{V}/services")).await;
        assert_eq!((code, status["kind"].as_str()), (404, Some("Status")));
        let (code, status) = get("DELETE", format!("{V}/nodes/n1")).await;
        assert_eq!((code, status["reason"].as_str()), (405, Some("MethodNotAllowed")));

        // The capacity `top nodes` divides by.
        let (_, info) = get("GET", "/skerry/v1/info".into()).await;
        assert_eq!(info["capacity"], json!({"cpu": "2", "memory": "4Gi"}));
    }

    /// POSTs `body` to the API served from `dir` (by [`serve`]).
    async fn post(dir: &tempfile::TempDir, path: &str, body: Value) -> (u16, Value) {
        let stream = tokio::net::UnixStream::connect(dir.path().join("api.sock")).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = axum::http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "localhost")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let code = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn an_eviction_is_a_graceful_delete() {
        let (dir, get) = serve().await;
        let eviction = |name: &str, options: Value| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}, "deleteOptions": options});
        const WEB: &str = "/api/v1/namespaces/default/pods/web/eviction";
        let (code, status) = post(&dir, WEB, eviction("web", json!({"preconditions": {"uid": "other"}}))).await;
        assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")), "{status}");
        let (code, status) = post(&dir, WEB, eviction("db", json!({}))).await;
        assert_eq!(
            (code, status["message"].as_str()),
            (400, Some("name in URL does not match name in Eviction object"))
        );
        let (code, status) = post(&dir, WEB, eviction("web", json!({"gracePeriodSeconds": 5}))).await;
        assert_eq!((code, status["status"].as_str()), (201, Some("Success")), "{status}");
        let (_, pod) = get("GET", "/api/v1/namespaces/default/pods/web".into()).await;
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 5, "{pod}");
        assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
        let target = pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionTarget");
        assert_eq!(target.map(|c| c["reason"].clone()), Some(json!("EvictionByEvictionAPI")), "{pod}");
        let (code, _) = post(&dir, WEB, eviction("web", json!({}))).await;
        assert_eq!(code, 201, "evicting a terminating pod again is fine");
        let (code, status) =
            post(&dir, "/api/v1/namespaces/default/pods/gone/eviction", eviction("gone", json!({}))).await;
        assert_eq!((code, status["message"].as_str()), (404, Some("pods \"gone\" not found")));
    }
}
