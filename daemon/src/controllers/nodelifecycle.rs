//! Node liveness as the leader sees it, until gossip takes over (next issue): the leader asks
//! every other node's cluster port for `/healthz` every few seconds; a node that has not
//! answered for the grace period (`--node-monitor-grace-period`, kube-controller-manager's
//! default 40 s, counted from the start of the leader's term, so a new leader gives every node a
//! full period) gets its `Ready` condition set to `Unknown` with kube's reason and message — the
//! scheduler then places nothing there. The node itself sets `Ready` back to `True` once it
//! sees its Node again (its registration reacts to changes of its own Node). Written only on
//! change, with the Node's resourceVersion as precondition: no heartbeat writes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::objects::{meta, resource};
use crate::store::{BoxFuture, Command, Proposer, Store};

/// How often every node is asked.
pub const PROBE_PERIOD: Duration = Duration::from_secs(5);
/// How long one answer may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// kube-controller-manager's `--node-monitor-grace-period` default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(40);

/// Whether a node answers.
pub trait Probe: Send + Sync {
    fn reachable<'a>(&'a self, node: &'a Value) -> BoxFuture<'a, bool>;
}

pub async fn run(
    store: Store,
    proposer: Proposer,
    me: String,
    probe: std::sync::Arc<dyn Probe>,
    grace: Duration,
    cancel: CancellationToken,
) {
    let mut silence = Silence::new(grace, Instant::now());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PROBE_PERIOD) => {}
        }
        let Ok((nodes, _)) = store.list(&resource::NODES.key(), None).await else { continue };
        let others: Vec<&Value> = nodes.iter().filter(|n| meta::name(n) != me).collect();
        let answers = futures::future::join_all(others.iter().map(|n| probe.reachable(n))).await;
        let answers: Vec<(String, bool)> =
            others.iter().zip(answers).map(|(n, a)| (meta::name(n).to_string(), a)).collect();
        let silent = silence.observe(Instant::now(), &answers);
        for node in others.into_iter().filter(|n| silent.iter().any(|s| s == meta::name(n))) {
            let name = meta::name(node).to_string();
            let Some(status) = unknown(node, &meta::now()) else { continue };
            let command = Command::UpdateStatus {
                resource: resource::NODES.key(),
                namespace: String::new(),
                name: name.clone(),
                uid: Some(meta::uid(node).to_string()),
                resource_version: Some(meta::resource_version(node).to_string()),
                status,
            };
            match proposer.propose(command).await {
                Ok(_) => {
                    tracing::warn!(node = name, grace = ?grace, "a node stopped answering: its Ready condition is now Unknown")
                }
                Err(e) => tracing::debug!(node = name, error = %e, "marking a silent node Unknown; will retry"),
            }
        }
    }
}

/// Who has been silent for the grace period: each node's last answer, and the term's start for
/// a node not heard from in this term yet (pure; time passed in).
pub struct Silence {
    grace: Duration,
    start: Instant,
    last: HashMap<String, Instant>,
}

impl Silence {
    pub fn new(grace: Duration, start: Instant) -> Silence {
        Silence { grace, start, last: HashMap::new() }
    }

    /// Records `answers` (node, answered) heard at `now`; returns the nodes silent for at least
    /// the grace period. Nodes no longer listed are forgotten.
    pub fn observe(&mut self, now: Instant, answers: &[(String, bool)]) -> Vec<String> {
        self.last.retain(|name, _| answers.iter().any(|(n, _)| n == name));
        let mut silent = Vec::new();
        for (name, answered) in answers {
            if *answered {
                self.last.insert(name.clone(), now);
            } else if now.duration_since(*self.last.get(name).unwrap_or(&self.start)) >= self.grace {
                silent.push(name.clone());
            }
        }
        silent
    }
}

/// `node`'s status with `Ready` Unknown as kube-controller-manager writes it; `None` when it is
/// already so.
pub fn unknown(node: &Value, now: &str) -> Option<Value> {
    let mut status = node.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    if conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "Unknown") {
        return None;
    }
    let heartbeat = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c.get("lastHeartbeatTime").cloned())
        .unwrap_or_else(|| json!(now));
    conditions.retain(|c| c["type"] != "Ready");
    conditions.push(json!({
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": heartbeat, "lastTransitionTime": now,
    }));
    status["conditions"] = json!(conditions);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_becomes_unknown_with_kubes_words_once() {
        let node = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "t0"},
            {"type": "MemoryPressure", "status": "False"}]}});
        let status = unknown(&node, "t1").unwrap();
        let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["message"], "Kubelet stopped posting node status.");
        assert_eq!(ready["lastHeartbeatTime"], "t0");
        assert_eq!(ready["lastTransitionTime"], "t1");
        assert_eq!(status["conditions"].as_array().unwrap().len(), 2, "other conditions kept");
        let again = json!({"status": status});
        assert_eq!(unknown(&again, "t2"), None, "written only on change");
    }

    #[test]
    fn silent_for_the_grace_period_counted_from_the_last_answer_or_the_term() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut silence = Silence::new(Duration::from_secs(40), t0);
        let heard = |a: bool, b: bool| vec![("a".to_string(), a), ("b".to_string(), b)];
        assert!(silence.observe(at(5), &heard(true, false)).is_empty());
        // b never answered in this term: silent 40 s after the term began.
        assert!(silence.observe(at(39), &heard(false, false)).is_empty());
        assert_eq!(silence.observe(at(40), &heard(false, false)), ["b"]);
        // a answered last at 5 s: silent from 45 s.
        assert_eq!(silence.observe(at(44), &heard(false, false)), ["b"]);
        assert_eq!(silence.observe(at(45), &heard(false, false)), ["a", "b"]);
        // An answer resets the count.
        assert!(silence.observe(at(50), &heard(true, true)).is_empty());
        assert!(silence.observe(at(89), &heard(false, false)).is_empty());
        assert_eq!(silence.observe(at(90), &heard(false, true)), ["a"]);
    }
}
