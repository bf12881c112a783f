//! One pod's worker: reconciles the pod's sandbox and containers toward its spec, and its
//! status toward what runs. Each running container with probes gets its own probe task
//! ([`super::probe::run::drive`]); the worker reads what the probes say when it writes the
//! status and kills a container whose liveness or startup probe failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::files;
use super::probe::{self, run::NodeProber, ContainerProbes, Kind, View};
use super::sandbox::Sandbox;
use super::status::{self, Decision, Observed};
use super::{container_id, log_path, Context, LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use crate::events::EventType;
use crate::objects::{meta, resource};
use crate::runtime::{self, ContainerRun, RuntimeError, TaskState};
use crate::store::{Command, Rejection, StoreError};

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

/// One run's probe task, seen from the worker.
#[derive(Debug, Clone)]
struct ProbeRun {
    /// The run it probes: (restart count, start time).
    run: (i64, Option<jiff::Timestamp>),
    view: watch::Receiver<View>,
    cancel: CancellationToken,
    /// The kill its verdict asked for has been sent.
    kill_sent: bool,
}

impl ProbeRun {
    fn view(&self) -> View {
        *self.view.borrow()
    }
}

/// Where a probe task reports: events through the recorder, changes by waking the worker.
struct ProbeReporter {
    ctx: Arc<Context>,
    pod: Value,
    view: watch::Sender<View>,
    poke: Option<mpsc::Sender<()>>,
}

impl probe::run::Reporter for ProbeReporter {
    async fn unhealthy(&self, kind: Kind, message: String) {
        let message = format!("{} probe failed: {message}", kind.label());
        self.ctx.recorder.record(&self.pod, EventType::Warning, "Unhealthy", &message).await;
    }

    fn changed(&self, view: View) {
        self.view.send_replace(view);
        if let Some(p) = &self.poke {
            let _ = p.try_send(());
        }
    }
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
            self.teardown(&containers_of_memos(&self.memos)).await;
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

    /// Sets up the pod's volumes and refreshes the projected ones ([`super::volumes`]). False
    /// while one cannot be set up, with a `FailedMount` event per volume (at most every 10 s
    /// while the messages stay the same); the worker retries every 2 s.
    async fn ensure_volumes(&mut self, pod: &Value) -> bool {
        let errors = self.volumes.ensure(&self.ctx.store, pod, &self.ctx.pod_dir(&self.uid)).await;
        if errors.is_empty() {
            self.mount_event = None;
            return true;
        }
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let joined = messages.join("\n");
        let due =
            self.mount_event.as_ref().is_none_or(|(m, at)| *m != joined || at.elapsed() >= Duration::from_secs(10));
        if due {
            for m in &messages {
                self.ctx.recorder.record(pod, EventType::Warning, "FailedMount", m).await;
            }
            self.mount_event = Some((joined, Instant::now()));
        }
        false
    }

    /// While the volumes are not ready a container that is not running waits (kubelet's
    /// `ContainerCreating`); a running one is reconciled as usual. True when held.
    async fn held_for_volumes(&mut self, c: &Value) -> Result<bool, RuntimeError> {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let state = self.ctx.runtime.state(&container_id(&self.uid, &name)).await?;
        if matches!(state, Some(TaskState::Running { .. })) {
            return Ok(false);
        }
        let memo = self.memos.entry(name).or_default();
        memo.seen = state;
        memo.waiting = None;
        Ok(true)
    }

    /// The container's environment ([`super::env`]), reading the ConfigMaps and Secrets it
    /// names. Errors are kubelet's `CreateContainerConfigError` (with a `Failed` event; the
    /// messages never carry values).
    async fn container_env(&self, pod: &Value, c: &Value) -> Result<Vec<(String, String)>, (String, String)> {
        let (config_maps, secrets) = super::env::references(c);
        let mut lookups = super::env::Lookups::default();
        let store_err = |e: StoreError| ("CreateContainerConfigError".to_string(), e.to_string());
        for n in config_maps {
            let cm = self.ctx.store.get(&resource::CONFIG_MAPS.key(), &self.namespace, &n).await.map_err(store_err)?;
            lookups.config_maps.insert(n, cm);
        }
        for n in secrets {
            let s = self.ctx.store.get(&resource::SECRETS.key(), &self.namespace, &n).await.map_err(store_err)?;
            lookups.secrets.insert(n, s);
        }
        let facts = super::env::PodFacts {
            node_name: self.ctx.node_name.clone(),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_ip: self.ctx.node_ip.to_string(),
        };
        super::env::resolve(pod, c, &facts, &lookups)
            .map_err(|e| ("CreateContainerConfigError".to_string(), e.to_string()))
    }

    /// The pod's files and the container's volume mounts (a volume mounted at `/etc/hosts` and
    /// the like replaces the pod's file, as in kubelet).
    async fn container_mounts(
        &self,
        pod: &Value,
        c: &Value,
        vars: &[(String, String)],
    ) -> Result<Vec<runtime::BindMount>, (String, String)> {
        let files = self.pod_files(pod).map_err(|e| ("CreateContainerError".to_string(), e))?;
        let (c, ready, vars) = (c.clone(), self.volumes.ready.clone(), vars.to_vec());
        let mounts = tokio::task::spawn_blocking(move || super::volumes::container_mounts(&c, &ready, &vars))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|e| ("CreateContainerConfigError".to_string(), e))?;
        let mut all: Vec<runtime::BindMount> =
            files.into_iter().filter(|f| !mounts.iter().any(|m| m.destination == f.destination)).collect();
        all.extend(mounts);
        Ok(all)
    }

    /// Wires the pod's network through CNI once (a cached result means it is already wired,
    /// e.g. before a daemon restart); host-network pods use the node's address.
    async fn ensure_network(&mut self, pod: &Value) -> Result<(), crate::net::cni::CniError> {
        if self.pod_ip.is_some() {
            return Ok(());
        }
        if host_network(pod) {
            self.pod_ip = Some(self.ctx.node_ip);
            return Ok(());
        }
        let cache = self.network_cache();
        if let Some(ip) = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|r| crate::net::cni::result_ip(&r))
        {
            self.pod_ip = ip.parse().ok();
            if self.pod_ip.is_some() {
                return Ok(());
            }
        }
        let result = self.ctx.cni.add(&self.attachment()).await?;
        let ip = crate::net::cni::result_ip(&result).and_then(|ip| ip.parse().ok()).ok_or_else(|| {
            crate::net::cni::CniError::BadResult {
                plugin: self.ctx.cni.list.name.clone(),
                message: "the result has no IPv4 address".into(),
            }
        })?;
        if let Err(e) = std::fs::write(&cache, serde_json::to_vec(&result).expect("json")) {
            tracing::warn!(error = %e, path = %cache.display(), "could not cache the CNI result");
        }
        self.pod_ip = Some(ip);
        Ok(())
    }

    fn network_cache(&self) -> std::path::PathBuf {
        self.ctx.pod_dir(&self.uid).join("network.json")
    }

    fn attachment(&self) -> crate::net::cni::Attachment {
        super::attachment(&self.uid, &self.namespace, &self.name, self.sandbox.netns())
    }

    /// Creates the sandbox once per worker (mount-table reads and namespace creation run off
    /// the async threads).
    async fn ensure_sandbox(&mut self, pod: &Value) -> Result<(), super::sandbox::SandboxError> {
        if self.sandbox_ready {
            return Ok(());
        }
        let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(meta::name(pod));
        let hostname: String = hostname.chars().take(63).collect();
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.create(&hostname)).await.unwrap_or_else(|e| {
            Err(super::sandbox::SandboxError::Create {
                dir: self.sandbox.dir.clone(),
                step: "namespace task",
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        self.sandbox_ready = true;
        Ok(())
    }

    /// Observes one container and starts it when its policy says so. Returns when to look again.
    async fn reconcile_container(
        &mut self,
        pod: &Value,
        c: &Value,
        policy: &str,
    ) -> Result<Option<Duration>, RuntimeError> {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let id = container_id(&self.uid, &name);
        let state = self.ctx.runtime.state(&id).await?;
        let oom = match &state {
            Some(TaskState::Exited(exit)) => self.oom_killed(&name, &id, exit).await,
            _ => false,
        };
        let memo = self.memos.entry(name.clone()).or_default();
        memo.seen = state.clone();
        let observed = match &state {
            Some(TaskState::Running { .. }) => {
                Observed::Running { started_at: *memo.started_at.get_or_insert_with(jiff::Timestamp::now) }
            }
            Some(TaskState::Exited(exit)) => Observed::Exited {
                code: exit.code,
                signal: exit.signal,
                started_at: memo.started_at,
                finished_at: exit.exited_at,
                oom,
            },
            Some(TaskState::Created) | None => Observed::Absent,
        };
        if matches!(observed, Observed::Running { .. }) && !memo.watching.swap(true, Ordering::SeqCst) {
            let rt = self.ctx.runtime.clone();
            let poke = self.poke.clone();
            let watching = memo.watching.clone();
            let wid = id.clone();
            tokio::spawn(async move {
                let _ = rt.wait(&wid).await;
                watching.store(false, Ordering::SeqCst);
                if let Some(p) = poke {
                    let _ = p.try_send(());
                }
            });
        }
        let running = matches!(observed, Observed::Running { .. });
        self.sync_probes(pod, c, &name, &id, running);
        self.act_on_probes(pod, c, &name, &id, policy).await;
        let memo = self.memos.get_mut(&name).expect("memo");
        // A container its probes killed restarts under OnFailure whatever its exit code.
        let policy = if memo.probe_killed && policy == "OnFailure" { "Always" } else { policy };
        let now = jiff::Timestamp::now();
        match status::decide(policy, &observed, memo.backoff_steps, now) {
            Decision::Keep => Ok(None),
            Decision::Wait(d) => {
                memo.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {} restarting failed container={name} pod={}_{}({})",
                        fmt_secs(status::restart_delay(memo.backoff_steps)),
                        self.name,
                        self.namespace,
                        self.uid
                    ),
                ));
                if let Observed::Exited { .. } = observed {
                    memo.last_state = status::state_json(&observed, &format!("containerd://{id}"));
                }
                Ok(Some(d))
            }
            Decision::Start => {
                if let Some(t) = memo.next_attempt.filter(|t| Instant::now() < *t) {
                    // Like kubelet, show the failure itself for a moment, then the back-off.
                    let shown = memo.failed_at.is_some_and(|f| f.elapsed() >= Duration::from_secs(2));
                    if shown && memo.waiting.as_ref().is_some_and(|(r, _)| r == "ErrImagePull") {
                        memo.waiting = Some((
                            "ImagePullBackOff".into(),
                            format!("Back-off pulling image {:?}", c["image"].as_str().unwrap_or("")),
                        ));
                    }
                    return Ok(Some(t.saturating_duration_since(Instant::now())));
                }
                let restart = matches!(observed, Observed::Exited { .. });
                if let Observed::Exited { started_at, finished_at, .. } = &observed {
                    memo.last_state = status::state_json(&observed, &format!("containerd://{id}"));
                    memo.restart_count += 1;
                    let ran = started_at.map(|s| finished_at.duration_since(s).unsigned_abs()).unwrap_or_default();
                    memo.backoff_steps = if ran >= status::BACKOFF_RESET { 0 } else { memo.backoff_steps + 1 };
                    memo.started_at = None;
                }
                if restart || state.is_some() {
                    self.ctx.runtime.remove(&id).await?;
                    memo.seen = None;
                }
                match self.start(pod, c, &id).await {
                    Ok(()) => {
                        let memo = self.memos.get_mut(&name).expect("memo");
                        memo.waiting = None;
                        memo.probe_killed = false;
                        memo.adopted = None;
                        memo.attempts = 0;
                        memo.next_attempt = None;
                        memo.started_at = Some(jiff::Timestamp::now());
                        // Probes (and their initial "not ready") from the start, before any
                        // status write could call the new run ready.
                        self.sync_probes(pod, c, &name, &id, true);
                        Ok(Some(Duration::from_millis(500)))
                    }
                    Err((reason, message)) => {
                        let memo = self.memos.get_mut(&name).expect("memo");
                        // A missing ConfigMap or Secret is retried at a steady pace (kubelet
                        // retries on every pod sync), not with the crash back-off.
                        let delay = if reason == "CreateContainerConfigError" {
                            Duration::from_secs(2)
                        } else {
                            status::backoff(memo.attempts)
                        };
                        memo.attempts += 1;
                        memo.next_attempt = Some(Instant::now() + delay);
                        memo.failed_at = Some(Instant::now());
                        memo.waiting = Some((reason, message));
                        Ok(Some(delay.min(Duration::from_secs(2))))
                    }
                }
            }
        }
    }

    /// Whether the kernel OOM-killed the run that ended with `exit`: a failed exit with a
    /// non-zero `oom_kill` count in the container's memory cgroup (which lives until the task
    /// is removed, also across `skerryd` restarts; see `cgroups`). Like containerd's CRI, a
    /// kill of any process of the container counts. Read once per exit.
    async fn oom_killed(&mut self, name: &str, id: &str, exit: &runtime::Exit) -> bool {
        let memo = self.memos.entry(name.to_string()).or_default();
        if let Some((_, oom)) = memo.oom.filter(|(at, _)| *at == exit.exited_at) {
            return oom;
        }
        let cgroup = super::cgroups::container_path(&self.ctx.cgroup_parent, &self.uid, id);
        let kills = tokio::task::spawn_blocking(move || super::cgroups::oom_kills(&cgroup)).await.ok().flatten();
        let oom = exit.code != 0 && kills.is_some_and(|k| k > 0);
        self.memos.get_mut(name).expect("memo").oom = Some((exit.exited_at, oom));
        oom
    }

    /// Keeps one probe task per running container run: starts it for a new run (its probes
    /// start afresh, initial delay and startup included) and stops it when the run ends.
    fn sync_probes(&mut self, pod: &Value, c: &Value, name: &str, id: &str, running: bool) {
        let memo = self.memos.get_mut(name).expect("memo");
        let run = (memo.restart_count, memo.started_at);
        if running && memo.probes.as_ref().is_some_and(|p| p.run == run) {
            return;
        }
        if let Some(old) = memo.probes.take() {
            old.cancel.cancel();
        }
        if !running {
            return;
        }
        let (specs, ignored) = probe::specs(c);
        let involved = json!({"kind": pod["kind"], "apiVersion": pod["apiVersion"], "metadata": pod["metadata"]});
        for i in ignored {
            tracing::warn!(pod = %self.name, namespace = %self.namespace, container = name, "{}", i.reason);
            let ctx = self.ctx.clone();
            let (involved, message) = (involved.clone(), format!("container {name}: {}", i.reason));
            tokio::spawn(
                async move { ctx.recorder.record(&involved, EventType::Warning, "ProbeIgnored", &message).await },
            );
        }
        if specs.is_empty() {
            memo.adopted = None;
            return;
        }
        let since_start =
            memo.started_at.map(|s| jiff::Timestamp::now().duration_since(s).unsigned_abs()).unwrap_or_default();
        let mut machine = ContainerProbes::new(specs, tokio::time::Instant::now(), since_start);
        if let Some((started, ready)) = memo.adopted.take() {
            machine.adopt(started, ready);
        }
        let (tx, rx) = watch::channel(machine.view());
        let cancel = self.stop.child_token();
        let reporter = ProbeReporter { ctx: self.ctx.clone(), pod: involved, view: tx, poke: self.poke.clone() };
        let prober = NodeProber { runtime: self.ctx.runtime.clone() };
        let pod_ip = self.pod_ip.map(|ip| ip.to_string()).unwrap_or_else(|| self.ctx.node_ip.to_string());
        tokio::spawn(probe::run::drive(machine, id.to_string(), pod_ip, prober, reporter, cancel.clone()));
        memo.probes = Some(ProbeRun { run, view: rx, cancel, kill_sent: false });
    }

    /// Kills a container whose liveness or startup probe failed, as kubelet: a `Killing` event,
    /// SIGTERM, SIGKILL after the grace period (the probe's, else the pod's). The stop runs in
    /// its own task; the exit wakes the worker, which restarts the container per its policy.
    async fn act_on_probes(&mut self, pod: &Value, c: &Value, name: &str, id: &str, policy: &str) {
        let memo = self.memos.get_mut(name).expect("memo");
        let Some(run) = memo.probes.as_mut() else { return };
        let Some(kind) = run.view().kill.filter(|_| !run.kill_sent) else { return };
        run.kill_sent = true;
        memo.probe_killed = true;
        let message = probe::killing_message(name, kind, policy);
        self.ctx.recorder.record(pod, EventType::Normal, "Killing", &message).await;
        let grace = c[kind.field()]["terminationGracePeriodSeconds"]
            .as_i64()
            .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30)
            .max(0);
        let (rt, id) = (self.ctx.runtime.clone(), id.to_string());
        tokio::spawn(async move {
            let _ = rt.kill(&id, libc::SIGTERM).await;
            if tokio::time::timeout(Duration::from_secs(grace as u64), rt.wait(&id)).await.is_err() {
                let _ = rt.kill(&id, libc::SIGKILL).await;
            }
        });
    }

    /// Stops every probe task (the pod is going).
    fn stop_probes(&mut self) {
        for memo in self.memos.values_mut() {
            if let Some(p) = memo.probes.take() {
                p.cancel.cancel();
            }
        }
    }

    /// Ensures the image, builds the spec and starts the container. Errors are
    /// (waiting reason, message) as Kubernetes shows them.
    async fn start(&mut self, pod: &Value, c: &Value, id: &str) -> Result<(), (String, String)> {
        let name = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let config = self.ensure_image(pod, c).await?;
        self.memos.get_mut(name).expect("memo").image_id = config.image_id.clone();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
        };
        let fail = |e: RuntimeError| ("CreateContainerError".to_string(), e.to_string());
        let vars = match self.container_env(pod, c).await {
            Ok(v) => v,
            Err(e) => return Err(self.config_error(pod, e).await),
        };
        let (command, cargs) = (
            super::env::expand_all(&strings(&c["command"]), &vars),
            super::env::expand_all(&strings(&c["args"]), &vars),
        );
        let args = runtime::merge_command(&config, &command, &cargs).map_err(fail)?;
        let mounts = match self.container_mounts(pod, c, &vars).await {
            Ok(m) => m,
            Err(e) => return Err(self.config_error(pod, e).await),
        };
        let env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env = runtime::merge_env(&config.env, &env);
        let cwd = c["workingDir"].as_str().map(String::from).unwrap_or(config.working_dir.clone());
        let user = pod
            .pointer("/spec/securityContext/runAsUser")
            .and_then(Value::as_i64)
            .map(|u| u.to_string())
            .or_else(|| (!config.user.is_empty()).then(|| config.user.clone()));
        let limits = super::resources::container_limits(c).map_err(|e| ("CreateContainerError".to_string(), e))?;
        let input = runtime::SpecInput {
            args,
            env,
            cwd,
            user,
            hostname: pod
                .pointer("/spec/hostname")
                .and_then(Value::as_str)
                .unwrap_or(&self.name)
                .chars()
                .take(63)
                .collect(),
            // A host-network pod shares the namespace the node's address lives in: skerryd's own
            // (which is not containerd's when skerryd runs inside a node namespace).
            netns: Some(if host_network(pod) {
                format!("/proc/{}/ns/net", std::process::id()).into()
            } else {
                self.sandbox.netns()
            }),
            ipcns: Some(self.sandbox.ipcns()),
            utsns: Some(self.sandbox.utsns()),
            mounts,
            cgroups_path: super::cgroups::container_path(&self.ctx.cgroup_parent, &self.uid, id),
            memory_limit: limits.memory_limit,
            // No swap beyond the limit, as containerd's CRI does where swap is accounted.
            memory_swap: limits.memory_limit.filter(|_| super::cgroups::swap_limit_supported()),
            cpu_shares: Some(limits.cpu_shares),
            cpu_quota: limits.cpu_quota,
            cpu_period: limits.cpu_period,
            ..Default::default()
        };
        let spec = runtime::build_spec(&input);
        let restart = self.memos[name].restart_count;
        let log = log_path(&self.ctx.data_dir, &self.uid, name, restart);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ("CreateContainerError".to_string(), format!("creating {}: {e}", dir.display())))?;
        }
        let labels = HashMap::from([
            (LABEL_POD_UID.to_string(), self.uid.clone()),
            (LABEL_POD_NAME.to_string(), self.name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), self.namespace.clone()),
            (LABEL_CONTAINER.to_string(), name.to_string()),
        ]);
        let run = ContainerRun { id: id.to_string(), image: image.to_string(), spec, labels, log_path: log };
        self.ctx.recorder.record(pod, EventType::Normal, "Created", &format!("Created container: {name}")).await;
        let run_began = std::time::Instant::now();
        let started = self.ctx.runtime.run(&run).await;
        tracing::debug!(pod = %self.name, container = name, run_ms = run_began.elapsed().as_millis() as u64, "container created and started");
        if let Ok(pid) = started {
            self.memos.get_mut(name).expect("memo").seen = Some(TaskState::Running { pid });
        }
        if let Err(e) = started {
            let _ = self.ctx.runtime.remove(id).await;
            let msg = e.to_string();
            self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {msg}")).await;
            let reason = if matches!(e, RuntimeError::NoCommand | RuntimeError::InvalidImage { .. }) {
                "CreateContainerError"
            } else {
                "RunContainerError"
            };
            return Err((reason.into(), msg));
        }
        self.ctx.recorder.record(pod, EventType::Normal, "Started", &format!("Started container {name}")).await;
        Ok(())
    }

    /// Records kubelet's `Failed` event for a container that cannot be configured; returns the
    /// error for its waiting state.
    async fn config_error(&self, pod: &Value, e: (String, String)) -> (String, String) {
        self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {}", e.1)).await;
        e
    }

    /// Writes the pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (once) and returns
    /// them as bind mounts.
    fn pod_files(&self, pod: &Value) -> Result<Vec<runtime::BindMount>, String> {
        let dir = self.ctx.pod_dir(&self.uid).join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(&self.name);
        let ip = self.pod_ip.map(|ip| ip.to_string());
        let ip = ip.as_deref();
        let policy = pod.pointer("/spec/dnsPolicy").and_then(Value::as_str).unwrap_or("ClusterFirst");
        let cluster_dns = match policy {
            "ClusterFirstWithHostNet" => true,
            "ClusterFirst" => !host_network(pod),
            _ => false,
        };
        let resolv = if cluster_dns {
            crate::net::dns::pod_resolv_conf(&self.namespace, self.ctx.cluster_dns, &self.ctx.cluster_domain)
        } else {
            super::files::host_resolv_conf()
        };
        let files = [
            ("hosts", "/etc/hosts", files::hosts(hostname, ip)),
            ("hostname", "/etc/hostname", format!("{hostname}\n")),
            ("resolv.conf", "/etc/resolv.conf", resolv),
        ];
        let mut mounts = Vec::new();
        for (file, destination, content) in files {
            let path = dir.join(file);
            if !path.exists() {
                std::fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            mounts.push(runtime::BindMount { source: path, destination: destination.into(), readonly: false });
        }
        Ok(mounts)
    }

    async fn ensure_image(&mut self, pod: &Value, c: &Value) -> Result<runtime::ImageConfig, (String, String)> {
        let image = c["image"].as_str().unwrap_or("");
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        let present =
            self.ctx.runtime.image_config(image).await.map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
        let rec = &self.ctx.recorder;
        match (policy, present) {
            ("Never", Some(config)) | ("IfNotPresent", Some(config)) => {
                rec.record(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image {image:?} already present on machine"),
                )
                .await;
                return Ok(config);
            }
            ("Never", None) => {
                let msg = format!("Container image {image:?} is not present with pull policy of Never");
                rec.record(pod, EventType::Warning, "ErrImageNeverPull", &msg).await;
                return Err(("ErrImageNeverPull".into(), msg));
            }
            (_, present) => {
                rec.record(pod, EventType::Normal, "Pulling", &format!("Pulling image {image:?}")).await;
                let started = Instant::now();
                let (tx, _rx) = mpsc::unbounded_channel();
                match self.ctx.runtime.pull(image, None, &self.ctx.insecure_registries, tx).await {
                    Ok(_) => {
                        let msg =
                            format!("Successfully pulled image {image:?} in {:.3}s", started.elapsed().as_secs_f64());
                        rec.record(pod, EventType::Normal, "Pulled", &msg).await;
                    }
                    Err(e) => {
                        if let Some(config) = present {
                            // Offline edge host: the local copy serves when the registry is out of reach.
                            let msg = format!(
                                "Failed to pull image {image:?}: {e}; using the image already present on the node"
                            );
                            rec.record(pod, EventType::Warning, "Failed", &msg).await;
                            return Ok(config);
                        }
                        let msg = format!("Failed to pull image {image:?}: {e}");
                        rec.record(pod, EventType::Warning, "Failed", &msg).await;
                        return Err(("ErrImagePull".into(), msg));
                    }
                }
            }
        }
        match self.ctx.runtime.image_config(image).await {
            Ok(Some(config)) => Ok(config),
            Ok(None) => Err(("ErrImagePull".into(), format!("image {image:?} is missing after the pull"))),
            Err(e) => Err(("ErrImagePull".into(), e.to_string())),
        }
    }

    /// Graceful stop: SIGTERM, then SIGKILL at the deadline; removes the pod once all is gone.
    async fn terminate(
        &mut self,
        pod: &Value,
        names: &[String],
    ) -> Result<Next, Box<dyn std::error::Error + Send + Sync>> {
        self.stop_probes();
        let deadline =
            meta::parse_time(pod.pointer("/metadata/deletionTimestamp")).unwrap_or_else(jiff::Timestamp::now);
        let mut running = Vec::new();
        for name in names {
            let id = container_id(&self.uid, name);
            if let Some(TaskState::Running { .. }) = self.ctx.runtime.state(&id).await? {
                running.push((name.clone(), id));
            }
        }
        if !running.is_empty() {
            let now = jiff::Timestamp::now();
            if !self.term_sent {
                self.term_sent = true;
                for (name, id) in &running {
                    self.ctx
                        .recorder
                        .record(pod, EventType::Normal, "Killing", &format!("Stopping container {name}"))
                        .await;
                    let _ = self.ctx.runtime.kill(id, libc::SIGTERM).await;
                }
                return Ok(Next::After(Duration::from_millis(200)));
            }
            if now < deadline {
                return Ok(Next::After(now.duration_until(deadline).unsigned_abs().min(Duration::from_millis(500))));
            }
            for (_, id) in &running {
                let _ = self.ctx.runtime.kill(id, libc::SIGKILL).await;
            }
            return Ok(Next::After(Duration::from_millis(200)));
        }
        self.teardown(names).await;
        let remove = Command::Delete {
            resource: resource::PODS.key(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: Some(self.uid.clone()),
        };
        match self.ctx.proposer.propose(remove).await {
            Ok(_)
            | Err(StoreError::Rejected(Rejection::NotFound { .. }))
            | Err(StoreError::Rejected(Rejection::Conflict { .. })) => Ok(Next::Done),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills and removes the containers, the sandbox and the pod's files.
    async fn teardown(&mut self, names: &[String]) {
        self.stop_probes();
        for name in names {
            let id = container_id(&self.uid, name);
            if let Err(e) = self.ctx.runtime.remove(&id).await {
                tracing::warn!(container = id, error = %e, "removing container failed");
            }
        }
        super::release_network(&self.ctx, &self.uid, &self.namespace, &self.name).await;
        self.pod_ip = None;
        self.sandbox_ready = false;
        let sandbox = self.sandbox.clone();
        let removed = tokio::task::spawn_blocking(move || sandbox.remove()).await.unwrap_or(Ok(()));
        if let Err(e) = removed {
            tracing::warn!(error = %e, "removing sandbox failed");
            return;
        }
        // Volume tmpfs mounts go first; while one stays mounted the pod's directory stays too.
        let pod_dir = self.ctx.pod_dir(&self.uid);
        self.volumes = Default::default();
        if tokio::task::spawn_blocking(move || super::volumes::tear_down(&pod_dir)).await.unwrap_or(false) {
            let _ = std::fs::remove_dir_all(self.ctx.pod_dir(&self.uid));
        } else {
            tracing::warn!(pod = %self.name, namespace = %self.namespace, "a volume of the pod is still mounted; keeping its directory");
        }
        super::cgroups::remove_tree(&super::cgroups::pod_path(&self.ctx.cgroup_parent, &self.uid));
    }

    async fn write_status(&mut self, pod: &Value, policy: &str) -> Result<(), StoreError> {
        let now = meta::now();
        let mut statuses = Vec::new();
        for c in spec_containers(pod) {
            let name = c["name"].as_str().unwrap_or("");
            let id = container_id(&self.uid, name);
            let memo = self.memos.get(name).cloned().unwrap_or_default();
            let state = match memo.seen.clone() {
                Some(TaskState::Running { .. }) if memo.waiting.is_none() => {
                    json!({"running": {"startedAt": memo.started_at.map(meta::timestamp).unwrap_or_else(|| now.clone())}})
                }
                Some(TaskState::Exited(exit)) if memo.waiting.is_none() => status::state_json(
                    &Observed::Exited {
                        code: exit.code,
                        signal: exit.signal,
                        started_at: memo.started_at,
                        finished_at: exit.exited_at,
                        oom: memo.oom.is_some_and(|(at, oom)| oom && at == exit.exited_at),
                    },
                    &format!("containerd://{id}"),
                ),
                _ => match &memo.waiting {
                    Some((reason, message)) => json!({"waiting": {"reason": reason, "message": message}}),
                    None => json!({"waiting": {"reason": "ContainerCreating"}}),
                },
            };
            let running = state["running"].is_object();
            let probes = memo.probes.as_ref().map(|p| p.view()).map(|v| (v.started, v.ready));
            let (started, ready) = status::started_ready(running, probes);
            let mut cs = json!({
                "name": name,
                "state": state,
                "lastState": memo.last_state,
                "ready": ready,
                "restartCount": memo.restart_count,
                "image": c["image"],
                "imageID": memo.image_id,
                "started": started,
            });
            if memo.started_at.is_some() || !running {
                cs["containerID"] = json!(format!("containerd://{id}"));
            }
            statuses.push(cs);
        }
        let mut new = pod.clone();
        let st = &mut new["status"];
        let phase = status::phase(policy, &statuses, statuses.len());
        let containers = spec_containers(pod);
        let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
        let ready = status::containers_ready(&statuses, &names);
        let why = ready.as_ref().err().map(|(reason, message)| (*reason, message.as_str()));
        let mut conditions = st["conditions"].as_array().cloned().unwrap_or_default();
        status::set_condition(&mut conditions, "PodReadyToStartContainers", self.sandbox_ready, &now);
        status::set_condition(&mut conditions, "Initialized", true, &now);
        status::set_condition_why(&mut conditions, "Ready", ready.is_ok(), why, &now);
        status::set_condition_why(&mut conditions, "ContainersReady", ready.is_ok(), why, &now);
        status::set_condition(&mut conditions, "PodScheduled", true, &now);
        st["phase"] = json!(phase);
        let node_ip = self.ctx.node_ip.to_string();
        st["hostIP"] = json!(node_ip);
        st["hostIPs"] = json!([{"ip": node_ip}]);
        if let Some(ip) = self.pod_ip {
            st["podIP"] = json!(ip.to_string());
            st["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        st["conditions"] = json!(conditions);
        st["containerStatuses"] = json!(statuses);
        if st["startTime"].is_null() {
            st["startTime"] = json!(now);
        }
        if pod.get("status") == new.get("status") {
            return Ok(());
        }
        // Status only: never collides with a change of the pod's spec or metadata.
        let write = Command::UpdateStatus {
            resource: resource::PODS.key(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: Some(self.uid.clone()),
            resource_version: None,
            status: new["status"].clone(),
        };
        match self.ctx.proposer.propose(write).await {
            Ok(_)
            | Err(StoreError::Rejected(Rejection::Conflict { .. }))
            | Err(StoreError::Rejected(Rejection::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
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

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
