//! The garbage collector: objects whose owners are gone go too, and an owner deleted in the
//! foreground goes only after its dependents.
//!
//! Ownership is `metadata.ownerReferences` (kind, name, uid). A dependent is collected when
//! every owner it names is gone — absent, or replaced by an object of the same name with
//! another uid; dangling references next to a live owner are dropped instead. An owner with
//! the `foregroundDeletion` finalizer has its dependents deleted (in the foreground too) and
//! is removed once none is left. Pods are deleted gracefully; the agent finishes the job.
//!
//! Invariant: dependents are listed before their owners, so an owner created after the
//! dependents were read can never make a fresh dependent look orphaned.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::objects::{meta, pod, resource, ResourceType};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

/// The finalizer of an owner waiting for its dependents (Kubernetes' name).
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner whose dependents are to be kept (Kubernetes' name).
pub const ORPHAN: &str = "orphan";

/// The kinds that own or are owned, dependents first (pods before their replica sets, replica
/// sets before their deployments).
const ORDER: &[ResourceType] =
    &[resource::PODS, resource::REPLICA_SETS, resource::REPLICATION_CONTROLLERS, resource::DEPLOYMENTS];

/// Whether the collector looks after objects of this type (others own nothing it tracks, so
/// their deletion never waits for it).
pub fn tracks(rt: &ResourceType) -> bool {
    ORDER.iter().any(|r| r.kind == rt.kind)
}

fn kind_type(kind: &str) -> Option<&'static ResourceType> {
    ORDER.iter().find(|r| r.kind == kind)
}

/// The uids of an object's owners of a kind the collector knows.
fn owner_refs(obj: &Value) -> Vec<(&'static ResourceType, String, String)> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let rt = kind_type(r["kind"].as_str()?)?;
            Some((rt, r["name"].as_str()?.to_string(), r["uid"].as_str()?.to_string()))
        })
        .collect()
}

fn has_finalizer(obj: &Value, name: &str) -> bool {
    obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == name))
}

pub fn is_foreground_deleting(obj: &Value) -> bool {
    meta::is_deleting(obj) && has_finalizer(obj, FOREGROUND)
}

pub fn is_orphaning(obj: &Value) -> bool {
    meta::is_deleting(obj) && has_finalizer(obj, ORPHAN)
}

/// What the collector does to one object.
#[derive(Debug, PartialEq)]
enum Action {
    /// Delete it (all owners gone, or an owner is deleting in the foreground).
    Delete { foreground: bool },
    /// Drop the references to owners that are gone.
    DropRefs(Vec<String>),
    /// Remove the owner itself: foreground deletion with no dependents left.
    Finish,
    /// Drop every reference to the owner from its dependents, then remove the owner.
    OrphanAndFinish,
}

/// Decides what to do with every object, given all objects of the known kinds (pure).
fn plan(objects: &[(&'static ResourceType, Value)]) -> Vec<(usize, Action)> {
    let live: HashMap<&str, &Value> = objects.iter().map(|(_, o)| (meta::uid(o), o)).collect();
    let mut has_dependents: HashSet<&str> = HashSet::new();
    let mut actions = Vec::new();
    for (i, (_, obj)) in objects.iter().enumerate() {
        let refs = owner_refs(obj);
        if refs.is_empty() {
            continue;
        }
        let present: Vec<&Value> = refs.iter().filter_map(|(_, _, uid)| live.get(uid.as_str()).copied()).collect();
        for p in &present {
            has_dependents.insert(meta::uid(p));
        }
        if meta::is_deleting(obj) {
            continue;
        }
        if present.is_empty() {
            actions.push((i, Action::Delete { foreground: false }));
        } else if present.iter().any(|o| is_foreground_deleting(o)) {
            actions.push((i, Action::Delete { foreground: true }));
        } else if present.len() < refs.len() {
            let gone = refs
                .iter()
                .filter(|(_, _, uid)| !live.contains_key(uid.as_str()))
                .map(|(_, _, uid)| uid.clone())
                .collect();
            actions.push((i, Action::DropRefs(gone)));
        }
    }
    for (i, (_, obj)) in objects.iter().enumerate() {
        if is_orphaning(obj) {
            actions.push((i, Action::OrphanAndFinish));
        } else if is_foreground_deleting(obj) && !has_dependents.contains(meta::uid(obj)) {
            actions.push((i, Action::Finish));
        }
    }
    actions
}

/// Deletes `obj` of type `rt`: pods gracefully, others at once or (`foreground`) by marking
/// them for foreground deletion.
pub fn delete_command(rt: &ResourceType, obj: &Value, foreground: bool) -> Command {
    if rt.kind == "Pod" && obj.pointer("/spec/nodeName").is_some() {
        let grace = pod::grace_period(obj, None);
        if grace > 0 {
            return Command::Update {
                resource: rt.key(),
                object: pod::begin_deletion(obj, grace, jiff::Timestamp::now()),
            };
        }
    }
    if foreground && rt.kind != "Pod" {
        return Command::Update { resource: rt.key(), object: mark_foreground(obj) };
    }
    remove(rt, obj)
}

fn remove(rt: &ResourceType, obj: &Value) -> Command {
    Command::delete_of(rt.key(), obj)
}

/// The object as it looks once a foreground deletion has begun.
pub fn mark_foreground(obj: &Value) -> Value {
    mark_deleting(obj, FOREGROUND)
}

/// The object as it looks once a deletion that orphans its dependents has begun: controllers
/// no longer adopt into it, and the collector releases its dependents before removing it.
pub fn mark_orphaning(obj: &Value) -> Value {
    mark_deleting(obj, ORPHAN)
}

fn mark_deleting(obj: &Value, finalizer: &str) -> Value {
    let mut new = obj.clone();
    let m = meta::metadata_mut(&mut new);
    m.entry("deletionTimestamp").or_insert_with(|| json!(meta::now()));
    m.insert("deletionGracePeriodSeconds".into(), json!(0));
    let finalizers = m.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = finalizers.as_array_mut() {
        if !list.iter().any(|f| f == finalizer) {
            list.push(json!(finalizer));
        }
    }
    new
}

/// One pass over every namespace.
pub async fn collect(store: &Store, proposer: &Proposer) -> Result<(), StoreError> {
    let mut objects = Vec::new();
    for rt in ORDER {
        let (items, _) = store.list(&rt.key(), None).await?;
        objects.extend(items.into_iter().map(|o| (rt, o)));
    }
    for (i, action) in plan(&objects) {
        let (rt, obj) = &objects[i];
        let command = match action {
            Action::Delete { foreground } => delete_command(rt, obj, foreground),
            Action::DropRefs(gone) => {
                let new = gone.iter().fold(obj.clone(), |o, uid| meta::without_owner(&o, uid));
                Command::Update { resource: rt.key(), object: new }
            }
            Action::OrphanAndFinish => {
                orphan(store, proposer, obj).await?;
                remove(rt, obj)
            }
            Action::Finish => remove(rt, obj),
        };
        match proposer.propose(command).await {
            Ok(_)
            | Err(
                StoreError::Rejected(Rejection::NotFound { .. }) | StoreError::Rejected(Rejection::Conflict { .. }),
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the references to `owner` from its dependents (deletion with `orphan` propagation).
pub async fn orphan(store: &Store, proposer: &Proposer, owner: &Value) -> Result<(), StoreError> {
    let uid = meta::uid(owner);
    for rt in ORDER {
        let (items, _) = store.list(&rt.key(), Some(meta::namespace(owner))).await?;
        for obj in items.iter().filter(|o| meta::is_owned_by(o, uid)) {
            let new = meta::without_owner(obj, uid);
            match proposer.propose(Command::Update { resource: rt.key(), object: new }).await {
                Ok(_) | Err(StoreError::Rejected(Rejection::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

pub async fn run(store: Store, proposer: Proposer, shutdown: CancellationToken) {
    let keys: Vec<String> = ORDER.iter().map(|r| r.key()).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    crate::controllers::run_loop(store.clone(), &keys, shutdown, || async {
        if let Err(e) = collect(&store, &proposer).await {
            tracing::warn!(error = %e, "garbage collection failed; will retry");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, uid: &str, owners: &[(&str, &str, &str)]) -> Value {
        let refs: Vec<Value> =
            owners.iter().map(|(k, n, u)| json!({"kind": k, "name": n, "uid": u, "controller": true})).collect();
        let mut o = json!({"kind": kind, "metadata": {"name": name, "namespace": "default", "uid": uid}});
        if !refs.is_empty() {
            o["metadata"]["ownerReferences"] = json!(refs);
        }
        o
    }

    async fn put(store: &Store, rt: &ResourceType, o: &Value) {
        let proposer = crate::store::Proposer::local(store);
        proposer.propose(Command::Create { resource: rt.key(), object: o.clone() }).await.unwrap();
    }

    #[test]
    fn plan_collects_orphans_and_keeps_owned() {
        let d = obj("Deployment", "web", "d1", &[]);
        let rs = obj("ReplicaSet", "web-abc", "r1", &[("Deployment", "web", "d1")]);
        let orphan_rs = obj("ReplicaSet", "old-abc", "r2", &[("Deployment", "old", "gone")]);
        let replaced = obj("Pod", "p1", "p1", &[("ReplicaSet", "web-abc", "not-r1")]);
        let half = obj("Pod", "p2", "p2", &[("ReplicaSet", "web-abc", "r1"), ("ReplicaSet", "x", "gone")]);
        let unknown_kind = obj("Pod", "p3", "p3", &[("StatefulSet", "db", "s1")]);
        let objects = vec![
            (&resource::PODS, replaced),
            (&resource::PODS, half),
            (&resource::PODS, unknown_kind),
            (&resource::REPLICA_SETS, rs),
            (&resource::REPLICA_SETS, orphan_rs),
            (&resource::DEPLOYMENTS, d),
        ];
        let actions = plan(&objects);
        assert_eq!(
            actions,
            vec![
                (0, Action::Delete { foreground: false }),
                (1, Action::DropRefs(vec!["gone".into()])),
                (4, Action::Delete { foreground: false })
            ]
        );
    }

    #[tokio::test]
    async fn background_deletion_collects_the_whole_tree() {
        let (store, proposer) = crate::store::test_store().await;
        let rs = obj("ReplicaSet", "web-abc", "r1", &[("Deployment", "web", "d1")]);
        let pod = obj("Pod", "web-abc-x", "p1", &[("ReplicaSet", "web-abc", "r1")]);
        put(&store, &resource::REPLICA_SETS, &rs).await;
        put(&store, &resource::PODS, &pod).await;
        collect(&store, &proposer).await.unwrap();
        assert!(
            store.get("replicasets.apps", "default", "web-abc").await.unwrap().is_none(),
            "the deployment is gone, so is its RS"
        );
        assert!(store.get("pods", "default", "web-abc-x").await.unwrap().is_some(), "one level per pass");
        collect(&store, &proposer).await.unwrap();
        assert!(store.get("pods", "default", "web-abc-x").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn foreground_deletion_waits_for_dependents() {
        let (store, proposer) = crate::store::test_store().await;
        let d = mark_foreground(&obj("Deployment", "web", "d1", &[]));
        assert!(is_foreground_deleting(&d));
        let rs = obj("ReplicaSet", "web-abc", "r1", &[("Deployment", "web", "d1")]);
        let mut pod = obj("Pod", "web-abc-x", "p1", &[("ReplicaSet", "web-abc", "r1")]);
        pod["spec"] = json!({"nodeName": "n1", "terminationGracePeriodSeconds": 30});
        put(&store, &resource::DEPLOYMENTS, &d).await;
        put(&store, &resource::REPLICA_SETS, &rs).await;
        put(&store, &resource::PODS, &pod).await;
        collect(&store, &proposer).await.unwrap();
        let rs = store.get("replicasets.apps", "default", "web-abc").await.unwrap().unwrap();
        assert!(is_foreground_deleting(&rs), "dependents of a foreground deletion go in the foreground");
        assert!(store.get("deployments.apps", "default", "web").await.unwrap().is_some(), "the owner waits");
        collect(&store, &proposer).await.unwrap();
        let pod = store.get("pods", "default", "web-abc-x").await.unwrap().unwrap();
        assert!(meta::is_deleting(&pod), "the bound pod is stopped gracefully");
        proposer
            .propose(Command::Delete {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "web-abc-x".into(),
                uid: None,
            })
            .await
            .unwrap();
        collect(&store, &proposer).await.unwrap();
        assert!(store.get("replicasets.apps", "default", "web-abc").await.unwrap().is_none());
        collect(&store, &proposer).await.unwrap();
        assert!(store.get("deployments.apps", "default", "web").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn orphaning_keeps_dependents_without_the_reference() {
        let (store, proposer) = crate::store::test_store().await;
        let d = mark_orphaning(&obj("Deployment", "web", "d1", &[]));
        assert!(is_orphaning(&d) && !is_foreground_deleting(&d));
        let rs = obj("ReplicaSet", "web-abc", "r1", &[("Deployment", "web", "d1")]);
        put(&store, &resource::DEPLOYMENTS, &d).await;
        put(&store, &resource::REPLICA_SETS, &rs).await;
        collect(&store, &proposer).await.unwrap();
        let rs = store.get("replicasets.apps", "default", "web-abc").await.unwrap().unwrap();
        assert!(rs.pointer("/metadata/ownerReferences").is_none());
        assert!(store.get("deployments.apps", "default", "web").await.unwrap().is_none());
        collect(&store, &proposer).await.unwrap();
        assert!(store.get("replicasets.apps", "default", "web-abc").await.unwrap().is_some());
    }
}
