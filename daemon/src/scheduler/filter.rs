//! The filters: whether a pod may go to a node, and if not, kube-scheduler's reasons.
//!
//! They run in kube-scheduler's default plugin order and, as its framework does, stop at the
//! first plugin that rejects the node, so a node contributes the reasons of one plugin — one
//! reason, or several from NodeResourcesFit (`Too many pods` and each `Insufficient …`):
//!
//! | plugin | reason |
//! |---|---|
//! | NodeUnschedulable | `node(s) were unschedulable` |
//! | TaintToleration | `node(s) had untolerated taint(s)` |
//! | NodeAffinity | `node(s) didn't match Pod's node affinity/selector` |
//! | NodePorts | `node(s) didn't have free ports for the requested pod ports` |
//! | NodeResourcesFit | `Too many pods`, `Insufficient cpu`, `Insufficient memory`, `Insufficient ephemeral-storage`, `Insufficient <extended resource>` |
//! | VolumeBinding | `node(s) had volume node affinity conflict`, `node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)` |
//!
//! The taint reason names no taint: kube-scheduler stopped printing taint keys and values in
//! pod status (kubernetes/kubernetes#134740, 2025: they may be sensitive); earlier releases
//! said `node(s) had untolerated taint {key: value}`.
//!
//! A rejection is a bit set ([`Reasons`]) rather than strings, so the hot loop allocates
//! nothing; the strings are made once, for the error.

use super::node_state::NodeState;
use super::pod_info::PodInfo;
use super::volumes::BoundVolume;

/// The reasons a node was rejected for, one bit each; bits from [`SCALAR_BASE`] on are the
/// pod's extended resources in name order (`Insufficient <name>`).
pub(crate) type Reasons = u64;

pub(crate) const UNSCHEDULABLE: Reasons = 1 << 0;
pub(crate) const TAINT: Reasons = 1 << 1;
pub(crate) const AFFINITY: Reasons = 1 << 2;
pub(crate) const PORTS: Reasons = 1 << 3;
pub(crate) const TOO_MANY_PODS: Reasons = 1 << 4;
pub(crate) const CPU: Reasons = 1 << 5;
pub(crate) const MEMORY: Reasons = 1 << 6;
pub(crate) const EPHEMERAL: Reasons = 1 << 7;
pub(crate) const VOLUME_AFFINITY: Reasons = 1 << 8;
pub(crate) const VOLUME_MISSING: Reasons = 1 << 9;
/// The first bit of the extended resources; a pod's 54th and later extended resources are
/// still checked but share the last bit's reason (no real pod asks for that many).
pub(crate) const SCALAR_BASE: u32 = 10;

/// The fixed reasons and their text, in bit order.
pub(crate) const REASON_TEXT: &[(Reasons, &str)] = &[
    (UNSCHEDULABLE, "node(s) were unschedulable"),
    (TAINT, "node(s) had untolerated taint(s)"),
    (AFFINITY, "node(s) didn't match Pod's node affinity/selector"),
    (PORTS, "node(s) didn't have free ports for the requested pod ports"),
    (TOO_MANY_PODS, "Too many pods"),
    (CPU, "Insufficient cpu"),
    (MEMORY, "Insufficient memory"),
    (EPHEMERAL, "Insufficient ephemeral-storage"),
    (VOLUME_AFFINITY, "node(s) had volume node affinity conflict"),
    (VOLUME_MISSING, "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"),
];

fn scalar_bit(i: usize) -> Reasons {
    1 << (SCALAR_BASE as usize + i).min(63)
}

/// The text of the extended-resource bits of `reasons` for `pod` (name order).
pub(crate) fn scalar_reasons(pod: &PodInfo, reasons: Reasons) -> impl Iterator<Item = String> + '_ {
    pod.footprint
        .requests
        .scalars
        .keys()
        .enumerate()
        .filter(move |(i, _)| reasons & scalar_bit(*i) != 0)
        .map(|(_, name)| format!("Insufficient {name}"))
}

/// NodeUnschedulable: a cordoned node takes only pods that tolerate
/// `node.kubernetes.io/unschedulable:NoSchedule`.
fn unschedulable(pod: &PodInfo, node: &NodeState) -> bool {
    node.unschedulable && !pod.tolerates_cordon
}

/// TaintToleration: some NoSchedule or NoExecute taint is not tolerated.
fn untolerated(pod: &PodInfo, node: &NodeState) -> bool {
    node.blocking_taints.iter().any(|t| !super::matching::tolerated(&pod.tolerations, t))
}

/// NodeAffinity: `nodeSelector` and the required node affinity.
fn affinity_mismatch(pod: &PodInfo, node: &NodeState) -> bool {
    let selector_ok = pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
    !selector_ok || pod.required.as_ref().is_some_and(|r| !r.matches(&node.name, &node.labels))
}

/// NodePorts: a wanted host port is taken on the node.
fn ports_taken(pod: &PodInfo, node: &NodeState) -> bool {
    pod.footprint.ports.iter().any(|want| node.ports.iter().any(|used| want.conflicts(used)))
}

/// NodeResourcesFit (`fitsRequest`): the pod count, then each requested resource against
/// what is left of the node's allocatable.
fn resources(pod: &PodInfo, node: &NodeState) -> Reasons {
    let mut reasons = 0;
    if node.pods + 1 > node.allowed_pods {
        reasons |= TOO_MANY_PODS;
    }
    let want = &pod.footprint.requests;
    if want.cpu == 0 && want.memory == 0 && want.ephemeral == 0 && want.scalars.is_empty() {
        return reasons;
    }
    let (alloc, used) = (&node.allocatable, &node.requested);
    if want.cpu > 0 && want.cpu > alloc.cpu - used.cpu {
        reasons |= CPU;
    }
    if want.memory > 0 && want.memory > alloc.memory - used.memory {
        reasons |= MEMORY;
    }
    if want.ephemeral > 0 && want.ephemeral > alloc.ephemeral - used.ephemeral {
        reasons |= EPHEMERAL;
    }
    for (i, (name, q)) in want.scalars.iter().enumerate() {
        if *q > 0 && *q > alloc.scalar(name) - used.scalar(name) {
            reasons |= scalar_bit(i);
        }
    }
    reasons
}

/// VolumeBinding for bound claims (`checkBoundClaims`): the first claim whose volume is gone
/// or does not allow the node decides.
fn volumes(volumes: &[BoundVolume], node: &NodeState) -> Reasons {
    for v in volumes {
        match v {
            BoundVolume::Missing => return VOLUME_MISSING,
            BoundVolume::Affinity(sel) if !sel.matches(&node.name, &node.labels) => return VOLUME_AFFINITY,
            BoundVolume::Affinity(_) => {}
        }
    }
    0
}

/// Runs the filters in order; 0 when the pod fits the node.
pub(crate) fn check(pod: &PodInfo, bound_volumes: &[BoundVolume], node: &NodeState) -> Reasons {
    if unschedulable(pod, node) {
        return UNSCHEDULABLE;
    }
    if untolerated(pod, node) {
        return TAINT;
    }
    if affinity_mismatch(pod, node) {
        return AFFINITY;
    }
    if ports_taken(pod, node) {
        return PORTS;
    }
    let r = resources(pod, node);
    if r != 0 {
        return r;
    }
    volumes(bound_volumes, node)
}
