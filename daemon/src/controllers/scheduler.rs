//! Binds pending pods to a node. A pure choice function plus a thin loop.
//!
//! On a single node every pod goes to this node; the function takes the node list so that
//! clustering can add real placement without changing the loop.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder};
use crate::objects::{meta, resource};
use crate::store::{Command, Proposer, Store};

/// Chooses a node for `pod` among `nodes`; `None` when none fits.
pub fn choose<'a>(pod: &Value, nodes: &'a [String]) -> Option<&'a String> {
    let wanted = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    match wanted {
        Some(n) => nodes.iter().find(|x| x.as_str() == n),
        None => nodes.first(),
    }
}

/// The (protocol, hostIP, hostPort) triples a pod asks for.
fn wanted_ports(pod: &Value) -> Vec<(String, String, u64)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let port = p["hostPort"].as_u64().filter(|h| *h > 0)?;
            let ip = p["hostIP"].as_str().filter(|h| !h.is_empty()).unwrap_or("0.0.0.0").to_string();
            Some((p["protocol"].as_str().unwrap_or("TCP").to_string(), ip, port))
        })
        .collect()
}

/// Whether `pod` fits beside the pods already on a node: no hostPort taken twice (an
/// unspecified hostIP conflicts with every address). Returns kubelet's reason when not.
pub fn fits(pod: &Value, on_node: &[&Value]) -> Result<(), String> {
    let used: Vec<(String, String, u64)> = on_node.iter().flat_map(|p| wanted_ports(p)).collect();
    for (proto, ip, port) in wanted_ports(pod) {
        let clash =
            used.iter().any(|(p, i, n)| *p == proto && *n == port && (i == &ip || i == "0.0.0.0" || ip == "0.0.0.0"));
        if clash {
            return Err(format!("0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports (hostPort {port}/{proto} is taken)."));
        }
    }
    Ok(())
}

/// Pods that occupy a node: bound there and not finished.
fn occupying<'a>(pods: &'a [Value], node: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
        .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
        .collect()
}

/// Pods that still need a node: not bound, not being deleted.
pub fn unbound(pods: &[Value]) -> impl Iterator<Item = &Value> {
    pods.iter().filter(|p| p.pointer("/spec/nodeName").is_none() && !meta::is_deleting(p))
}

pub async fn run(store: Store, proposer: Proposer, node: String, shutdown: CancellationToken) {
    let recorder = Recorder::new(store.clone(), proposer.clone(), "default-scheduler", node.clone());
    let nodes = vec![node];
    let key = resource::PODS.key();
    crate::controllers::run_loop(store.clone(), &[key.as_str()], shutdown, || async {
        let Ok((pods, _)) = store.list(&key, None).await else { return };
        let mut placed: Vec<Value> = Vec::new();
        let mut binds = Vec::new();
        for pod in unbound(&pods) {
            let Some(target) = choose(pod, &nodes) else { continue };
            let mut on_node = occupying(&pods, target);
            on_node.extend(placed.iter());
            if let Err(reason) = fits(pod, &on_node) {
                unschedulable(&proposer, &recorder, pod, &reason).await;
                continue;
            }
            placed.push(pod.clone());
            binds.push((pod, target.clone()));
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

    #[test]
    fn chooses_named_node_or_first() {
        let nodes = vec!["a".to_string(), "b".to_string()];
        assert_eq!(choose(&json!({"spec": {}}), &nodes), Some(&nodes[0]));
        assert_eq!(choose(&json!({"spec": {"nodeName": "b"}}), &nodes), Some(&nodes[1]));
        assert_eq!(choose(&json!({"spec": {"nodeName": "z"}}), &nodes), None);
        let pods = vec![
            json!({"spec": {"nodeName": "a"}}),
            json!({"spec": {}}),
            json!({"metadata": {"deletionTimestamp": "x"}, "spec": {}}),
        ];
        assert_eq!(unbound(&pods).count(), 1);
    }

    #[test]
    fn host_ports_conflict() {
        let pod = |port: u64, ip: Option<&str>, proto: &str| json!({"spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}});
        let a = pod(8080, None, "TCP");
        assert!(fits(&pod(8080, None, "TCP"), &[&a]).is_err());
        assert!(fits(&pod(8080, Some("10.0.0.1"), "TCP"), &[&a]).is_err());
        assert!(fits(&pod(8080, None, "UDP"), &[&a]).is_ok());
        assert!(fits(&pod(8081, None, "TCP"), &[&a]).is_ok());
        let b = pod(9090, Some("10.0.0.1"), "TCP");
        assert!(fits(&pod(9090, Some("10.0.0.2"), "TCP"), &[&b]).is_ok());
        assert!(fits(&json!({"spec": {"containers": [{"name": "x"}]}}), &[&a, &b]).is_ok());
    }
}
