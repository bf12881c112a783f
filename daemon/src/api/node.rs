//! Endpoints that reach this node's machinery through [`NodeOps`]: logs, exec, images; plus
//! version, discovery and node info.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::objects::{meta, resource};

use super::crud::{wants_table, Query};
use super::error::ApiError;
use super::path::Target;
use super::{ApiState, VERSION};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
    pub wait: BoxFuture<'static, Result<i32, ApiError>>,
}

/// The node's side of the API: what needs containerd or the agent's files.
pub trait NodeOps: Send + Sync + 'static {
    fn containerd_version(&self) -> BoxFuture<'_, Result<String, ApiError>>;
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<Value>, ApiError>>;
    fn remove_image(&self, name: String) -> BoxFuture<'_, Result<(), ApiError>>;
    fn import_image(&self, file: PathBuf) -> BoxFuture<'_, Result<Vec<Value>, ApiError>>;
    /// Pulls an image; progress lines (`{"progress": ...}`) go to `progress`.
    fn pull_image(
        &self,
        image: String,
        auth: Option<(String, String)>,
        progress: tokio::sync::mpsc::UnboundedSender<Value>,
    ) -> BoxFuture<'_, Result<Value, ApiError>>;
    fn logs(&self, pod: Value, options: LogOptions) -> BoxFuture<'_, Result<BoxStream<'static, Bytes>, ApiError>>;
    fn exec(&self, pod: Value, container: String, command: Vec<String>, tty: bool, stdin: bool)
        -> BoxFuture<'_, Result<ExecStreams, ApiError>>;
}

pub async fn version(State(st): State<ApiState>) -> Response {
    let containerd = st.node.containerd_version().await.unwrap_or_else(|e| format!("unreachable: {}", e.message));
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

pub async fn info(State(st): State<ApiState>) -> Response {
    axum::Json(serde_json::to_value(&*st.info).expect("json")).into_response()
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
    let name = q.get("name").filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request("name the image: ?name=IMAGE"))?;
    st.node.remove_image(name.to_string()).await?;
    Ok(axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}})).into_response())
}

/// Streams the uploaded archive into a file under the data dir, then imports it.
pub async fn import_image(State(st): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let dir = PathBuf::from(&st.info.data_dir).join("tmp");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
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
        st.node.import_image(path.clone()).await
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
            format!("no space left on the device holding {}; free some space (skerry image rm, old logs) and try again", path.display()),
        )
    } else {
        ApiError::internal(format!("writing {}: {e}", path.display()))
    }
}

pub async fn pull_image(State(st): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let req = super::crud::parse_body(&body)?;
    let image = req["image"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request("name the image to pull"))?.to_string();
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
            Ok(Err(e)) => json!({"error": {"message": e.message, "reason": e.reason}}),
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
        return Err(ApiError::path_not_found(&format!("{}/{}", target.rt.name, target.subresource.as_deref().unwrap_or(""))));
    }
    let ns = target.namespace.as_deref().unwrap_or("");
    let name = target.name.as_deref().unwrap_or("");
    st.store.get(&resource::PODS.key(), ns, name).await?.ok_or_else(|| ApiError::not_found("pods", name))
}

/// Picks the container a request means: the named one, or the only one.
fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
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

pub async fn logs(st: ApiState, target: Target, q: Query) -> Result<Response, ApiError> {
    let pod = pod_for(&st, &target).await?;
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

pub async fn exec(st: ApiState, target: Target, q: Query, headers: HeaderMap, req: Request) -> Result<Response, ApiError> {
    let pod = pod_for(&st, &target).await?;
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
