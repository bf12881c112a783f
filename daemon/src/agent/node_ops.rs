//! The node's operations ([`crate::node_ops::NodeOps`]): images, logs and exec through the
//! runtime and the agent's log files; resource metrics through [`super::metrics`]. Failures are
//! [`NodeError`]s; what they become on the wire is the API's business.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{container_id, log_path, metrics, Context};
use crate::node_ops::{BoxFuture, Capacity, ExecStreams, LogOptions, NodeError, NodeOps, NodeUsage, PodUsage, Usage};
use crate::objects::{meta, resource};
use crate::runtime::{ExecRequest, ImageInfo, RuntimeError};

pub struct Node {
    pub ctx: Arc<Context>,
    pub shutdown: CancellationToken,
}

/// What kind of failure a runtime error is, for the caller.
impl From<RuntimeError> for NodeError {
    fn from(e: RuntimeError) -> NodeError {
        match &e {
            RuntimeError::ImageNotFound(_) | RuntimeError::ContainerNotFound(_) => NodeError::NotFound(e.to_string()),
            RuntimeError::InvalidArchive { .. }
            | RuntimeError::InvalidReference { .. }
            | RuntimeError::InvalidImage { .. } => NodeError::BadRequest(e.to_string()),
            RuntimeError::Connect { .. } => NodeError::Unavailable(e.to_string()),
            RuntimeError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                NodeError::InsufficientStorage(format!("{e}; free some disk space and try again"))
            }
            _ => NodeError::Internal(e.to_string()),
        }
    }
}

fn image_json(i: &ImageInfo) -> Value {
    json!({"name": i.name, "digest": i.digest, "size": i.size, "created": i.created.map(meta::timestamp)})
}

impl NodeOps for Node {
    fn containerd_version(&self) -> BoxFuture<'_, Result<String, NodeError>> {
        Box::pin(async move { self.ctx.runtime.version().await.map_err(NodeError::from) })
    }

    fn list_images(&self) -> BoxFuture<'_, Result<Vec<Value>, NodeError>> {
        Box::pin(async move {
            let images = self.ctx.runtime.list_images().await.map_err(NodeError::from)?;
            Ok(images.iter().map(image_json).collect())
        })
    }

    fn remove_image(&self, name: String) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move { self.ctx.runtime.remove_image(&name).await.map_err(NodeError::from) })
    }

    fn import_image(&self, file: PathBuf) -> BoxFuture<'_, Result<Vec<Value>, NodeError>> {
        Box::pin(async move {
            let images = self.ctx.runtime.import_archive(&file).await.map_err(NodeError::from)?;
            Ok(images.iter().map(image_json).collect())
        })
    }

    fn pull_image(
        &self,
        image: String,
        auth: Option<(String, String)>,
        progress: tokio::sync::mpsc::UnboundedSender<Value>,
    ) -> BoxFuture<'_, Result<Value, NodeError>> {
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let forward = tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    let p: crate::runtime::PullProgress = p;
                    let _ = progress
                        .send(json!({"layer": p.layer, "current": p.current, "total": p.total, "status": p.status}));
                }
            });
            let result = self.ctx.runtime.pull(&image, auth, &self.ctx.insecure_registries, tx).await;
            let _ = forward.await;
            let info = result.map_err(NodeError::from)?;
            Ok(image_json(&info))
        })
    }

    fn logs(&self, pod: Value, o: LogOptions) -> BoxFuture<'_, Result<BoxStream<'static, Bytes>, NodeError>> {
        Box::pin(async move {
            let status = pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|c| c["name"].as_str() == Some(&o.container)))
                .cloned()
                .unwrap_or(Value::Null);
            let restarts = status["restartCount"].as_i64().unwrap_or(0);
            let run = if o.previous { restarts - 1 } else { restarts };
            let path = log_path(&self.ctx.data_dir, meta::uid(&pod), &o.container, run);
            if run < 0 || !path.exists() {
                let what = if o.previous { "previous terminated container" } else { "container" };
                let waiting = status.pointer("/state/waiting/reason").and_then(Value::as_str);
                let msg = match waiting {
                    Some(reason) if !o.previous => format!(
                        "container {:?} in pod {:?} is waiting to start: {}",
                        o.container,
                        meta::name(&pod),
                        reason
                    ),
                    _ => format!("{what} {:?} in pod {:?} not found", o.container, meta::name(&pod)),
                };
                return Err(NodeError::BadRequest(msg));
            }
            if !o.follow {
                let text =
                    tokio::task::spawn_blocking(move || crate::runtime::logger::read_log(&path, o.tail, o.timestamps))
                        .await
                        .map_err(|e| NodeError::Internal(e.to_string()))?
                        .map_err(|e| NodeError::Internal(format!("reading the log: {e}")))?;
                return Ok(futures::stream::once(async move { Bytes::from(text) }).boxed());
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
            let stop = self.shutdown.child_token();
            tokio::spawn(crate::runtime::logger::follow_log(path, o.tail, o.timestamps, tx, stop.clone()));
            // Following ends when that run of the container ends, as with kubectl.
            let store = self.ctx.store.clone();
            let (ns, name, uid) =
                (meta::namespace(&pod).to_string(), meta::name(&pod).to_string(), meta::uid(&pod).to_string());
            let container = o.container.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    }
                    let current = store
                        .get(&resource::PODS.key(), &ns, &name)
                        .await
                        .ok()
                        .flatten()
                        .filter(|p| meta::uid(p) == uid);
                    let still = current.as_ref().and_then(|p| {
                        p.pointer("/status/containerStatuses")?
                            .as_array()?
                            .iter()
                            .find(|c| c["name"].as_str() == Some(&container))
                            .map(|c| {
                                c["restartCount"].as_i64() == Some(run)
                                    && !c["state"]["terminated"].is_object()
                                    && !c["state"]["waiting"].is_object()
                            })
                    });
                    if still != Some(true) {
                        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                        stop.cancel();
                        return;
                    }
                }
            });
            Ok(tokio_stream::wrappers::ReceiverStream::new(rx).map(Bytes::from).boxed())
        })
    }

    fn exec(
        &self,
        pod: Value,
        container: String,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> BoxFuture<'_, Result<ExecStreams, NodeError>> {
        Box::pin(async move {
            let id = container_id(meta::uid(&pod), &container);
            let req = ExecRequest { args: command, env: Vec::new(), tty, stdin, cwd: None };
            let session = self.ctx.runtime.exec(&id, &req).await.map_err(NodeError::from)?;
            let crate::runtime::ExecSession { stdin, stdout, stderr, control } = session;
            let stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = stdin.map(|s| Box::new(s) as _);
            let stdout: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(stdout);
            let stderr: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = stderr.map(|s| Box::new(s) as _);
            let control = Arc::new(control);
            let for_resize = control.clone();
            let resize = Box::new(move |cols: u16, rows: u16| -> BoxFuture<'static, ()> {
                let c = for_resize.clone();
                Box::pin(async move {
                    let _ = c.resize(cols, rows).await;
                })
            });
            let for_close = control.clone();
            let close_stdin = Box::new(move || -> BoxFuture<'static, ()> {
                let c = for_close.clone();
                Box::pin(async move {
                    let _ = c.close_stdin().await;
                })
            });
            let wait: BoxFuture<'static, Result<i32, NodeError>> =
                Box::pin(async move { control.wait().await.map_err(NodeError::from) });
            Ok(ExecStreams { stdin, stdout, stderr, resize, close_stdin, wait })
        })
    }

    fn pod_metrics(&self, pods: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<PodUsage>>, NodeError>> {
        Box::pin(async move {
            let targets: Vec<Vec<metrics::Target>> =
                pods.iter().map(|p| metrics::targets(p, &self.ctx.node_name, &self.ctx.cgroup_parent)).collect();
            let keys: Vec<String> = targets.iter().flatten().map(|t| t.cgroup.clone()).collect();
            let rates = metrics::shared().0.rates(keys, metrics::read_keys).await;
            let timestamp = jiff::Timestamp::now();
            Ok(targets
                .iter()
                .map(|containers| {
                    // A pod is reported only when every running container of it was sampled.
                    let usage: Option<Vec<(String, metrics::Rate)>> =
                        containers.iter().map(|t| rates.get(&t.cgroup).map(|r| (t.container.clone(), *r))).collect();
                    let usage = usage.filter(|u| !u.is_empty())?;
                    let window = usage.iter().map(|(_, r)| r.window).min().unwrap_or_default();
                    let containers = usage
                        .into_iter()
                        .map(|(name, r)| (name, Usage { cpu_nanocores: r.nanocores, memory_bytes: r.memory }))
                        .collect();
                    Some(PodUsage { containers, timestamp, window })
                })
                .collect())
        })
    }

    fn node_metrics(&self) -> BoxFuture<'_, Result<Option<NodeUsage>, NodeError>> {
        Box::pin(async move {
            Ok(metrics::node_rate().await.map(|r| NodeUsage {
                usage: Usage { cpu_nanocores: r.nanocores, memory_bytes: r.memory },
                timestamp: jiff::Timestamp::now(),
                window: r.window,
            }))
        })
    }

    fn node_capacity(&self) -> BoxFuture<'_, Result<Capacity, NodeError>> {
        Box::pin(async move {
            let node = tokio::task::spawn_blocking(metrics::read_node)
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            let node = node.ok_or_else(|| NodeError::Internal("could not read /proc/stat and /proc/meminfo".into()))?;
            Ok(Capacity { cpus: node.cpus, memory_bytes: node.memory_total })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_keep_their_kind_and_message() {
        let kind = |e: RuntimeError| NodeError::from(e);
        assert!(matches!(kind(RuntimeError::ImageNotFound("busybox".into())), NodeError::NotFound(_)));
        assert!(matches!(kind(RuntimeError::ContainerNotFound("c".into())), NodeError::NotFound(_)));
        let bad = RuntimeError::InvalidReference { reference: "UPPER".into(), reason: "not lower case".into() };
        assert_eq!(kind(bad), NodeError::BadRequest("invalid image reference \"UPPER\": not lower case".into()));
        let down = RuntimeError::Connect { path: "/run/containerd.sock".into(), reason: "refused".into() };
        assert!(matches!(kind(down), NodeError::Unavailable(_)));
        let full = RuntimeError::io("writing blob", std::io::Error::from_raw_os_error(libc::ENOSPC));
        let NodeError::InsufficientStorage(message) = kind(full) else { panic!("not a storage error") };
        assert!(message.starts_with("writing blob: ") && message.ends_with("; free some disk space and try again"));
        assert!(matches!(kind(RuntimeError::NoCommand), NodeError::Internal(_)));
    }
}
