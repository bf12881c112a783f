//! What a container's run became and what comes next: restart decisions with kubelet's
//! back-off, OOM kills, the probe task of each run and the kill a failed liveness or startup
//! probe asks for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::agent::probe::{self, run::NodeProber, ContainerProbes, Kind, View};
use crate::agent::status::{self, Decision, Observed};
use crate::agent::{cgroups, container_id, Context};
use crate::events::EventType;
use crate::runtime::{self, RuntimeError, TaskState};

/// One run's probe task, seen from the worker.
#[derive(Debug, Clone)]
pub(super) struct ProbeRun {
    /// The run it probes: (restart count, start time).
    run: (i64, Option<jiff::Timestamp>),
    view: watch::Receiver<View>,
    cancel: CancellationToken,
    /// The kill its verdict asked for has been sent.
    kill_sent: bool,
}

impl ProbeRun {
    pub(super) fn view(&self) -> View {
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

impl Worker {
    /// Observes one container and starts it when its policy says so. Returns when to look again.
    pub(super) async fn reconcile_container(
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
        let now = self.ctx.clock.now();
        let memo = self.memos.entry(name.clone()).or_default();
        memo.seen = state.clone();
        let observed = match &state {
            Some(TaskState::Running { .. }) => Observed::Running { started_at: *memo.started_at.get_or_insert(now) },
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
        let now = self.ctx.clock.now();
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
                        memo.started_at = Some(self.ctx.clock.now());
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
    pub(super) async fn oom_killed(&mut self, name: &str, id: &str, exit: &runtime::Exit) -> bool {
        let memo = self.memos.entry(name.to_string()).or_default();
        if let Some((_, oom)) = memo.oom.filter(|(at, _)| *at == exit.exited_at) {
            return oom;
        }
        let cgroup = cgroups::container_path(&self.ctx.cgroup_parent, &self.uid, id);
        let kills = tokio::task::spawn_blocking(move || cgroups::oom_kills(&cgroup)).await.ok().flatten();
        let oom = exit.code != 0 && kills.is_some_and(|k| k > 0);
        self.memos.get_mut(name).expect("memo").oom = Some((exit.exited_at, oom));
        oom
    }

    /// Keeps one probe task per running container run: starts it for a new run (its probes
    /// start afresh, initial delay and startup included) and stops it when the run ends.
    pub(super) fn sync_probes(&mut self, pod: &Value, c: &Value, name: &str, id: &str, running: bool) {
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
            memo.started_at.map(|s| self.ctx.clock.now().duration_since(s).unsigned_abs()).unwrap_or_default();
        let mut machine = ContainerProbes::new(specs, Instant::now(), since_start);
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
    pub(super) async fn act_on_probes(&mut self, pod: &Value, c: &Value, name: &str, id: &str, policy: &str) {
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
    pub(super) fn stop_probes(&mut self) {
        for memo in self.memos.values_mut() {
            if let Some(p) = memo.probes.take() {
                p.cancel.cancel();
            }
        }
    }
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
