//! The mirror against a fake source backed by a second store (the "server"), which can be cut
//! off and can answer `410 Expired` like a server whose history was compacted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::store::{EventType, Watcher};

const NODE: &str = "n1";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    List(&'static str),
    Watch(&'static str, u64),
    Get(String, String),
}

/// A server in a store: what the API would answer, filtered the way it filters.
struct Fake {
    server: Store,
    up: tokio::sync::watch::Sender<bool>,
    /// A watch from below this revision is answered with one `410 Expired` event.
    expired_below: AtomicU64,
    calls: Mutex<Vec<Call>>,
}

fn selected(stream: &Stream, object: &Value) -> bool {
    match stream.field_selector.as_deref().and_then(|s| s.split_once('=')) {
        Some((path, want)) => {
            object.pointer(&format!("/{}", path.replace('.', "/"))).and_then(Value::as_str) == Some(want)
        }
        None => true,
    }
}

impl Fake {
    fn new(server: Store) -> Arc<Fake> {
        Arc::new(Fake {
            server,
            up: tokio::sync::watch::channel(true).0,
            expired_below: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> Result<(), SourceError> {
        self.calls.lock().unwrap().push(call);
        if *self.up.borrow() {
            Ok(())
        } else {
            Err(SourceError::Unreachable("connection refused".into()))
        }
    }

    fn store_error(e: StoreError) -> SourceError {
        SourceError::Unreachable(e.to_string())
    }
}

impl Source for Fake {
    fn list<'a>(&'a self, stream: &'a Stream) -> BoxFuture<'a, Result<Listed, SourceError>> {
        Box::pin(async move {
            self.record(Call::List(stream.id))?;
            let (items, revision) = self.server.list(&stream.resource.key(), None).await.map_err(Fake::store_error)?;
            Ok(Listed {
                items: items.into_iter().filter(|o| selected(stream, o)).collect(),
                resource_version: revision,
            })
        })
    }

    fn watch<'a>(&'a self, stream: &'a Stream, from: u64) -> BoxFuture<'a, Result<Events, SourceError>> {
        Box::pin(async move {
            self.record(Call::Watch(stream.id, from))?;
            if from < self.expired_below.load(Ordering::SeqCst) {
                let status =
                    json!({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"});
                return Ok(futures::stream::iter([Ok(WatchEvent::Error(status))]).boxed());
            }
            let watcher = self.server.watch(from).await.map_err(Fake::store_error)?;
            let (stream, down) = (stream.clone(), self.up.subscribe());
            let events = futures::stream::unfold(Some((watcher, down)), move |state| {
                let stream = stream.clone();
                async move {
                    let (mut w, mut down): (Watcher, _) = state?;
                    loop {
                        let event = tokio::select! {
                            biased;
                            _ = down.wait_for(|up| !*up) => None,
                            event = w.next() => Some(event),
                        };
                        match event {
                            None => return Some((Err(SourceError::Unreachable("connection reset".into())), None)),
                            Some(Ok(e)) if e.resource == stream.resource.key() && selected(&stream, &e.object) => {
                                let event = match e.kind {
                                    EventType::Added => WatchEvent::Added(e.object.clone()),
                                    EventType::Modified => WatchEvent::Modified(e.object.clone()),
                                    EventType::Deleted => WatchEvent::Deleted(e.object.clone()),
                                };
                                return Some((Ok(event), Some((w, down))));
                            }
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => return Some((Err(SourceError::Unreachable(e.to_string())), None)),
                        }
                    }
                }
            });
            Ok(events.boxed())
        })
    }

    fn get<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, SourceError>> {
        Box::pin(async move {
            self.record(Call::Get(resource.key(), format!("{namespace}/{name}")))?;
            self.server.get(&resource.key(), namespace, name).await.map_err(Fake::store_error)
        })
    }
}

/// A server with the built-in namespaces, the fake in front of it, and an empty agent store.
struct Setup {
    server: Proposer,
    fake: Arc<Fake>,
    local: Store,
}

async fn setup() -> Setup {
    let (server_store, server) = crate::store::test_store().await;
    Setup { server, fake: Fake::new(server_store), local: Store::in_memory().unwrap() }
}

fn fast() -> Options {
    Options { backoff: (Duration::from_millis(10), Duration::from_millis(100)), resync: Duration::from_secs(3600) }
}

/// Runs the mirror until the guard drops.
struct Running {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task).await.expect("the mirror stops").unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn start(s: &Setup, options: Options) -> Running {
    let cancel = CancellationToken::new();
    let source: Arc<dyn Source> = s.fake.clone();
    let task = tokio::spawn(run_with(s.local.clone(), source, NODE.into(), options, cancel.clone()));
    Running { cancel, task: Some(task) }
}

/// Polls `check` until it holds, for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn local_names(store: &Store, resource: &str) -> Vec<String> {
    let (objects, _) = store.list(resource, None).await.unwrap();
    objects.iter().map(|o| format!("{}/{}", meta::namespace(o), meta::name(o))).collect()
}

fn pod(name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}, "spec": spec})
}

async fn create(server: &Proposer, resource: &str, object: Value) -> Value {
    server.propose(Command::Create { resource: resource.into(), object }).await.unwrap().object
}

async fn delete(server: &Proposer, resource: &str, namespace: &str, name: &str) {
    let command =
        Command::Delete { resource: resource.into(), namespace: namespace.into(), name: name.into(), uid: None };
    server.propose(command).await.unwrap();
}

/// Every change of `resource` the local store has made, as (type, name), in order.
async fn local_history(store: &Store, resource: &str) -> Vec<(EventType, String)> {
    let mut w = store.watch(0).await.unwrap();
    let last = store.revision().await.unwrap();
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    loop {
        let e = w.next().await.unwrap();
        if e.resource == resource {
            out.push((e.kind, meta::name(&e.object).to_string()));
        }
        if e.revision == last {
            break;
        }
    }
    out
}

fn pod_calls(calls: &[Call]) -> Vec<Call> {
    calls.iter().filter(|c| matches!(c, Call::List("pods") | Call::Watch("pods", _))).cloned().collect()
}

#[tokio::test]
async fn the_first_sync_copies_the_nodes_share_verbatim_and_then_follows() {
    let s = setup().await;
    create(&s.server, "pods", pod("a", NODE, json!({}))).await;
    create(&s.server, "pods", pod("elsewhere", "n2", json!({}))).await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default", "uid": "s"}, "spec": {"clusterIP": "10.43.0.5"}});
    create(&s.server, "services", svc).await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "uid": "n2"}});
    create(&s.server, "nodes", node).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unused", "namespace": "default"}});
    create(&s.server, "secrets", secret).await;

    assert!(!synced(&s.local, NODE).await.unwrap());
    let running = start(&s, fast());
    eventually("every stream synced", || async { synced(&s.local, NODE).await.unwrap() }).await;
    eventually("the pod", || async { local_names(&s.local, "pods").await == ["default/a"] }).await;
    assert_eq!(local_names(&s.local, "services").await, ["default/web"]);
    assert_eq!(local_names(&s.local, "nodes").await, ["/n2"]);
    assert!(local_names(&s.local, "namespaces").await.contains(&"/default".to_string()));
    assert!(local_names(&s.local, "secrets").await.is_empty(), "no pod uses the Secret");
    // Objects read back as the server has them, its resourceVersion included.
    let on_server = s.fake.server.get("pods", "default", "a").await.unwrap().unwrap();
    assert_eq!(s.local.get("pods", "default", "a").await.unwrap().unwrap(), on_server);
    assert_ne!(
        meta::resource_version(&on_server),
        s.local.revision().await.unwrap().to_string(),
        "the fixture keeps the server's and the local revisions apart"
    );

    // Live changes follow, the other node's pods still not.
    create(&s.server, "pods", pod("b", NODE, json!({}))).await;
    create(&s.server, "pods", pod("elsewhere-2", "n2", json!({}))).await;
    delete(&s.server, "services", "default", "web").await;
    eventually("the new pod", || async { local_names(&s.local, "pods").await == ["default/a", "default/b"] }).await;
    eventually("the Service gone", || async { local_names(&s.local, "services").await.is_empty() }).await;
    running.stop().await;
    assert!(!s.fake.calls().iter().any(|c| matches!(c, Call::Get(r, _) if r == "secrets")));
}

#[tokio::test]
async fn a_reconnect_and_a_restart_resume_from_the_stored_position() {
    let s = setup().await;
    create(&s.server, "pods", pod("a", NODE, json!({}))).await;
    let running = start(&s, fast());
    eventually("the pod", || async { local_names(&s.local, "pods").await == ["default/a"] }).await;
    let before = s.local.mirror_position("pods").await.unwrap().unwrap();

    // Cut off: the watch breaks, every call fails; the server goes on.
    s.fake.set_up(false);
    create(&s.server, "pods", pod("b", NODE, json!({}))).await;
    delete(&s.server, "pods", "default", "a").await;
    create(&s.server, "pods", pod("c", NODE, json!({}))).await;
    let failed = s.fake.calls().len();
    eventually("a failed call while cut off", || async { s.fake.calls().len() > failed + 1 }).await;
    s.fake.set_up(true);
    eventually("the changes made meanwhile", || async {
        local_names(&s.local, "pods").await == ["default/b", "default/c"]
    })
    .await;
    let calls = pod_calls(&s.fake.calls());
    assert_eq!(calls.iter().filter(|c| matches!(c, Call::List(_))).count(), 1, "never listed again: {calls:?}");
    let resumed: Vec<u64> =
        calls.iter().filter_map(|c| if let Call::Watch(_, from) = c { Some(*from) } else { None }).collect();
    assert!(resumed.len() >= 2 && resumed[1..].iter().all(|f| *f == before), "{resumed:?} after {before}");

    // A restart of the mirror (the agent's skerryd) resumes likewise.
    running.stop().await;
    let at_stop = s.local.mirror_position("pods").await.unwrap().unwrap();
    delete(&s.server, "pods", "default", "b").await;
    let calls_before = s.fake.calls().len();
    let running = start(&s, fast());
    eventually("the delete made while stopped", || async { local_names(&s.local, "pods").await == ["default/c"] })
        .await;
    let after = pod_calls(&s.fake.calls()[calls_before..]);
    assert_eq!(after[0], Call::Watch("pods", at_stop), "{after:?}");
    assert!(!after.iter().any(|c| matches!(c, Call::List(_))), "{after:?}");
    running.stop().await;

    // Each server change arrived exactly once, in order.
    assert_eq!(
        local_history(&s.local, "pods").await,
        [
            (EventType::Added, "a".to_string()),
            (EventType::Added, "b".to_string()),
            (EventType::Deleted, "a".to_string()),
            (EventType::Added, "c".to_string()),
            (EventType::Deleted, "b".to_string()),
        ]
    );
}

#[tokio::test]
async fn an_expired_position_relists_and_removes_what_vanished() {
    let s = setup().await;
    create(&s.server, "pods", pod("a", NODE, json!({}))).await;
    create(&s.server, "pods", pod("b", NODE, json!({}))).await;
    let running = start(&s, fast());
    eventually("the pods", || async { local_names(&s.local, "pods").await == ["default/a", "default/b"] }).await;

    s.fake.set_up(false);
    delete(&s.server, "pods", "default", "a").await;
    create(&s.server, "pods", pod("d", NODE, json!({}))).await;
    // The server's history no longer reaches back to the mirror's position.
    s.fake.expired_below.store(s.fake.server.revision().await.unwrap(), Ordering::SeqCst);
    s.fake.set_up(true);
    eventually("the relisted set", || async { local_names(&s.local, "pods").await == ["default/b", "default/d"] })
        .await;
    let lists = pod_calls(&s.fake.calls()).iter().filter(|c| matches!(c, Call::List(_))).count();
    assert_eq!(lists, 2, "listed again once");
    assert_eq!(s.local.mirror_position("pods").await.unwrap(), Some(s.fake.server.revision().await.unwrap()));
    running.stop().await;
    let history = local_history(&s.local, "pods").await;
    assert_eq!(&history[2..], [(EventType::Deleted, "a".to_string()), (EventType::Added, "d".to_string())]);
}

#[tokio::test]
async fn what_a_pod_uses_is_mirrored_while_the_pod_is_there() {
    let s = setup().await;
    let named = |kind: &str, name: &str| json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "default"}});
    create(&s.server, "secrets", named("Secret", "used")).await;
    create(&s.server, "secrets", named("Secret", "unused")).await;
    create(&s.server, "configmaps", named("ConfigMap", "settings")).await;
    let mut claim = named("PersistentVolumeClaim", "data");
    claim["spec"] = json!({"volumeName": "pv-1"});
    create(&s.server, "persistentvolumeclaims", claim).await;
    create(
        &s.server,
        "persistentvolumes",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}}),
    )
    .await;
    create(
        &s.server,
        "persistentvolumes",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-other"}}),
    )
    .await;
    let options = Options { resync: Duration::from_millis(100), ..fast() };
    let running = start(&s, options);
    eventually("synced", || async { synced(&s.local, NODE).await.unwrap() }).await;

    let spec = json!({
        "volumes": [
            {"name": "s", "secret": {"secretName": "used"}},
            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "m", "secret": {"secretName": "missing"}}
        ],
    });
    let mut web = pod("web", NODE, spec);
    web["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "settings"}}]);
    create(&s.server, "pods", web).await;
    eventually("what the pod uses", || async {
        local_names(&s.local, "secrets").await == ["default/used"]
            && local_names(&s.local, "configmaps").await == ["default/settings"]
            && local_names(&s.local, "persistentvolumeclaims").await == ["default/data"]
            && local_names(&s.local, "persistentvolumes").await == ["/pv-1"]
    })
    .await;
    let on_server = s.fake.server.get("secrets", "default", "used").await.unwrap().unwrap();
    assert_eq!(s.local.get("secrets", "default", "used").await.unwrap().unwrap(), on_server);

    // A change of a used Secret arrives with the next resync.
    let mut changed = on_server.clone();
    changed["data"] = json!({"k": "dg=="});
    s.server.propose(Command::Update { resource: "secrets".into(), object: changed }).await.unwrap();
    eventually("the changed Secret", || async {
        s.local.get("secrets", "default", "used").await.unwrap().unwrap()["data"]["k"] == "dg=="
    })
    .await;

    delete(&s.server, "pods", "default", "web").await;
    eventually("nothing used any more", || async {
        local_names(&s.local, "secrets").await.is_empty()
            && local_names(&s.local, "configmaps").await.is_empty()
            && local_names(&s.local, "persistentvolumeclaims").await.is_empty()
            && local_names(&s.local, "persistentvolumes").await.is_empty()
    })
    .await;
    running.stop().await;
    let asked: Vec<String> = s
        .fake
        .calls()
        .iter()
        .filter_map(|c| if let Call::Get(r, n) = c { Some(format!("{r} {n}")) } else { None })
        .collect();
    assert!(!asked.iter().any(|a| a.contains("unused") || a.contains("pv-other")), "{asked:?}");
    assert!(asked.contains(&"secrets default/missing".to_string()), "{asked:?}");
}

#[tokio::test]
async fn a_failed_fetch_keeps_what_is_mirrored() {
    let s = setup().await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "used", "namespace": "default"}});
    create(&s.server, "secrets", secret).await;
    create(&s.server, "pods", pod("web", NODE, json!({"volumes": [{"name": "s", "secret": {"secretName": "used"}}]})))
        .await;
    let options = Options { resync: Duration::from_millis(50), ..fast() };
    let running = start(&s, options);
    eventually("the Secret", || async { local_names(&s.local, "secrets").await == ["default/used"] }).await;
    // Cut off over several resyncs: the gets fail and nothing is removed.
    s.fake.set_up(false);
    let count = |calls: Vec<Call>| calls.iter().filter(|c| matches!(c, Call::Get(..))).count();
    let gets = count(s.fake.calls());
    eventually("failed resyncs", || async { count(s.fake.calls()) >= gets + 3 }).await;
    assert_eq!(local_names(&s.local, "secrets").await, ["default/used"]);
    running.stop().await;
}

#[test]
fn the_back_off_doubles_up_to_its_bound_and_spreads_each_wait() {
    let mut backoff = Backoff::new((Duration::from_millis(100), Duration::from_millis(800)));
    for step in [100, 200, 400, 800, 800, 800] {
        let wait = backoff.next();
        let step = Duration::from_millis(step);
        assert!(wait >= step / 2 && wait <= step, "{wait:?} for a step of {step:?}");
    }
    backoff.reset();
    assert!(backoff.next() <= Duration::from_millis(100));
}
