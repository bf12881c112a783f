//! The node agent: runs the pods bound to this node, and registers the node itself (its `Node`
//! object, [`register`]).
//!
//! Owns, per pod: the sandbox (network/IPC/UTS namespaces), volumes, images, containers (their
//! environment from ConfigMaps, Secrets and the downward API), restarts with
//! back-off, graceful termination, log files, and the pod's `status`. One worker task per pod,
//! so one pod's failure or slow pull never blocks another.
//!
//! Invariant: what runs is reconciled toward the store — a container whose pod is gone is
//! stopped; a pod whose container is gone gets it back (within its restart policy). Restarting
//! `skerryd` restarts no container: workers adopt running tasks by their containerd IDs.
//! Boundary: talks to containerd only through the [`crate::runtime::Runtime`] trait object in
//! its [`Context`], as it reaches the kernel's namespaces ([`sandbox::Namespaces`]), the pod
//! network ([`crate::net::cni::PodNetwork`]) and the wall clock ([`crate::clock::Clock`]) —
//! unit tests pass fakes; writes only pod status, events, the final removal of a terminated
//! pod and its own Node through store commands.

pub mod cgroups;
pub mod env;
pub mod facts;
mod files;
pub mod metrics;
mod node_ops;
pub mod probe;
pub mod register;
pub mod resources;
pub mod sandbox;
pub mod status;
pub mod volumes;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::Recorder;
use crate::net::cni::PodNetwork;
use crate::objects::{meta, resource};
use crate::runtime::Runtime;
use crate::store::{Proposer, Store};

pub use node_ops::Node;

/// Label on every containerd container Skerry runs: the pod's UID.
pub const LABEL_POD_UID: &str = "io.skerry.pod.uid";
pub const LABEL_POD_NAME: &str = "io.skerry.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.skerry.pod.namespace";
pub const LABEL_CONTAINER: &str = "io.skerry.container.name";

/// Everything a pod worker needs; shared.
pub struct Context {
    /// Reads: the local store.
    pub store: Store,
    /// Writes (pod status, events, removal of terminated pods).
    pub proposer: Proposer,
    /// containerd ([`crate::runtime::ContainerdRuntime`]) in the daemon.
    pub runtime: Arc<dyn Runtime>,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    /// Parent of every pod's cgroup (`/skerry`).
    pub cgroup_parent: String,
    /// The pod network (CNI plugins from the configured list, [`crate::net::cni::Cni`]).
    pub cni: Arc<dyn PodNetwork>,
    /// Creates and removes pod sandboxes ([`sandbox::KernelNamespaces`] in the daemon).
    pub namespaces: Arc<dyn sandbox::Namespaces>,
    /// Wall-clock time for the workers' decisions ([`crate::clock::SystemClock`]).
    pub clock: Arc<dyn Clock>,
    pub node_ip: std::net::Ipv4Addr,
    pub cluster_dns: std::net::Ipv4Addr,
    pub cluster_domain: String,
    pub recorder: Recorder,
}

impl Context {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }
}

/// The containerd ID of a pod's container: short pod UID and container name (≤ 76 chars).
pub fn container_id(pod_uid: &str, container: &str) -> String {
    let short: String = pod_uid.chars().filter(|c| *c != '-').take(12).collect();
    format!("{short}-{container}")
}

/// The log file of one run of a container.
pub fn log_path(data_dir: &std::path::Path, pod_uid: &str, container: &str, restart: i64) -> PathBuf {
    data_dir.join("pods").join(pod_uid).join("logs").join(container).join(format!("{restart}.log"))
}

/// The CNI attachment of a pod: one `eth0` in its sandbox's network namespace.
pub fn attachment(uid: &str, namespace: &str, name: &str, netns: PathBuf) -> crate::net::cni::Attachment {
    crate::net::cni::Attachment {
        container_id: uid.to_string(),
        netns,
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), namespace.to_string()),
            ("K8S_POD_NAME".into(), name.to_string()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), uid.to_string()),
            ("K8S_POD_UID".into(), uid.to_string()),
        ],
    }
}

/// CNI DEL for a pod (with its cached ADD result), before its namespace goes. Failures are
/// logged: the namespace must go regardless, and GC at the next start frees what is left.
pub async fn release_network(ctx: &Context, uid: &str, namespace: &str, name: &str) {
    let dir = ctx.pod_dir(uid);
    let netns = dir.join("ns").join("net");
    let cached: Option<Value> =
        std::fs::read(dir.join("network.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if cached.is_none() && !netns.exists() {
        return;
    }
    if let Err(e) = ctx.cni.del(&attachment(uid, namespace, name, netns), cached.as_ref()).await {
        tracing::warn!(pod = name, namespace, error = %e, "CNI DEL failed; the next start's GC will retry");
    }
}

fn bound_here(pod: &Value, node: &str) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
}

/// Starts a worker for one pod, recording its handle.
type SpawnWorker<'a> = dyn FnMut(&Value, &mut HashMap<String, WorkerHandle>, &mut JoinSet<()>) + 'a;

struct WorkerHandle {
    poke: mpsc::Sender<()>,
}

/// Runs until `shutdown`; workers stop without touching containers, which keep running.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let key = resource::PODS.key();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();

    let revision = ctx.store.revision().await.unwrap_or(0);
    if let Err(e) = collect_orphans(&ctx).await {
        tracing::warn!(error = %e, "could not collect orphaned containers");
    }
    let mut watcher = match ctx.store.watch(revision).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "agent cannot watch the store");
            return;
        }
    };
    let mut spawn = |pod: &Value, workers: &mut HashMap<String, WorkerHandle>, tasks: &mut JoinSet<()>| {
        let uid = meta::uid(pod).to_string();
        if let Some(w) = workers.get(&uid) {
            let _ = w.poke.try_send(());
            return;
        }
        let (tx, rx) = mpsc::channel(1);
        workers.insert(uid.clone(), WorkerHandle { poke: tx });
        let w = worker::Worker::new(ctx.clone(), pod);
        let done = done_tx.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            w.run(rx, stop).await;
            let _ = done.send(uid);
        });
    };
    let resync = |workers: &mut HashMap<String, WorkerHandle>,
                  tasks: &mut JoinSet<()>,
                  pods: Vec<Value>,
                  spawn: &mut SpawnWorker| {
        let new: Vec<&Value> =
            pods.iter().filter(|p| bound_here(p, &ctx.node_name) && !workers.contains_key(meta::uid(p))).collect();
        for pod in new {
            spawn(pod, workers, tasks);
        }
    };
    if let Ok((pods, _)) = ctx.store.list(&key, None).await {
        resync(&mut workers, &mut tasks, pods, &mut spawn);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(uid) = done_rx.recv() => { workers.remove(&uid); }
            _ = tick.tick() => {
                if let Ok((pods, _)) = ctx.store.list(&key, None).await {
                    resync(&mut workers, &mut tasks, pods, &mut spawn);
                }
            }
            event = watcher.next() => match event {
                Ok(ev) if ev.resource == key => {
                    let uid = meta::uid(&ev.object).to_string();
                    if let Some(w) = workers.get(&uid) {
                        let _ = w.poke.try_send(());
                    } else if bound_here(&ev.object, &ctx.node_name) && ev.kind != crate::store::EventType::Deleted {
                        spawn(&ev.object, &mut workers, &mut tasks);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if let Ok(rev) = ctx.store.revision().await {
                        if let Ok(w) = ctx.store.watch(rev).await {
                            watcher = w;
                        }
                    }
                }
            },
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Removes containers and sandboxes whose pods are no longer in the store (a crash between a
/// force delete and its cleanup, or a state database restored from backup).
async fn collect_orphans(ctx: &Context) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (pods, _) = ctx.store.list(&resource::PODS.key(), None).await?;
    let known: std::collections::HashSet<&str> =
        pods.iter().filter(|p| bound_here(p, &ctx.node_name)).map(meta::uid).collect();
    for c in ctx.runtime.list_containers().await? {
        let Some(uid) = c.labels.get(LABEL_POD_UID) else { continue };
        if !known.contains(uid.as_str()) {
            tracing::info!(container = c.id, pod_uid = uid, "removing orphaned container");
            let _ = ctx.runtime.remove(&c.id).await;
        }
    }
    let pods_dir = ctx.data_dir.join("pods");
    if let Ok(entries) = std::fs::read_dir(&pods_dir) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().to_string();
            if !known.contains(uid.as_str()) {
                release_network(ctx, &uid, "", "").await;
                let sb = sandbox::Sandbox::at(entry.path().join("ns"));
                if ctx.namespaces.remove(&sb).is_ok() && volumes::tear_down(&entry.path()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
                cgroups::remove_tree(&cgroups::pod_path(&ctx.cgroup_parent, &uid));
            }
        }
    }
    // Plugins that speak CNI 1.1 also free anything else that leaked (a crash mid-ADD).
    let valid: Vec<(String, String)> = known.iter().map(|u| (u.to_string(), "eth0".to_string())).collect();
    if let Err(e) = ctx.cni.gc(&valid).await {
        tracing::warn!(error = %e, "CNI GC failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_fit_containerd_limits() {
        let id = container_id("0b7c54a2-1d3e-4f5a-9b6c-7d8e9f0a1b2c", &"c".repeat(63));
        assert!(id.len() <= 76, "{}", id.len());
        assert!(id.starts_with("0b7c54a21d3e-"));
    }
}
