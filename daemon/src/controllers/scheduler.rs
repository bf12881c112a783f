//! Binds pending pods to nodes: the loop around the pure placement of [`crate::scheduler`].
//!
//! Each pass reads the Node objects, the pods and the volume objects, builds one
//! [`Cluster`] snapshot and places the pods that still need a node in kube-scheduler's queue
//! order (higher priority first, then older first), so each placement sees the ones before it.
//! A pod that fits gets `Command::Bind` (all of a pass proposed together) and a `Scheduled`
//! event; one that fits nowhere gets `PodScheduled=False`/`Unschedulable` with kube-scheduler's
//! message and a `FailedScheduling` event — written again only when the message changes.
//! A pass runs whenever pods, nodes or volume objects change (and on the resync), so a pod
//! created before any node registered is placed once its Node appears.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder};
use crate::objects::{meta, resource};
use crate::scheduler::{Cluster, Volumes};
use crate::store::{Command, Proposer, Store};

/// The scheduler pods name when they want this one (`spec.schedulerName`'s default).
pub const NAME: &str = "default-scheduler";

/// Pods that still need a node from this scheduler: unbound, not being deleted, not finished,
/// and asking for the default scheduler — in queue order (priority, then age, then name).
pub fn unbound(pods: &[Value]) -> Vec<&Value> {
    let mut queue: Vec<&Value> = pods
        .iter()
        .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty))
        .filter(|p| !meta::is_deleting(p))
        .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
        .filter(|p| p.pointer("/spec/schedulerName").and_then(Value::as_str).is_none_or(|s| s == NAME))
        .collect();
    queue.sort_by_key(|p| {
        let priority = p.pointer("/spec/priority").and_then(Value::as_i64).unwrap_or(0);
        let created = meta::parse_time(p.pointer("/metadata/creationTimestamp"));
        (-priority, created, meta::namespace(p).to_string(), meta::name(p).to_string())
    });
    queue
}

/// What one pass decided for each pod it looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind to this node.
    Bind(String),
    /// Fits nowhere: kube-scheduler's message.
    Unschedulable(String),
}

/// Places every pod that needs a node (pure): the decisions in queue order.
pub fn plan<'a>(nodes: &[Value], pods: &'a [Value], volumes: Volumes) -> Vec<(&'a Value, Decision)> {
    let mut cluster = Cluster::new(nodes, pods, volumes);
    unbound(pods)
        .into_iter()
        .map(|pod| {
            let decision = match cluster.place(pod) {
                Ok(node) => Decision::Bind(node),
                Err(e) => Decision::Unschedulable(e.to_string()),
            };
            (pod, decision)
        })
        .collect()
}

/// Runs the scheduler until `shutdown`; `host` names this server in events.
pub async fn run(store: Store, proposer: Proposer, host: String, shutdown: CancellationToken) {
    let recorder = Recorder::new(store.clone(), proposer.clone(), NAME, host);
    let keys = [
        resource::PODS.key(),
        resource::NODES.key(),
        resource::PERSISTENT_VOLUME_CLAIMS.key(),
        resource::PERSISTENT_VOLUMES.key(),
        resource::STORAGE_CLASSES.key(),
    ];
    let watched: Vec<&str> = keys.iter().map(String::as_str).collect();
    crate::controllers::run_loop(store.clone(), &watched, shutdown, || async {
        let list = |key: &str| {
            let (store, key) = (store.clone(), key.to_string());
            async move { store.list(&key, None).await.map(|(items, _)| items) }
        };
        let (Ok(pods), Ok(nodes), Ok(claims), Ok(pvs), Ok(classes)) = (
            list(&keys[0]).await,
            list(&keys[1]).await,
            list(&keys[2]).await,
            list(&keys[3]).await,
            list(&keys[4]).await,
        ) else {
            return;
        };
        let decisions = plan(&nodes, &pods, Volumes::new(&claims, &pvs, &classes));
        let mut binds = Vec::new();
        for (pod, decision) in decisions {
            match decision {
                Decision::Bind(node) => binds.push((pod, node)),
                Decision::Unschedulable(reason) => unschedulable(&proposer, &recorder, pod, &reason).await,
            }
        }
        // All binds of a pass are proposed at once, so the store's group commit writes them in
        // one transaction instead of one fsync per pod.
        let at = meta::now();
        let results = futures::future::join_all(binds.iter().map(|(pod, target)| {
            proposer.propose(Command::Bind {
                namespace: meta::namespace(pod).to_string(),
                name: meta::name(pod).to_string(),
                uid: meta::uid(pod).to_string(),
                node: target.clone(),
                at: at.clone(),
            })
        }))
        .await;
        for ((pod, target), result) in binds.iter().zip(results) {
            match result {
                Ok(applied) => {
                    let msg = format!("Successfully assigned {}/{} to {target}", meta::namespace(pod), meta::name(pod));
                    recorder.record(&applied.object, EventType::Normal, "Scheduled", &msg).await;
                }
                Err(e) => tracing::debug!(error = %e, pod = meta::name(pod), "bind failed; will retry"),
            }
        }
    })
    .await;
}

/// Marks a pod that fits nowhere, as kube-scheduler does: PodScheduled False, Unschedulable.
/// A status-only write, conditional on the pod not having changed since it was read.
async fn unschedulable(proposer: &Proposer, recorder: &Recorder, pod: &Value, reason: &str) {
    let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let already =
        conditions.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["message"] == reason);
    if already {
        return;
    }
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason, "lastProbeTime": null, "lastTransitionTime": meta::now()}));
    status["conditions"] = json!(conditions);
    let command = Command::UpdateStatus {
        resource: resource::PODS.key(),
        namespace: meta::namespace(pod).to_string(),
        name: meta::name(pod).to_string(),
        uid: Some(meta::uid(pod).to_string()),
        resource_version: Some(meta::resource_version(pod).to_string()),
        status,
    };
    if proposer.propose(command).await.is_ok() {
        recorder.record(pod, EventType::Warning, "FailedScheduling", reason).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, extra: Value) -> Value {
        let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}});
        crate::objects::merge_patch(&mut n, &extra);
        n
    }

    fn pod(name: &str, created: &str, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": name, "creationTimestamp": created},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Pending"}});
        crate::objects::merge_patch(&mut p, &extra);
        p
    }

    #[test]
    fn the_queue_is_kube_schedulers() {
        let pods = vec![
            pod("late", "2026-01-01T00:00:02Z", json!({})),
            pod("early", "2026-01-01T00:00:01Z", json!({})),
            pod("urgent", "2026-01-01T00:00:03Z", json!({"spec": {"priority": 1000}})),
            pod("bound", "2026-01-01T00:00:00Z", json!({"spec": {"nodeName": "a"}})),
            pod("going", "2026-01-01T00:00:00Z", json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:05Z"}})),
            pod("done", "2026-01-01T00:00:00Z", json!({"status": {"phase": "Succeeded"}})),
            pod("other", "2026-01-01T00:00:00Z", json!({"spec": {"schedulerName": "my-scheduler"}})),
            pod("named", "2026-01-01T00:00:04Z", json!({"spec": {"schedulerName": "default-scheduler"}})),
        ];
        let names: Vec<&str> = unbound(&pods).into_iter().map(meta::name).collect();
        assert_eq!(names, ["urgent", "early", "late", "named"]);
    }

    #[test]
    fn pods_wait_for_a_node_and_honour_cordon_taints_and_resources() {
        let p = pod("web", "2026-01-01T00:00:00Z", json!({}));
        let pods = std::slice::from_ref(&p);
        let decide = |nodes: &[Value]| plan(nodes, pods, Volumes::default())[0].1.clone();
        assert_eq!(decide(&[]), Decision::Unschedulable("no nodes available to schedule pods".into()));
        assert_eq!(decide(&[node("a", json!({}))]), Decision::Bind("a".into()));
        assert_eq!(
            decide(&[node("a", json!({"spec": {"unschedulable": true}}))]),
            Decision::Unschedulable("0/1 nodes are available: 1 node(s) were unschedulable.".into())
        );
        let tainted =
            node("a", json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(
            decide(&[tainted.clone(), node("b", json!({"spec": {"unschedulable": true}}))]),
            Decision::Unschedulable(
                "0/2 nodes are available: 1 node(s) had untolerated taint(s), 1 node(s) were unschedulable.".into()
            )
        );
        assert_eq!(decide(&[tainted, node("b", json!({}))]), Decision::Bind("b".into()));
        let big = pod(
            "big",
            "2026-01-01T00:00:00Z",
            json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "3"}}}]}}),
        );
        let d = plan(&[node("a", json!({}))], std::slice::from_ref(&big), Volumes::default());
        assert_eq!(d[0].1, Decision::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".into()));
        let picky = pod("picky", "2026-01-01T00:00:00Z", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let d = plan(
            &[node("a", json!({})), node("b", json!({"metadata": {"labels": {"disk": "ssd"}}}))],
            std::slice::from_ref(&picky),
            Volumes::default(),
        );
        assert_eq!(d[0].1, Decision::Bind("b".into()));
    }

    #[test]
    fn a_pass_sees_its_own_placements() {
        let port = json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]}]}});
        let pods = vec![pod("one", "2026-01-01T00:00:01Z", port.clone()), pod("two", "2026-01-01T00:00:02Z", port)];
        let d = plan(&[node("a", json!({}))], &pods, Volumes::default());
        assert_eq!(d[0].1, Decision::Bind("a".into()));
        assert_eq!(
            d[1].1,
            Decision::Unschedulable(
                "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.".into()
            )
        );
    }
}
