//! One node as the scheduler sees it during a pass: labels, taints (its own and those its
//! conditions imply), allocatable resources, and what the pods already there occupy.
//!
//! Readiness is handled as taints. kube-scheduler never reads node conditions: the node
//! lifecycle controller turns them into `NoSchedule` taints (`node.kubernetes.io/not-ready`
//! for `Ready=False`, `…/unreachable` for `Ready=Unknown`, `…/memory-pressure`,
//! `…/disk-pressure`, `…/pid-pressure`, `…/network-unavailable`), and the TaintToleration
//! filter does the rest. Skerry's membership loop is to write those taints too, but a pass may
//! see a condition before its taint; so a node here carries its own taints plus the ones its
//! conditions imply (not twice). Either source keeps a pod off, the message is the taint
//! filter's, and a pod that tolerates the taint (a DaemonSet-like pod tolerating `not-ready`)
//! is placed as Kubernetes would. A node without a `Ready` condition has not reported yet and
//! counts as not ready (kubelet registers nodes with the `not-ready` taint).

use serde_json::Value;

use super::matching::{Effect, Labels, Taint};
use super::pod_info::{Footprint, Requests};
use crate::objects::quantity;

/// The condition → taint table of the node lifecycle controller
/// (`nodeConditionToTaintKeyStatusMap`): (condition, status, taint key).
const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", "node.kubernetes.io/not-ready"),
    ("Ready", "Unknown", "node.kubernetes.io/unreachable"),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
];

/// The taint of a node that has not reported `Ready` yet.
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The `NoSchedule` taints a node's conditions imply.
fn condition_taints(node: &Value) -> Vec<Taint> {
    let conditions = node.pointer("/status/conditions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut keys: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(kind, status, _)| conditions.iter().any(|c| c["type"] == *kind && c["status"] == *status))
        .map(|(_, _, key)| *key)
        .collect();
    if !conditions.iter().any(|c| c["type"] == "Ready") {
        keys.push(NOT_READY);
    }
    keys.into_iter()
        .map(|key| Taint { key: key.to_string(), value: String::new(), effect: Effect::NoSchedule })
        .collect()
}

#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub name: String,
    pub labels: Labels,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// NoSchedule and NoExecute taints, own and implied.
    pub blocking_taints: Vec<Taint>,
    /// PreferNoSchedule taints (they only lower the score).
    pub prefer_taints: Vec<Taint>,
    /// `status.allocatable` (or `status.capacity` when absent, as the API server defaults it).
    pub allocatable: Requests,
    pub allowed_pods: i64,
    /// The sum of the effective requests of the pods here.
    pub requested: Requests,
    /// CPU and memory requested with the scoring defaults.
    pub non_zero: (i64, i64),
    pub pods: i64,
    pub ports: Vec<super::pod_info::HostPort>,
}

impl NodeState {
    pub(crate) fn new(node: &Value) -> NodeState {
        let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        let mut taints: Vec<Taint> =
            node.pointer("/spec/taints").and_then(Value::as_array).into_iter().flatten().map(Taint::parse).collect();
        for implied in condition_taints(node) {
            if !taints.iter().any(|t| t.key == implied.key && t.effect == implied.effect) {
                taints.push(implied);
            }
        }
        let (blocking_taints, rest): (Vec<Taint>, Vec<Taint>) = taints.into_iter().partition(Taint::blocks);
        let prefer_taints = rest.into_iter().filter(|t| t.effect == Effect::PreferNoSchedule).collect();
        let status = &node["status"];
        let list = status.get("allocatable").filter(|a| a.is_object()).unwrap_or(&status["capacity"]);
        let allowed_pods = match &list["pods"] {
            Value::String(s) => quantity::parse_bytes(s).ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        NodeState {
            name,
            labels,
            unschedulable: node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
            blocking_taints,
            prefer_taints,
            allocatable: Requests::parse(list),
            allowed_pods,
            requested: Requests::default(),
            non_zero: (0, 0),
            pods: 0,
            ports: Vec::new(),
        }
    }

    /// Records a pod on this node (bound before the pass, or placed during it).
    pub(crate) fn add(&mut self, pod: &Footprint) {
        self.requested.add(&pod.requests);
        self.non_zero.0 = self.non_zero.0.saturating_add(pod.non_zero.0);
        self.non_zero.1 = self.non_zero.1.saturating_add(pod.non_zero.1);
        self.pods += 1;
        self.ports.extend(pod.ports.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(node: &NodeState) -> Vec<&str> {
        node.blocking_taints.iter().map(|t| t.key.as_str()).collect()
    }

    #[test]
    fn conditions_become_taints() {
        let node = |conditions: Value, taints: Value| {
            NodeState::new(
                &json!({"metadata": {"name": "n"}, "spec": {"taints": taints}, "status": {"conditions": conditions}}),
            )
        };
        assert!(keys(&node(json!([{"type": "Ready", "status": "True"}]), json!([]))).is_empty());
        assert_eq!(
            keys(&node(json!([{"type": "Ready", "status": "False"}]), json!([]))),
            ["node.kubernetes.io/not-ready"]
        );
        assert_eq!(
            keys(&node(json!([{"type": "Ready", "status": "Unknown"}]), json!([]))),
            ["node.kubernetes.io/unreachable"]
        );
        assert_eq!(keys(&node(json!([]), json!([]))), ["node.kubernetes.io/not-ready"]);
        assert_eq!(
            keys(&node(
                json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "True"}]),
                json!([])
            )),
            ["node.kubernetes.io/disk-pressure"]
        );
        // The lifecycle controller's taint and the condition it came from count once; its
        // NoExecute twin is kept as written.
        let both = node(
            json!([{"type": "Ready", "status": "Unknown"}]),
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}, {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        assert_eq!(keys(&both), ["node.kubernetes.io/unreachable", "node.kubernetes.io/unreachable"]);
        // A stale taint on a Ready node still counts: taints are the truth, conditions add to them.
        let stale = node(
            json!([{"type": "Ready", "status": "True"}]),
            json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        );
        assert_eq!(keys(&stale), ["node.kubernetes.io/not-ready"]);
        let prefer =
            node(json!([{"type": "Ready", "status": "True"}]), json!([{"key": "spot", "effect": "PreferNoSchedule"}]));
        assert!(prefer.blocking_taints.is_empty() && prefer.prefer_taints.len() == 1);
    }

    #[test]
    fn allocatable_or_capacity() {
        let n = NodeState::new(&json!({"metadata": {"name": "n"}, "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3500m", "memory": "7Gi", "ephemeral-storage": "50Gi", "pods": "100", "nvidia.com/gpu": "2"}}}));
        assert_eq!((n.allocatable.cpu, n.allocatable.memory, n.allowed_pods), (3500, 7 << 30, 100));
        assert_eq!((n.allocatable.ephemeral, n.allocatable.scalar("nvidia.com/gpu")), (50 << 30, 2));
        let n = NodeState::new(&json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": 2, "pods": 10}}}));
        assert_eq!((n.allocatable.cpu, n.allowed_pods), (2000, 10));
        let n = NodeState::new(&json!({"metadata": {"name": "n"}}));
        assert_eq!((n.allocatable.cpu, n.allowed_pods), (0, 0));
    }
}
