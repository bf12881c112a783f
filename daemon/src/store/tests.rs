//! Store tests against an in-memory SQLite database.

use serde_json::json;

use super::*;

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}})
}

#[tokio::test]
async fn revisions_increase_and_conflicts_are_detected() {
    let store = Store::in_memory().unwrap();
    let a = store.apply(Command::Create { resource: "pods".into(), object: pod("a") }).await.unwrap();
    let b = store.apply(Command::Create { resource: "pods".into(), object: pod("b") }).await.unwrap();
    assert!(b.revision > a.revision);
    assert_eq!(meta::resource_version(&a.object), a.revision.to_string());

    let dup = store.apply(Command::Create { resource: "pods".into(), object: pod("a") }).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists { .. })));

    let mut stale = a.object.clone();
    stale["metadata"]["labels"] = json!({"x": "1"});
    let updated = store.apply(Command::Update { resource: "pods".into(), object: stale.clone() }).await.unwrap();
    assert!(updated.revision > b.revision);
    let again = store.apply(Command::Update { resource: "pods".into(), object: stale }).await;
    assert!(matches!(again, Err(StoreError::Conflict { .. })), "{again:?}");

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
    assert!(matches!(store.apply(wrong_uid).await, Err(StoreError::Conflict { .. })));
    let del = Command::Delete {
        resource: "pods".into(),
        namespace: "default".into(),
        name: "a".into(),
        uid: Some("uid-a".into()),
    };
    store.apply(del.clone()).await.unwrap();
    assert!(store.get("pods", "default", "a").await.unwrap().is_none());
    assert!(matches!(store.apply(del).await, Err(StoreError::NotFound { .. })));
}

#[tokio::test]
async fn watch_replays_history_then_follows() {
    let store = Store::in_memory().unwrap();
    let first = store.apply(Command::Create { resource: "pods".into(), object: pod("a") }).await.unwrap();
    store.apply(Command::Create { resource: "pods".into(), object: pod("b") }).await.unwrap();
    let mut w = store.watch(first.revision).await.unwrap();
    let e = w.next().await.unwrap();
    assert_eq!((e.kind, meta::name(&e.object)), (EventType::Added, "b"));
    let s2 = store.clone();
    tokio::spawn(async move {
        s2.apply(Command::Delete { resource: "pods".into(), namespace: "default".into(), name: "a".into(), uid: None })
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
        store.apply(Command::Create { resource: "pods".into(), object: pod("a") }).await.unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.get("pods", "default", "a").await.unwrap().is_some());
    assert_eq!(store.revision().await.unwrap(), 1);
    store.compact().await.unwrap();
}
