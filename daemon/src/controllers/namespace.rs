//! Namespace lifecycle: the built-in namespaces exist; a deleted namespace empties, then goes.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::objects::{meta, resource};
use crate::store::{Command, Proposer, Store, StoreError};

/// Namespaces every cluster has from the start.
pub const BUILT_IN: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the built-in namespaces that are missing.
pub async fn ensure_built_in(store: &Store, proposer: &Proposer) -> Result<(), StoreError> {
    for name in BUILT_IN {
        if store.get(&resource::NAMESPACES.key(), "", name).await?.is_none() {
            let ns = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::now(),
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            proposer.propose(Command::Create { resource: resource::NAMESPACES.key(), object: ns }).await?;
        }
    }
    Ok(())
}

/// Moves one terminating namespace forward: asks its pods to stop, deletes everything else,
/// and deletes the namespace once nothing is left in it.
pub async fn reconcile(store: &Store, proposer: &Proposer, ns: &Value) -> Result<(), StoreError> {
    let name = meta::name(ns);
    let contents = store.list_namespace(name).await?;
    if contents.is_empty() {
        proposer
            .propose(Command::Delete {
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
                let _ = proposer.propose(delete(&res, &obj)).await;
                continue;
            }
            let new = crate::objects::pod::begin_deletion(&obj, grace, jiff::Timestamp::now());
            let _ = proposer.propose(Command::Update { resource: res, object: new }).await;
        } else {
            let _ = proposer.propose(delete(&res, &obj)).await;
        }
    }
    Ok(())
}

fn delete(resource: &str, obj: &Value) -> Command {
    Command::delete_of(resource, obj)
}

pub async fn run(store: Store, proposer: Proposer, shutdown: CancellationToken) {
    let key = resource::NAMESPACES.key();
    let pods = resource::PODS.key();
    crate::controllers::run_loop(store.clone(), &[key.as_str(), pods.as_str()], shutdown, || async {
        let Ok((namespaces, _)) = store.list(&key, None).await else { return };
        for ns in namespaces.iter().filter(|n| meta::is_deleting(n)) {
            if let Err(e) = reconcile(&store, &proposer, ns).await {
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
        let (store, proposer) = crate::store::test_store().await;
        ensure_built_in(&store, &proposer).await.unwrap();
        ensure_built_in(&store, &proposer).await.unwrap();
        assert_eq!(store.list("namespaces", None).await.unwrap().0.len(), BUILT_IN.len());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", "uid": "u1"}});
        let ns = proposer.propose(Command::Create { resource: "namespaces".into(), object: ns }).await.unwrap().object;
        let bound = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "dev", "uid": "p1"}, "spec": {"nodeName": "n"}});
        let event =
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "dev", "uid": "e1"}});
        proposer.propose(Command::Create { resource: "pods".into(), object: bound }).await.unwrap();
        proposer.propose(Command::Create { resource: "events".into(), object: event }).await.unwrap();
        let mut ns = ns;
        ns["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let ns = proposer.propose(Command::Update { resource: "namespaces".into(), object: ns }).await.unwrap().object;
        reconcile(&store, &proposer, &ns).await.unwrap();
        assert!(store.get("events", "dev", "e").await.unwrap().is_none());
        let pod = store.get("pods", "dev", "p").await.unwrap().unwrap();
        assert!(meta::is_deleting(&pod), "the bound pod is asked to stop, not removed");
        proposer.propose(delete("pods", &pod)).await.unwrap();
        reconcile(&store, &proposer, &ns).await.unwrap();
        assert!(store.get("namespaces", "", "dev").await.unwrap().is_none());
    }
}
