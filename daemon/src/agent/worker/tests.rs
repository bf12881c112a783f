//! The worker's decisions against fakes ([`FakeRuntime`], [`FakeNetwork`], [`FakeNamespaces`])
//! and an in-memory store, on tokio's paused clock: what it starts, signals and removes (the
//! fake's recorded calls, stamped by the test clock) and the pod status it writes.
//!
//! The store works on its own threads, and a paused runtime that waits for them jumps to its
//! next timer. A test that polled on a short timer would thus let paused time race ahead while
//! the store works, so every poll also waits for the store ([`Harness::eventually`]): time then
//! moves at most one poll per store operation, and the recorded times say when things happened
//! to within a fraction of a second.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::agent::sandbox::{FakeNamespaces, NamespaceCall};
use crate::agent::{container_id, probe, Context, LABEL_CONTAINER, LABEL_POD_UID};
use crate::clock::{Clock, PausedClock};
use crate::events::Recorder;
use crate::net::cni::{FakeNetwork, NetworkCall};
use crate::objects::{meta, resource};
use crate::runtime::fake::{Call, FakeRuntime, Op};
use crate::runtime::TaskState;
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

const UID: &str = "0b7c54a2-1d3e-4f5a-9b6c-7d8e9f0a1b2c";

struct Harness {
    ctx: Arc<Context>,
    runtime: Arc<FakeRuntime>,
    network: Arc<FakeNetwork>,
    namespaces: Arc<FakeNamespaces>,
    clock: PausedClock,
    store: Store,
    proposer: Proposer,
    _dir: tempfile::TempDir,
}

/// A context of fakes over an in-memory store (with the built-in namespaces): a node `n1` whose
/// data dir is a temporary directory and whose cgroup parent does not exist (so cgroup reads
/// find nothing and removals remove nothing).
async fn harness() -> Harness {
    let clock = PausedClock::starting_at(jiff::Timestamp::from_second(1_750_000_000).unwrap());
    let runtime = Arc::new(FakeRuntime::new(Arc::new(clock)));
    let network = Arc::new(FakeNetwork::default());
    let namespaces = Arc::new(FakeNamespaces::default());
    let (store, proposer) = crate::store::test_store().await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = Arc::new(Context {
        store: store.clone(),
        proposer: proposer.clone(),
        runtime: runtime.clone(),
        node_name: "n1".into(),
        data_dir: dir.path().to_path_buf(),
        insecure_registries: Vec::new(),
        cgroup_parent: format!("/skerry-unit-{}", uuid::Uuid::new_v4().simple()),
        cni: network.clone(),
        namespaces: namespaces.clone(),
        clock: Arc::new(clock),
        node_ip: "192.0.2.10".parse().unwrap(),
        cluster_dns: "10.43.0.10".parse().unwrap(),
        cluster_domain: "cluster.local".into(),
        recorder: Recorder::new(store.clone(), proposer.clone(), "kubelet", "n1".into()),
    });
    Harness { ctx, runtime, network, namespaces, clock, store, proposer, _dir: dir }
}

/// A pod `default/web` bound to `n1` with one container (named `app` in every test) and the
/// given spec fields.
fn pod(container: Value, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": UID},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "containers": [container]},
    });
    for (k, v) in spec.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    pod
}

fn app() -> String {
    container_id(UID, "app")
}

impl Harness {
    async fn create(&self, pod: &Value) -> Value {
        let create = Command::Create { resource: resource::PODS.key(), object: pod.clone() };
        self.proposer.propose(create).await.unwrap().object
    }

    async fn pod(&self) -> Option<Value> {
        self.store.get(&resource::PODS.key(), "default", "web").await.unwrap()
    }

    /// Changes the stored pod as a client would (retrying when the worker wrote in between).
    async fn update(&self, change: impl Fn(&Value) -> Value) {
        loop {
            let current = self.pod().await.expect("the pod");
            let update = Command::Update { resource: resource::PODS.key(), object: change(&current) };
            match self.proposer.propose(update).await {
                Ok(_) => return,
                Err(StoreError::Rejected(Rejection::Conflict { .. })) => continue,
                Err(e) => panic!("updating the pod: {e}"),
            }
        }
    }

    /// Runs a worker for the stored pod, as the agent does; returns its task and its poke.
    async fn start_worker(&self) -> (JoinHandle<()>, mpsc::Sender<()>) {
        let pod = self.pod().await.expect("the pod");
        let (poke, rx) = mpsc::channel(1);
        let worker = Worker::new(self.ctx.clone(), &pod);
        (tokio::spawn(worker.run(rx, CancellationToken::new())), poke)
    }

    /// The status of container `app`, once the worker has written one.
    async fn app_status(&self) -> Option<Value> {
        let pod = self.pod().await?;
        pod.pointer("/status/containerStatuses/0").cloned()
    }

    fn runs(&self) -> Vec<Call> {
        self.runtime.actions().into_iter().filter(|c| matches!(c.op, Op::Run(_))).collect()
    }

    /// Waits until the fake has run the container `n` times; returns when the last run began.
    async fn run_number(&self, n: usize) -> jiff::Timestamp {
        self.eventually(&format!("run #{n}"), || async { self.runs().get(n - 1).map(|c| c.at) }).await
    }

    /// Polls `check` every 10 ms of paused time until it answers, for at most 10 minutes of
    /// it. Each poll waits for the store, so polls cannot outrun the store's work.
    async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
            self.store.revision().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets `d` of paused time pass in 1 s steps, so the worker gets its passes in between.
    async fn pass_time(&self, d: Duration) {
        for _ in 0..d.as_secs() {
            self.store.revision().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The events recorded about the pod, as (reason, message).
    async fn events(&self) -> Vec<(String, String)> {
        self.ctx.recorder.flush().await;
        let (events, _) = self.store.list(&resource::EVENTS.key(), Some("default")).await.unwrap();
        events
            .iter()
            .map(|e| (e["reason"].as_str().unwrap_or("").into(), e["message"].as_str().unwrap_or("").into()))
            .collect()
    }
}

fn secs(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn adopts_a_running_task_after_a_daemon_restart() {
    let h = harness().await;
    h.runtime.add_image("busybox");
    let labels = HashMap::from([(LABEL_POD_UID.to_string(), UID.to_string()), (LABEL_CONTAINER.into(), "app".into())]);
    h.runtime.add_running(&app(), labels);
    // What the previous skerryd left: the status after three restarts, and the CNI result.
    let mut p = pod(json!({"name": "app", "image": "busybox"}), json!({}));
    let last = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2025-06-15T14:00:00Z",
                      "finishedAt": "2025-06-15T14:01:00Z", "containerID": format!("containerd://{}", app())}});
    p["status"] = json!({
        "phase": "Running", "podIP": "10.42.0.7",
        "containerStatuses": [{
            "name": "app", "state": {"running": {"startedAt": "2025-06-15T14:01:01Z"}}, "lastState": last,
            "ready": true, "restartCount": 3, "image": "busybox", "imageID": "sha256:fake", "started": true,
            "containerID": format!("containerd://{}", app()),
        }],
    });
    h.create(&p).await;
    let pod_dir = h.ctx.pod_dir(UID);
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(pod_dir.join("network.json"), r#"{"cniVersion":"1.0.0","ips":[{"address":"10.42.0.7/24"}]}"#)
        .unwrap();

    let (_worker, _poke) = h.start_worker().await;
    let pod = h
        .eventually("the adopted pod's status", || async {
            h.pod().await.filter(|p| p.pointer("/status/conditions").is_some())
        })
        .await;
    // A minute of passes later, still nothing was started, killed or removed.
    h.pass_time(Duration::from_secs(60)).await;
    assert_eq!(h.runtime.actions(), vec![], "adoption touches no container");
    assert!(matches!(h.runtime.task(&app()), Some(TaskState::Running { .. })));
    assert!(!h.network.calls().iter().any(|c| matches!(c, NetworkCall::Add(_))), "the cached network is kept");

    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 3);
    assert_eq!(cs["state"], json!({"running": {"startedAt": "2025-06-15T14:01:01Z"}}));
    assert_eq!(cs["lastState"], last);
    assert_eq!((cs["ready"].as_bool(), cs["started"].as_bool()), (Some(true), Some(true)));
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["podIP"], "10.42.0.7");
    assert_eq!(h.pod().await.unwrap()["status"]["containerStatuses"][0]["restartCount"], 3);
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_ten_seconds_doubling() {
    let h = harness().await;
    h.runtime.add_image("busybox");
    h.create(&pod(json!({"name": "app", "image": "busybox"}), json!({}))).await;
    let (_worker, _poke) = h.start_worker().await;

    h.run_number(1).await;
    let exits: Vec<jiff::Timestamp> = {
        let mut exits = Vec::new();
        for n in 1..=3 {
            h.run_number(n).await;
            exits.push(h.clock.now());
            h.runtime.exit(&app(), 1);
            if n == 2 {
                // While it waits, the status says why, with kubelet's message.
                let cs = h
                    .eventually("CrashLoopBackOff", || async {
                        h.app_status().await.filter(|cs| cs["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                    })
                    .await;
                let message = cs["state"]["waiting"]["message"].as_str().unwrap();
                assert_eq!(message, format!("back-off 10s restarting failed container=app pod=web_default({UID})"));
                assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
                assert_eq!(cs["restartCount"], 1);
            }
        }
        exits
    };
    h.run_number(4).await;
    let runs: Vec<jiff::Timestamp> = h.runs().iter().map(|c| c.at).collect();
    assert_eq!(runs.len(), 4);
    // The first restart is at once (the worker's next pass), then after 10 s, then 20 s.
    let waits: Vec<f64> = (0..3).map(|i| secs(exits[i], runs[i + 1])).collect();
    assert!(waits[0] < 2.0, "first restart at once: {waits:?}");
    assert!((10.0..20.0).contains(&waits[1]), "second restart after 10 s: {waits:?}");
    assert!((20.0..40.0).contains(&waits[2]), "third restart after 20 s: {waits:?}");
    // Each restart removed the exited container before running it again.
    let removes = h.runtime.actions().iter().filter(|c| c.op == Op::Remove(app())).count();
    assert_eq!(removes, 3);
    let cs =
        h.eventually("restart count 3", || async { h.app_status().await.filter(|cs| cs["restartCount"] == 3) }).await;
    assert!(cs["state"]["running"].is_object(), "{cs}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_liveness_probe_kills_and_restarts_the_container() {
    let h = harness().await;
    h.runtime.add_image("busybox");
    // The fake runs no exec, so this probe fails every time: the third failure (after 2 × 5 s)
    // is the kill.
    let probe = json!({"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 5, "failureThreshold": 3});
    let p = pod(json!({"name": "app", "image": "busybox", "livenessProbe": probe}), json!({}));
    h.create(&p).await;
    let (_worker, _poke) = h.start_worker().await;

    let started = h.run_number(1).await;
    let restarted = h.run_number(2).await;
    let actions: Vec<Op> = h.runtime.actions().into_iter().map(|c| c.op).collect();
    assert_eq!(
        actions,
        vec![Op::Run(app()), Op::Kill(app(), libc::SIGTERM), Op::Remove(app()), Op::Run(app())],
        "SIGTERM (obeyed, so no SIGKILL), then the restart"
    );
    let kill = h.runtime.actions()[1].at;
    assert!(secs(started, kill) >= 10.0, "killed only after three failed probes: {}", secs(started, kill));
    assert!(secs(kill, restarted) < 2.0, "restarted at once (first restart)");
    let probes = h.runtime.calls().iter().filter(|c| matches!(&c.op, Op::Exec(id, _) if *id == app())).count();
    assert!(probes >= 3, "{probes} probes");

    let cs = h
        .eventually("restart count 1", || async {
            h.app_status().await.filter(|cs| cs["restartCount"] == 1 && cs["state"]["running"].is_object())
        })
        .await;
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 128 + libc::SIGTERM);
    assert_eq!(cs["lastState"]["terminated"]["signal"], libc::SIGTERM);
    let events = h.events().await;
    let killing = probe::killing_message("app", probe::Kind::Liveness, "Always");
    assert!(events.contains(&("Killing".into(), killing)), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed: exec failed")));
}

#[tokio::test(start_paused = true)]
async fn graceful_deletion_sigterm_then_sigkill_after_the_grace_period_then_removal() {
    let h = harness().await;
    h.runtime.add_image("busybox");
    h.runtime.ignore_sigterm(&app());
    h.create(&pod(json!({"name": "app", "image": "busybox"}), json!({"terminationGracePeriodSeconds": 30}))).await;
    let (worker, poke) = h.start_worker().await;
    h.run_number(1).await;
    h.eventually("running", || async { h.app_status().await.filter(|cs| cs["state"]["running"].is_object()) }).await;

    // What the API does on `delete`: deletionTimestamp = now + the grace period. (The store
    // write lets paused time jump to the worker's next pass, so "when it was asked" is taken
    // after it.)
    h.update(|p| crate::objects::pod::begin_deletion(p, 30, h.clock.now())).await;
    let asked = h.clock.now();
    let _ = poke.try_send(());
    let deleting = h.pod().await.unwrap();
    let deadline = meta::parse_time(deleting.pointer("/metadata/deletionTimestamp")).unwrap();

    h.eventually("the pod's removal", || async { h.pod().await.is_none().then_some(()) }).await;
    let actions = h.runtime.actions();
    let ops: Vec<Op> = actions.iter().map(|c| c.op.clone()).collect();
    assert_eq!(
        ops,
        vec![Op::Run(app()), Op::Kill(app(), libc::SIGTERM), Op::Kill(app(), libc::SIGKILL), Op::Remove(app())]
    );
    let (term, kill) = (actions[1].at, actions[2].at);
    assert!(secs(asked, term).abs() < 2.0, "SIGTERM when the deletion is asked for");
    assert!(secs(term, deadline) > 20.0, "SIGTERM well before the deadline");
    assert!(kill >= deadline, "SIGKILL not before the grace period ends ({kill} < {deadline})");
    assert!(secs(deadline, kill) < 2.0, "SIGKILL when the grace period ends");
    assert!(actions[3].at >= kill);
    assert_eq!(h.runtime.task(&app()), None);
    assert!(h.network.calls().contains(&NetworkCall::Del(UID.into())), "{:?}", h.network.calls());
    let dir = h.ctx.pod_dir(UID).join("ns");
    assert_eq!(h.namespaces.calls().last(), Some(&NamespaceCall::Remove { dir }));
    assert!(!h.ctx.pod_dir(UID).exists(), "the pod's directory is gone");
    tokio::time::timeout(Duration::from_secs(10), worker).await.expect("the worker ends").unwrap();
    let events = h.events().await;
    assert!(events.contains(&("Killing".into(), "Stopping container app".into())), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_with_pull_policy_never_starts_nothing() {
    let h = harness().await;
    h.create(&pod(json!({"name": "app", "image": "busybox", "imagePullPolicy": "Never"}), json!({}))).await;
    let (_worker, _poke) = h.start_worker().await;

    let cs = h
        .eventually("ErrImageNeverPull", || async {
            h.app_status().await.filter(|cs| cs["state"]["waiting"]["reason"] == "ErrImageNeverPull")
        })
        .await;
    let message = "Container image \"busybox\" is not present with pull policy of Never";
    assert_eq!(cs["state"]["waiting"]["message"], message);
    assert_eq!((cs["ready"].as_bool(), cs["restartCount"].as_i64()), (Some(false), Some(0)));
    h.pass_time(Duration::from_secs(60)).await;
    assert_eq!(h.runtime.actions(), vec![], "no pull, no run");
    assert_eq!(h.pod().await.unwrap()["status"]["phase"], "Pending");
    assert!(h.events().await.contains(&("ErrImageNeverPull".into(), message.into())));
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_backs_off_and_starts_nothing_until_the_image_comes() {
    let h = harness().await;
    h.create(&pod(json!({"name": "app", "image": "nginx:1.27"}), json!({}))).await;
    let (_worker, _poke) = h.start_worker().await;

    let cs = h
        .eventually("ErrImagePull", || async {
            h.app_status().await.filter(|cs| cs["state"]["waiting"]["reason"] == "ErrImagePull")
        })
        .await;
    let message = "Failed to pull image \"nginx:1.27\": pulling nginx:1.27 failed: not found in the fake registry";
    assert_eq!(cs["state"]["waiting"]["message"], message);
    let cs = h
        .eventually("ImagePullBackOff", || async {
            h.app_status().await.filter(|cs| cs["state"]["waiting"]["reason"] == "ImagePullBackOff")
        })
        .await;
    assert_eq!(cs["state"]["waiting"]["message"], "Back-off pulling image \"nginx:1.27\"");

    let pulls = |n: usize| {
        let h = &h;
        move || async move {
            let pulls: Vec<jiff::Timestamp> =
                h.runtime.actions().iter().filter(|c| matches!(c.op, Op::Pull(_))).map(|c| c.at).collect();
            (pulls.len() >= n).then_some(pulls)
        }
    };
    let tries = h.eventually("three pulls", pulls(3)).await;
    assert!(h.runs().is_empty(), "nothing starts without the image");
    assert!(secs(tries[0], tries[1]) >= 10.0, "retried after 10 s: {tries:?}");
    assert!(secs(tries[1], tries[2]) >= 20.0, "then after 20 s: {tries:?}");

    // The image appears in the registry: the next attempt pulls it and starts the container.
    h.runtime.add_to_registry("nginx:1.27");
    h.run_number(1).await;
    let tries = h.eventually("four pulls", pulls(4)).await;
    assert!(secs(tries[2], tries[3]) >= 40.0, "the next pull waits its back-off: {tries:?}");
    h.eventually("running", || async { h.app_status().await.filter(|cs| cs["state"]["running"].is_object()) }).await;
    let cs = h.app_status().await.unwrap();
    assert_eq!(cs["imageID"], "sha256:fake-docker.io-library-nginx-1.27");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_stays_until_its_container_is_removed() {
    let h = harness().await;
    h.runtime.add_image("busybox");
    h.create(&pod(json!({"name": "app", "image": "busybox"}), json!({"terminationGracePeriodSeconds": 1}))).await;
    let (worker, poke) = h.start_worker().await;
    h.run_number(1).await;
    h.eventually("running", || async { h.app_status().await.filter(|cs| cs["state"]["running"].is_object()) }).await;

    // The container's shim stops answering (a shim blocked on an exec FIFO), then the pod is
    // deleted: the pod stays, Terminating, while its container cannot be removed.
    h.runtime.wedge(&app());
    h.update(|p| crate::objects::pod::begin_deletion(p, 1, h.clock.now())).await;
    let _ = poke.try_send(());
    h.pass_time(Duration::from_secs(30)).await;
    assert!(h.pod().await.is_some(), "the pod is not removed while its container stays");
    assert!(h.runtime.task(&app()).is_some());
    assert!(!worker.is_finished(), "the worker keeps trying");

    // Once the shim answers again, the container goes, then the pod.
    h.runtime.unwedge(&app());
    h.eventually("the pod's removal", || async { h.pod().await.is_none().then_some(()) }).await;
    assert_eq!(h.runtime.task(&app()), None);
    tokio::time::timeout(Duration::from_secs(10), worker).await.expect("the worker ends").unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_pod_removed_from_the_store_is_torn_down_until_its_container_is_gone() {
    let h = harness().await;
    h.runtime.add_image("busybox");
    let created = h.create(&pod(json!({"name": "app", "image": "busybox"}), json!({}))).await;
    let (worker, poke) = h.start_worker().await;
    h.run_number(1).await;
    h.eventually("running", || async { h.app_status().await.filter(|cs| cs["state"]["running"].is_object()) }).await;

    // A force delete removes the pod from the store at once; the worker is left to clean up.
    h.runtime.wedge(&app());
    h.proposer.propose(Command::delete_of(resource::PODS.key(), &created)).await.unwrap();
    let _ = poke.try_send(());
    h.pass_time(Duration::from_secs(30)).await;
    assert!(h.runtime.task(&app()).is_some());
    assert!(!worker.is_finished(), "the worker does not forget the container");
    let removes = h.runtime.actions().iter().filter(|c| c.op == Op::Remove(app())).count();
    assert!(removes > 1, "the removal is retried ({removes} attempts)");

    h.runtime.unwedge(&app());
    h.eventually("the worker's end", || async { worker.is_finished().then_some(()) }).await;
    worker.await.unwrap();
    assert_eq!(h.runtime.task(&app()), None);
    assert!(!h.ctx.pod_dir(UID).exists(), "the pod's directory is gone");
}
