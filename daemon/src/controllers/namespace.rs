//! Namespace lifecycle: the built-in namespaces exist; a deleted namespace empties, then goes.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::objects::{meta, resource};
use crate::store::{Command, Store, StoreError};

/// Namespaces every cluster has from the start.
pub const BUILT_IN: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the built-in namespaces that are missing.
pub async fn ensure_built_in(store: &Store) -> Result<(), StoreError> {
    for name in BUILT_IN {
        if store.get(&resource::NAMESPACES.key(), "", name).await?.is_none() {
            let ns = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::now(),
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            store.apply(Command::Create { resource: resource::NAMESPACES.key(), object: ns }).await?;
        }
    }
    Ok(())
}

/// Moves one terminating namespace forward: asks its pods to stop, deletes everything else,
/// and deletes the namespace once nothing is left in it.
pub async fn reconcile(store: &Store, ns: &Value) -> Result<(), StoreError> {
    let name = meta::name(ns);
    let contents = store.list_namespace(name).await?;
    if contents.is_empty() {
        store
            .apply(Command::Delete {
                resource: resource::NAMESPACES.key(),
                namespace: String::new(),
                name: name.into(),
                uid: Some(meta::uid(ns).into()),
            })
            .await?;
        return Ok(());
    }
    for (res, obj) in contents {
        if res == resource::PODS.key() {
            if meta::is_deleting(&obj) {
                continue;
            }
            let grace = crate::objects::pod::grace_period(&obj, None);
            if obj.pointer("/spec/nodeName").is_none() || grace == 0 {
                let _ = store.apply(delete(&res, &obj)).await;
                continue;
            }
            let new = crate::objects::pod::begin_deletion(&obj, grace, jiff::Timestamp::now());
            let _ = store.apply(Command::Update { resource: res, object: new }).await;
        } else {
            let _ = store.apply(delete(&res, &obj)).await;
        }
    }
    Ok(())
}

fn delete(resource: &str, obj: &Value) -> Command {
    Command::delete_of(resource, obj)
}

pub async fn run(store: Store, shutdown: CancellationToken) {
    let key = resource::NAMESPACES.key();
    let pods = resource::PODS.key();
    crate::controllers::run_loop(store.clone(), &[key.as_str(), pods.as_str()], shutdown, || async {
        let Ok((namespaces, _)) = store.list(&key, None).await else { return };
        for ns in namespaces.iter().filter(|n| meta::is_deleting(n)) {
            if let Err(e) = reconcile(&store, ns).await {
                tracing::warn!(error = %e, namespace = meta::name(ns), "namespace cleanup failed; will retry");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn terminating_namespace_empties_then_goes() {
        let store = Store::in_memory().unwrap();
        ensure_built_in(&store).await.unwrap();
        ensure_built_in(&store).await.unwrap();
        assert_eq!(store.list("namespaces", None).await.unwrap().0.len(), BUILT_IN.len());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", "uid": "u1", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        store.apply(Command::Create { resource: "namespaces".into(), object: ns.clone() }).await.unwrap();
        let bound = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "dev", "uid": "p1"}, "spec": {"nodeName": "n"}});
        let event =
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "dev", "uid": "e1"}});
        store.apply(Command::Create { resource: "pods".into(), object: bound }).await.unwrap();
        store.apply(Command::Create { resource: "events".into(), object: event }).await.unwrap();
        reconcile(&store, &ns).await.unwrap();
        assert!(store.get("events", "dev", "e").await.unwrap().is_none());
        let pod = store.get("pods", "dev", "p").await.unwrap().unwrap();
        assert!(meta::is_deleting(&pod), "the bound pod is asked to stop, not removed");
        store.apply(delete("pods", &pod)).await.unwrap();
        reconcile(&store, &ns).await.unwrap();
        assert!(store.get("namespaces", "", "dev").await.unwrap().is_none());
    }
}
