//! Binds pending pods to a node. A pure choice function plus a thin loop.
//!
//! On a single node every pod goes to this node; the function takes the node list so that
//! clustering can add real placement without changing the loop.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder};
use crate::objects::{meta, resource};
use crate::store::{Command, Store};

/// Chooses a node for `pod` among `nodes`; `None` when none fits.
pub fn choose<'a>(pod: &Value, nodes: &'a [String]) -> Option<&'a String> {
    let wanted = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    match wanted {
        Some(n) => nodes.iter().find(|x| x.as_str() == n),
        None => nodes.first(),
    }
}

/// Pods that still need a node: not bound, not being deleted.
pub fn unbound(pods: &[Value]) -> impl Iterator<Item = &Value> {
    pods.iter().filter(|p| p.pointer("/spec/nodeName").is_none() && !meta::is_deleting(p))
}

pub async fn run(store: Store, node: String, shutdown: CancellationToken) {
    let recorder = Recorder::new(store.clone(), "default-scheduler", node.clone());
    let nodes = vec![node];
    let key = resource::PODS.key();
    crate::controllers::run_loop(store.clone(), &[key.as_str()], shutdown, || async {
        let Ok((pods, _)) = store.list(&key, None).await else { return };
        for pod in unbound(&pods) {
            let Some(target) = choose(pod, &nodes) else { continue };
            let mut bound = pod.clone();
            bound["spec"]["nodeName"] = json!(target);
            let conditions = bound["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()}));
            bound["status"]["conditions"] = json!(conditions);
            match store.apply(Command::Update { resource: key.clone(), object: bound.clone() }).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_named_node_or_first() {
        let nodes = vec!["a".to_string(), "b".to_string()];
        assert_eq!(choose(&json!({"spec": {}}), &nodes), Some(&nodes[0]));
        assert_eq!(choose(&json!({"spec": {"nodeName": "b"}}), &nodes), Some(&nodes[1]));
        assert_eq!(choose(&json!({"spec": {"nodeName": "z"}}), &nodes), None);
        let pods = vec![json!({"spec": {"nodeName": "a"}}), json!({"spec": {}}), json!({"metadata": {"deletionTimestamp": "x"}, "spec": {}})];
        assert_eq!(unbound(&pods).count(), 1);
    }
}
