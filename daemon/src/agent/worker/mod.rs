//! One pod's worker: reconciles the pod's sandbox and containers toward its spec, and its
//! status toward what runs. Each running container with probes gets its own probe task
//! ([`super::probe::run::drive`]); the worker reads what the probes say when it writes the
//! status and kills a container whose liveness or startup probe failed.
//!
//! The per-pod loop is here; the rest is split by verb: [`start`] (sandbox, network, volumes,
//! image and the container's spec), [`restart`] (what a container's run became, restart
//! decisions with back-off, probes and their kills), [`stop`] (graceful deletion and the
//! teardown of what the pod left), [`status`] (the pod status written to the store; the pure
//! rules are [`super::status`]).

mod restart;
mod start;
mod status;
mod stop;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sandbox::Sandbox;
use super::Context;
use crate::events::EventType;
use crate::objects::{meta, resource};
use crate::runtime::TaskState;
use crate::store::StoreError;
use restart::ProbeRun;

/// What the worker remembers about one container between reconciles.
#[derive(Debug, Default, Clone)]
struct Memo {
    restart_count: i64,
    backoff_steps: u32,
    started_at: Option<jiff::Timestamp>,
    last_state: Value,
    image_id: String,
    /// Why the container is waiting, when starting it failed: (reason, message).
    waiting: Option<(String, String)>,
    /// No new start attempt before this instant (failed pulls and starts).
    next_attempt: Option<Instant>,
    attempts: u32,
    /// When the last start attempt failed.
    failed_at: Option<Instant>,
    /// The task state this reconcile observed (or produced by starting it), so the status
    /// write needs no second round trip to containerd.
    seen: Option<TaskState>,
    /// Set while a task waits on this container's exit (cleared when the wait ends, also when
    /// containerd restarts and the wait breaks, so a new one is armed).
    watching: Arc<AtomicBool>,
    /// The probe task of the current run, while it runs and has probes.
    probes: Option<ProbeRun>,
    /// `started` and `ready` from the stored status of a running container, to seed the probes
    /// of that run when this worker adopts it after a `skerryd` restart.
    adopted: Option<(bool, bool)>,
    /// The current run was killed by a failed liveness or startup probe: it restarts unless the
    /// policy is `Never`, whatever its exit code.
    probe_killed: bool,
    /// Whether the run that exited at this time was OOM-killed (read once per exit from its
    /// cgroup, which is gone once the task is removed).
    oom: Option<(jiff::Timestamp, bool)>,
}

pub struct Worker {
    ctx: Arc<Context>,
    uid: String,
    namespace: String,
    name: String,
    memos: HashMap<String, Memo>,
    sandbox: Sandbox,
    /// The sandbox was created (or found complete) by this worker.
    sandbox_ready: bool,
    /// The pod's address once its network is up.
    pod_ip: Option<std::net::Ipv4Addr>,
    term_sent: bool,
    /// The pod's volumes, set up before any container starts.
    volumes: super::volumes::PodVolumes,
    /// The last `FailedMount` message recorded and when (repeated at most every 10 s).
    mount_event: Option<(String, Instant)>,
    poke: Option<mpsc::Sender<()>>,
    /// Cancelled when the worker ends; parent of the probe tasks.
    stop: CancellationToken,
}

enum Next {
    /// Reconcile again after at most this long.
    After(Duration),
    /// The pod is gone and cleaned up.
    Done,
}
impl Worker {
    pub fn new(ctx: Arc<Context>, pod: &Value) -> Worker {
        let uid = meta::uid(pod).to_string();
        let sandbox = Sandbox::at(ctx.pod_dir(&uid).join("ns"));
        let mut memos = HashMap::new();
        // Pick up what the stored status says, so a restarted daemon keeps counting.
        for cs in pod.pointer("/status/containerStatuses").and_then(Value::as_array).into_iter().flatten() {
            let name = cs["name"].as_str().unwrap_or("").to_string();
            let restarts = cs["restartCount"].as_i64().unwrap_or(0);
            let running = cs.pointer("/state/running").is_some_and(Value::is_object);
            let adopted = running.then(|| (cs["started"] == true, cs["ready"] == true));
            memos.insert(
                name,
                Memo {
                    restart_count: restarts,
                    backoff_steps: restarts.clamp(0, 16) as u32,
                    started_at: meta::parse_time(cs.pointer("/state/running/startedAt"))
                        .or_else(|| meta::parse_time(cs.pointer("/state/terminated/startedAt"))),
                    last_state: cs.get("lastState").cloned().unwrap_or(json!({})),
                    image_id: cs["imageID"].as_str().unwrap_or("").to_string(),
                    adopted,
                    ..Memo::default()
                },
            );
        }
        Worker {
            ctx,
            uid,
            namespace: meta::namespace(pod).to_string(),
            name: meta::name(pod).to_string(),
            memos,
            sandbox,
            sandbox_ready: false,
            pod_ip: None,
            term_sent: false,
            volumes: Default::default(),
            mount_event: None,
            poke: None,
            stop: CancellationToken::new(),
        }
    }

    pub async fn run(mut self, mut poke: mpsc::Receiver<()>, shutdown: CancellationToken) {
        let (tx, mut self_poke) = mpsc::channel(1);
        self.poke = Some(tx);
        self.stop = shutdown.child_token();
        let _stop_probes = self.stop.clone().drop_guard();
        loop {
            let wait = match self.reconcile().await {
                Ok(Next::Done) => return,
                Ok(Next::After(d)) => d,
                Err(e) => {
                    tracing::warn!(pod = %self.name, namespace = %self.namespace, error = %e, "reconcile failed; retrying");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = poke.recv() => {}
                _ = self_poke.recv() => {}
                _ = tokio::time::sleep(wait.min(Duration::from_secs(5))) => {}
            }
        }
    }

    async fn current(&self) -> Result<Option<Value>, StoreError> {
        let pod = self.ctx.store.get(&resource::PODS.key(), &self.namespace, &self.name).await?;
        Ok(pod.filter(|p| meta::uid(p) == self.uid))
    }

    async fn reconcile(&mut self) -> Result<Next, Box<dyn std::error::Error + Send + Sync>> {
        let Some(pod) = self.current().await? else {
            if !self.teardown(&containers_of_memos(&self.memos)).await {
                return Ok(Next::After(Duration::from_secs(2)));
            }
            return Ok(Next::Done);
        };
        let names: Vec<String> =
            spec_containers(&pod).iter().map(|c| c["name"].as_str().unwrap_or("").to_string()).collect();
        if meta::is_deleting(&pod) {
            return self.terminate(&pod, &names).await;
        }
        let began = std::time::Instant::now();
        if let Err(e) = self.ensure_sandbox(&pod).await {
            self.ctx.recorder.record(&pod, EventType::Warning, "FailedCreatePodSandBox", &e.to_string()).await;
            return Ok(Next::After(Duration::from_secs(5)));
        }
        let policy = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always").to_string();
        let sandboxed = began.elapsed();
        if let Err(e) = self.ensure_network(&pod).await {
            let msg = format!("Failed to create pod sandbox: {e}");
            self.ctx.recorder.record(&pod, EventType::Warning, "FailedCreatePodSandBox", &msg).await;
            self.write_status(&pod, &policy).await?;
            return Ok(Next::After(Duration::from_secs(5)));
        }
        let networked = began.elapsed();
        let volumes_ready = self.ensure_volumes(&pod).await;
        let mut wake = Duration::from_secs(if volumes_ready { 5 } else { 2 });
        for c in spec_containers(&pod) {
            if !volumes_ready && self.held_for_volumes(&c).await? {
                continue;
            }
            if let Some(d) = self.reconcile_container(&pod, &c, &policy).await? {
                wake = wake.min(d);
            }
        }
        let containers = began.elapsed();
        self.write_status(&pod, &policy).await?;
        tracing::debug!(
            pod = %self.name,
            sandbox_ms = sandboxed.as_millis() as u64,
            network_ms = (networked - sandboxed).as_millis() as u64,
            containers_ms = (containers - networked).as_millis() as u64,
            status_ms = (began.elapsed() - containers).as_millis() as u64,
            "pod reconciled"
        );
        Ok(Next::After(wake))
    }
}

fn host_network(pod: &Value) -> bool {
    pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
}

fn spec_containers(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn containers_of_memos(memos: &HashMap<String, Memo>) -> Vec<String> {
    memos.keys().cloned().collect()
}
