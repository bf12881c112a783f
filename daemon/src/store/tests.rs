//! Store tests against in-memory and on-disk SQLite databases.

use serde_json::json;

use super::*;
use crate::objects::resource;

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}})
}

fn service(name: &str, ip: &str, node_ports: &[i64]) -> Value {
    let ports: Vec<Value> =
        node_ports.iter().enumerate().map(|(i, n)| json!({"port": 80 + i as i64, "nodePort": n})).collect();
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
           "spec": {"type": "NodePort", "clusterIP": ip, "ports": ports}})
}

fn create(resource: &str, object: Value) -> Command {
    Command::Create { resource: resource.into(), object }
}

fn rejection(result: Result<Applied, StoreError>) -> Rejection {
    match result {
        Err(StoreError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn revisions_increase_and_conflicts_are_detected() {
    let (store, proposer) = test_store().await;
    let a = proposer.propose(create("pods", pod("a"))).await.unwrap();
    let b = proposer.propose(create("pods", pod("b"))).await.unwrap();
    assert!(b.revision > a.revision);
    assert_eq!(meta::resource_version(&a.object), a.revision.to_string());

    let dup = proposer.propose(create("pods", pod("a"))).await;
    assert!(matches!(rejection(dup), Rejection::AlreadyExists { .. }));

    let mut stale = a.object.clone();
    stale["metadata"]["labels"] = json!({"x": "1"});
    let updated = proposer.propose(Command::Update { resource: "pods".into(), object: stale.clone() }).await.unwrap();
    assert!(updated.revision > b.revision);
    let again = proposer.propose(Command::Update { resource: "pods".into(), object: stale }).await;
    assert!(matches!(rejection(again), Rejection::Conflict { .. }));

    let (list, rev) = store.list("pods", Some("default")).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(rev, updated.revision);
    assert!(store.list("pods", Some("other")).await.unwrap().0.is_empty());

    let wrong_uid = Command::Delete {
        resource: "pods".into(),
        namespace: "default".into(),
        name: "a".into(),
        uid: Some("x".into()),
    };
    assert!(matches!(rejection(proposer.propose(wrong_uid).await), Rejection::Conflict { .. }));
    let del = Command::Delete {
        resource: "pods".into(),
        namespace: "default".into(),
        name: "a".into(),
        uid: Some("uid-a".into()),
    };
    proposer.propose(del.clone()).await.unwrap();
    assert!(store.get("pods", "default", "a").await.unwrap().is_none());
    assert!(matches!(rejection(proposer.propose(del).await), Rejection::NotFound { .. }));
}

#[tokio::test]
async fn watch_replays_history_then_follows() {
    let (store, proposer) = test_store().await;
    let first = proposer.propose(create("pods", pod("a"))).await.unwrap();
    proposer.propose(create("pods", pod("b"))).await.unwrap();
    let mut w = store.watch(first.revision).await.unwrap();
    let e = w.next().await.unwrap();
    assert_eq!((e.kind, meta::name(&e.object)), (EventType::Added, "b"));
    let p2 = proposer.clone();
    tokio::spawn(async move {
        p2.propose(Command::Delete {
            resource: "pods".into(),
            namespace: "default".into(),
            name: "a".into(),
            uid: None,
        })
        .await
        .unwrap();
    });
    let e = w.next().await.unwrap();
    assert_eq!((e.kind, meta::name(&e.object)), (EventType::Deleted, "a"));
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path).unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "uid": "ns"}});
        Proposer::local(&store).propose(create("namespaces", ns)).await.unwrap();
        Proposer::local(&store).propose(create("pods", pod("a"))).await.unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.get("pods", "default", "a").await.unwrap().is_some());
    assert_eq!(store.revision().await.unwrap(), 2);
    assert_eq!(store.applied_index().await.unwrap(), 2);
    store.compact().await.unwrap();
}

#[tokio::test]
async fn a_batch_applied_twice_changes_nothing_the_second_time() {
    let (store, _) = test_store().await;
    let start = store.applied_index().await.unwrap();
    let batch = vec![
        (start + 1, create("pods", pod("a"))),
        (start + 2, create("pods", pod("a"))),
        (start + 5, create("pods", pod("b"))),
    ];
    let answers = store.apply(batch.clone()).await.unwrap();
    assert!(answers[0].is_ok());
    assert!(matches!(answers[1], Err(Rejection::AlreadyExists { .. })), "a rejection is an answer: {answers:?}");
    assert!(answers[2].is_ok(), "a rejected command does not stop the batch");
    let revision = store.revision().await.unwrap();
    assert_eq!(store.applied_index().await.unwrap(), start + 5, "indexes may have gaps");

    let again = store.apply(batch).await.unwrap();
    assert!(again.iter().all(|a| matches!(a, Err(Rejection::Replayed { .. }))), "{again:?}");
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.list("pods", None).await.unwrap().0.len(), 2);

    // Revisions stay dense whatever the indexes: the next command gets the next revision.
    let next = store.apply(vec![(start + 9, create("pods", pod("c")))]).await.unwrap();
    assert_eq!(next[0].as_ref().unwrap().revision, revision + 1);
}

#[tokio::test]
async fn a_fault_fails_the_whole_batch_and_applies_nothing() {
    let (store, proposer) = test_store().await;
    proposer.propose(create("pods", pod("a"))).await.unwrap();
    // A corrupt row: reading it in `apply` is a fault, not an answer.
    Store::run_on(&store.inner.writer, |conn| {
        conn.execute("UPDATE objects SET data = '{' WHERE resource = 'pods' AND name = 'a'", [])?;
        Ok(())
    })
    .await
    .unwrap();
    let (revision, applied) = (store.revision().await.unwrap(), store.applied_index().await.unwrap());
    let batch = vec![
        (applied + 1, create("pods", pod("b"))),
        (applied + 2, Command::Update { resource: "pods".into(), object: pod("a") }),
    ];
    let fault = store.apply(batch).await.unwrap_err();
    assert!(matches!(fault, StoreError::Json(_)) && fault.is_fault(), "{fault:?}");
    assert!(store.get("pods", "default", "b").await.unwrap().is_none(), "the batch was rolled back");
    assert_eq!((store.revision().await.unwrap(), store.applied_index().await.unwrap()), (revision, applied));
    // Through the proposer, the caller gets the fault too; corruption tells the daemon to stop.
    let e = proposer.propose(Command::Update { resource: "pods".into(), object: pod("a") }).await.unwrap_err();
    assert!(e.is_fault(), "{e:?}");
    let why = futures::FutureExt::now_or_never(store.corrupted()).expect("corruption was reported");
    assert!(why.contains("corrupt object"), "{why}");
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_that_changes_nothing() {
    let (store, proposer) = test_store().await;
    // Cap the database at its current size: the next page it needs is "disk full".
    Store::run_on(&store.inner.writer, |conn| {
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    })
    .await
    .unwrap();
    let (revision, applied) = (store.revision().await.unwrap(), store.applied_index().await.unwrap());
    let mut big = pod("big");
    big["data"] = json!("x".repeat(64 * 1024));
    let e = proposer.propose(create("pods", big.clone())).await.unwrap_err();
    assert!(e.is_disk_full() && !e.is_corruption(), "{e:?}");
    let api = crate::api::ApiError::from(e);
    assert_eq!(api.code.as_u16(), 507, "{}", api.message);
    assert!(api.message.contains("disk is full"), "{}", api.message);
    assert_eq!((store.revision().await.unwrap(), store.applied_index().await.unwrap()), (revision, applied));
    assert!(futures::FutureExt::now_or_never(store.corrupted()).is_none(), "a full disk is not corruption");
    // Space again: the same write goes through.
    Store::run_on(&store.inner.writer, |conn| {
        conn.query_row("PRAGMA max_page_count = 1073741823", [], |_| Ok(()))?;
        Ok(())
    })
    .await
    .unwrap();
    proposer.propose(create("pods", big)).await.unwrap();
}

#[tokio::test]
async fn node_ports_and_cluster_ips_are_unique_inside_apply() {
    let (store, proposer) = test_store().await;
    // Two creations racing for the same NodePort: exactly one wins, the other names the owner.
    let (x, y) = tokio::join!(
        proposer.propose(create("services", service("x", "10.43.0.3", &[30080]))),
        proposer.propose(create("services", service("y", "10.43.0.4", &[30080]))),
    );
    let (won, lost) = if x.is_ok() { (x, y) } else { (y, x) };
    let owner = meta::name(&won.unwrap().object).to_string();
    match rejection(lost) {
        Rejection::Invalid { field, value, reason, .. } => {
            assert_eq!((field.as_str(), value.as_str()), ("spec.ports[0].nodePort", "30080"));
            assert_eq!(
                reason,
                format!("provided port is already allocated (by service default/{owner}); choose another or omit it")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.list("services", None).await.unwrap().0.len(), 1);
    // The same ClusterIP is refused with the API server's words.
    let e = proposer.propose(create("services", service("z", "10.43.0.3", &[]))).await;
    let Rejection::Invalid { field, reason, .. } = rejection(e) else { panic!() };
    assert_eq!(field, "spec.clusterIPs");
    assert!(reason.contains(&format!("provided IP is already allocated (by service default/{owner})")), "{reason}");

    // An update gives up what it no longer holds; a delete gives up everything.
    let mut moved = store.get("services", "default", &owner).await.unwrap().unwrap();
    moved["spec"]["ports"][0]["nodePort"] = json!(30081);
    proposer.propose(Command::Update { resource: "services".into(), object: moved.clone() }).await.unwrap();
    proposer.propose(create("services", service("a", "10.43.0.5", &[30080]))).await.unwrap();
    let taken = proposer.propose(create("services", service("b", "10.43.0.6", &[30081]))).await;
    assert!(matches!(rejection(taken), Rejection::Invalid { .. }));
    proposer.propose(Command::delete_of("services", &moved)).await.unwrap();
    proposer.propose(create("services", service("b", "10.43.0.3", &[30081]))).await.unwrap();
    // Pod CIDRs of nodes likewise.
    let node = |name: &str| json!({"kind": "Node", "metadata": {"name": name, "uid": name}, "spec": {"podCIDR": "10.42.1.0/24"}});
    proposer.propose(create("nodes", node("n1"))).await.unwrap();
    let Rejection::Invalid { reason, .. } = rejection(proposer.propose(create("nodes", node("n2"))).await) else {
        panic!()
    };
    assert!(reason.contains("by node n1"), "{reason}");
}

#[tokio::test]
async fn new_objects_need_an_open_namespace() {
    let (store, proposer) = test_store().await;
    let mut elsewhere = pod("a");
    elsewhere["metadata"]["namespace"] = json!("nowhere");
    let e = rejection(proposer.propose(create("pods", elsewhere)).await);
    assert_eq!(e, Rejection::NotFound { resource: "namespaces".into(), name: "nowhere".into() });

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "uid": "shop"}});
    let ns = proposer.propose(create("namespaces", ns)).await.unwrap().object;
    let mut closing = ns.clone();
    closing["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    proposer.propose(Command::Update { resource: "namespaces".into(), object: closing }).await.unwrap();
    let mut p = pod("b");
    p["metadata"]["namespace"] = json!("shop");
    let e = rejection(proposer.propose(create("pods", p)).await);
    assert_eq!(e.to_string(), "unable to create new content in namespace shop because it is being terminated");
    assert!(store.list("pods", None).await.unwrap().0.is_empty(), "nothing was created");
}

#[tokio::test]
async fn bind_sets_the_node_once_and_status_writes_touch_only_status() {
    let (store, proposer) = test_store().await;
    let created = proposer.propose(create("pods", pod("a"))).await.unwrap().object;
    let bind = |uid: &str, node: &str| Command::Bind {
        namespace: "default".into(),
        name: "a".into(),
        uid: uid.into(),
        node: node.into(),
        at: "2026-12-04T10:00:00Z".into(),
    };
    assert!(matches!(rejection(proposer.propose(bind("other", "n1")).await), Rejection::Conflict { .. }));
    let bound = proposer.propose(bind("uid-a", "n1")).await.unwrap().object;
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(bound["status"]["conditions"][0]["lastTransitionTime"], "2026-12-04T10:00:00Z");
    let twice = rejection(proposer.propose(bind("uid-a", "n2")).await);
    assert_eq!(twice.to_string(), "pod a is already assigned to node \"n1\"");

    let status = |rv: Option<String>| Command::UpdateStatus {
        resource: "pods".into(),
        namespace: "default".into(),
        name: "a".into(),
        uid: Some("uid-a".into()),
        resource_version: rv,
        status: json!({"phase": "Running"}),
    };
    let stale = rejection(proposer.propose(status(Some(meta::resource_version(&created).into()))).await);
    assert!(matches!(stale, Rejection::Conflict { .. }));
    let written = proposer.propose(status(None)).await.unwrap().object;
    assert_eq!(written["status"], json!({"phase": "Running"}));
    assert_eq!(written["spec"], bound["spec"], "the spec is untouched");
    assert_eq!(store.get("pods", "default", "a").await.unwrap().unwrap(), written);
}

/// One object of every served resource type.
fn one_of_each() -> Vec<(String, Value)> {
    resource::ALL
        .iter()
        .filter(|rt| rt.key() != resource::NAMESPACES.key())
        .map(|rt| {
            let mut obj = json!({"apiVersion": rt.api_version(), "kind": rt.kind,
                                 "metadata": {"name": format!("x-{}", rt.name), "uid": format!("uid-{}", rt.name)}});
            if rt.namespaced {
                obj["metadata"]["namespace"] = json!("default");
            }
            (rt.key(), obj)
        })
        .collect()
}

#[tokio::test]
async fn snapshot_and_restore_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (source, proposer) = test_store().await;
    for (resource, object) in one_of_each() {
        proposer.propose(create(&resource, object)).await.unwrap();
    }
    proposer.propose(create("services", service("web", "10.43.0.9", &[30090]))).await.unwrap();
    let file = dir.path().join("snapshot.db");
    let at = source.snapshot(&file).await.unwrap();
    assert_eq!(
        at,
        SnapshotMeta { revision: source.revision().await.unwrap(), applied: source.applied_index().await.unwrap() }
    );
    // A write after the snapshot is not in it.
    proposer.propose(create("pods", pod("late"))).await.unwrap();

    let target = Store::open(&dir.path().join("state.db")).unwrap();
    let target_proposer = Proposer::local(&target);
    crate::controllers::namespace::ensure_built_in(&target, &target_proposer).await.unwrap();
    let mut w = target.watch(target.revision().await.unwrap()).await.unwrap();
    assert_eq!(target.restore(&file).await.unwrap(), at);
    assert_eq!((target.revision().await.unwrap(), target.applied_index().await.unwrap()), (at.revision, at.applied));
    for rt in resource::ALL {
        let (want, _) = source.list(&rt.key(), None).await.unwrap();
        let want: Vec<Value> = want.into_iter().filter(|o| meta::name(o) != "late").collect();
        assert_eq!(target.list(&rt.key(), None).await.unwrap().0, want, "{}", rt.key());
    }
    // A watch from before the restore ends with a clean 410; a new one resumes from the
    // snapshot's history.
    assert!(matches!(w.next().await, Err(StoreError::Gone { .. })));
    let mut resumed = target.watch(at.revision - 1).await.unwrap();
    assert_eq!(resumed.next().await.unwrap().revision, at.revision);
    // The reservations came along: the snapshot's NodePort is still taken.
    let taken = target_proposer.propose(create("services", service("other", "10.43.0.10", &[30090]))).await;
    assert!(matches!(rejection(taken), Rejection::Invalid { .. }));
    // Writes go on from the snapshot's position.
    let next = target_proposer.propose(create("pods", pod("after"))).await.unwrap();
    assert_eq!(next.revision, at.revision + 1);
    assert_eq!(target.applied_index().await.unwrap(), at.applied + 2);
}

#[tokio::test]
async fn an_older_data_dir_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        // The schema of the single-node release: no reservations, no applied index.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 uid TEXT NOT NULL, revision INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (resource, namespace, name));
             CREATE TABLE changes (revision INTEGER PRIMARY KEY, resource TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('revision', 7);",
        )
        .unwrap();
        let svc = service("web", "10.43.0.3", &[30080]);
        conn.execute(
            "INSERT INTO objects VALUES ('services', 'default', 'web', 'uid-web', 7, ?1)",
            params![serde_json::to_string(&svc).unwrap()],
        )
        .unwrap();
        let ns = json!({"kind": "Namespace", "metadata": {"name": "default", "uid": "ns"}});
        conn.execute("INSERT INTO objects VALUES ('namespaces', '', 'default', 'ns', 1, ?1)", params![ns.to_string()])
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 7, "objects and revision kept");
    let proposer = Proposer::local(&store);
    let taken = proposer.propose(create("services", service("other", "10.43.0.4", &[30080]))).await;
    assert!(matches!(rejection(taken), Rejection::Invalid { .. }), "the old Service's NodePort is reserved");
    let next = proposer.propose(create("pods", pod("a"))).await.unwrap();
    assert_eq!(next.revision, 8);
}

/// A pod as a server serves it, with the server's resourceVersion.
fn served(name: &str, rv: u64) -> Value {
    let mut p = pod(name);
    p["metadata"]["resourceVersion"] = json!(rv.to_string());
    p
}

fn at(stream: &str, resource_version: u64) -> Option<MirrorPosition> {
    Some(MirrorPosition { stream: stream.into(), resource_version })
}

fn mirror(object: Value, position: Option<MirrorPosition>) -> Command {
    Command::Mirror { resource: "pods".into(), object, position }
}

fn unmirror(name: &str, position: Option<MirrorPosition>) -> Command {
    Command::Unmirror { resource: "pods".into(), namespace: "default".into(), name: name.into(), position }
}

/// (type, name, the object's resourceVersion) of the next local change.
async fn next_change(w: &mut Watcher) -> (EventType, String, String) {
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), w.next()).await.expect("a change").unwrap();
    (e.kind, meta::name(&e.object).to_string(), meta::resource_version(&e.object).to_string())
}

#[tokio::test]
async fn mirrored_objects_keep_the_servers_resource_version_and_watchers_see_local_revisions() {
    let store = Store::in_memory().unwrap();
    let proposer = Proposer::local(&store);
    let mut w = store.watch(0).await.unwrap();
    // No namespace exists locally: a mirror checks nothing.
    let added = proposer.propose(mirror(served("a", 500), at("pods", 500))).await.unwrap();
    assert_eq!(added.revision, 1, "the change gets the next local revision");
    assert_eq!(store.get("pods", "default", "a").await.unwrap().unwrap(), served("a", 500), "verbatim");
    assert_eq!(next_change(&mut w).await, (EventType::Added, "a".into(), "500".into()));

    // The same object again changes nothing: no revision, no event; the position still moves.
    let same = proposer.propose(mirror(served("a", 500), at("pods", 501))).await.unwrap();
    assert_eq!(same.revision, 1);
    assert_eq!(store.mirror_position("pods").await.unwrap(), Some(501));

    let mut changed = served("a", 520);
    changed["status"] = json!({"phase": "Running"});
    proposer.propose(mirror(changed.clone(), at("pods", 520))).await.unwrap();
    proposer.propose(unmirror("a", at("pods", 530))).await.unwrap();
    assert_eq!(next_change(&mut w).await, (EventType::Modified, "a".into(), "520".into()));
    assert_eq!(next_change(&mut w).await, (EventType::Deleted, "a".into(), "520".into()));
    assert!(store.get("pods", "default", "a").await.unwrap().is_none());
    // Removing what is not there is no error and no change.
    let gone = proposer.propose(unmirror("a", at("pods", 540))).await.unwrap();
    assert_eq!((gone.revision, gone.object), (3, Value::Null));
    assert_eq!(store.revision().await.unwrap(), 3);
    assert_eq!(store.mirror_position("pods").await.unwrap(), Some(540));
    assert_eq!(store.mirror_position("services").await.unwrap(), None);
    // A list of the local store says the local revision; objects say the server's.
    proposer.propose(mirror(served("b", 600), None)).await.unwrap();
    let (pods, revision) = store.list("pods", None).await.unwrap();
    assert_eq!((revision, meta::resource_version(&pods[0])), (4, "600"));
}

#[tokio::test]
async fn a_mirror_set_removes_what_the_relist_no_longer_has() {
    let store = Store::in_memory().unwrap();
    let proposer = Proposer::local(&store);
    for (name, rv) in [("a", 10), ("b", 11), ("c", 12)] {
        proposer.propose(mirror(served(name, rv), at("pods", rv))).await.unwrap();
    }
    proposer
        .propose(Command::Mirror {
            resource: "services".into(),
            object: json!({"metadata": {"name": "kept", "namespace": "default"}}),
            position: None,
        })
        .await
        .unwrap();
    let mut w = store.watch(store.revision().await.unwrap()).await.unwrap();
    let relist = Command::MirrorSet {
        resource: "pods".into(),
        objects: vec![served("b", 11), served("c", 40), served("d", 41)],
        position: at("pods", 45),
    };
    proposer.propose(relist).await.unwrap();
    assert_eq!(next_change(&mut w).await, (EventType::Deleted, "a".into(), "10".into()));
    assert_eq!(next_change(&mut w).await, (EventType::Modified, "c".into(), "40".into()));
    assert_eq!(next_change(&mut w).await, (EventType::Added, "d".into(), "41".into()));
    let names: Vec<String> =
        store.list("pods", None).await.unwrap().0.iter().map(|p| meta::name(p).to_string()).collect();
    assert_eq!(names, ["b", "c", "d"], "b was unchanged and made no event");
    assert_eq!(store.list("services", None).await.unwrap().0.len(), 1, "other resources are untouched");
    assert_eq!(store.mirror_position("pods").await.unwrap(), Some(45));
}

#[tokio::test]
async fn mirror_commands_replay_idempotently_and_positions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let batch = vec![
        (1, mirror(served("a", 100), at("pods", 100))),
        (2, mirror(served("b", 101), at("pods", 101))),
        (3, unmirror("a", at("pods", 102))),
    ];
    {
        let store = Store::open(&path).unwrap();
        let answers = store.apply(batch.clone()).await.unwrap();
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(store.revision().await.unwrap(), 3);
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.mirror_position("pods").await.unwrap(), Some(102));
    assert_eq!(store.get("pods", "default", "b").await.unwrap().unwrap(), served("b", 101));
    // The same entries again (a crash before the caller learnt they were applied): nothing
    // changes, the position does not go back.
    let again = store.apply(batch).await.unwrap();
    assert!(again.iter().all(|a| matches!(a, Err(Rejection::Replayed { .. }))), "{again:?}");
    assert_eq!(store.revision().await.unwrap(), 3);
    assert!(store.get("pods", "default", "a").await.unwrap().is_none());
    assert_eq!(store.mirror_position("pods").await.unwrap(), Some(102));
    // The local proposer numbers on after the applied index, through the writer.
    let next = Proposer::local(&store).propose(mirror(served("c", 103), at("pods", 103))).await.unwrap();
    assert_eq!(next.revision, 4);
    assert_eq!(store.applied_index().await.unwrap(), 4);
}

#[tokio::test]
async fn a_mirror_reserves_nothing() {
    let store = Store::in_memory().unwrap();
    let proposer = Proposer::local(&store);
    // Between two events a relist can hold a ClusterIP twice (one Service gave it up, another
    // took it): the server checked; the mirror takes both.
    for name in ["x", "y"] {
        let command = Command::Mirror {
            resource: "services".into(),
            object: service(name, "10.43.0.3", &[30080]),
            position: None,
        };
        proposer.propose(command).await.unwrap();
    }
    assert_eq!(store.list("services", None).await.unwrap().0.len(), 2);
}
