//! Why a pod fits no node, rendered exactly as kube-scheduler's `FitError.Error()`.

use std::collections::BTreeMap;
use std::fmt;

/// Why a pod fits no node. `Display` is kube-scheduler's message, for the pod's
/// `PodScheduled=False` condition and the `FailedScheduling` event:
///
/// - no nodes at all: `no nodes available to schedule pods` (`ErrNoNodesAvailable`);
/// - a PreFilter rejected the pod (the same answer for every node):
///   `0/5 nodes are available: pod has unbound immediate PersistentVolumeClaims.`;
/// - otherwise each reason with the number of nodes that gave it, as `<count> <reason>`,
///   sorted as strings (Go's `sort.Strings`, so `10 …` sorts before `2 …`) and joined:
///   `0/5 nodes are available: 2 Insufficient memory, 3 node(s) didn't match Pod's node affinity/selector.`
///
/// A node may give several reasons (NodeResourcesFit's), so the counts may add up to more
/// than the nodes. kube-scheduler appends the preemption plugin's verdict (`preemption: …`);
/// Skerry does not preempt, so there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// The nodes of the pass.
    pub nodes: usize,
    /// A PreFilter's message: the pod fits nowhere whatever the node.
    pub pre_filter: Option<String>,
    /// Reason → how many nodes gave it.
    pub reasons: BTreeMap<String, usize>,
}

impl FitError {
    pub(crate) fn pre_filter(nodes: usize, message: impl Into<String>) -> FitError {
        FitError { nodes, pre_filter: Some(message.into()), reasons: BTreeMap::new() }
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.nodes)?;
        if let Some(message) = &self.pre_filter {
            return write!(f, " {message}.");
        }
        let mut histogram: Vec<String> = self.reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        histogram.sort();
        if !histogram.is_empty() {
            write!(f, " {}.", histogram.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_kube_scheduler() {
        let reasons = |pairs: &[(&str, usize)]| pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        let e = FitError {
            nodes: 12,
            pre_filter: None,
            reasons: reasons(&[("Insufficient cpu", 2), ("Too many pods", 10)]),
        };
        // String order: "10 Too many pods" before "2 Insufficient cpu".
        assert_eq!(e.to_string(), "0/12 nodes are available: 10 Too many pods, 2 Insufficient cpu.");
        let e = FitError::pre_filter(3, "pod has unbound immediate PersistentVolumeClaims");
        assert_eq!(e.to_string(), "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.");
        let e = FitError { nodes: 0, pre_filter: None, reasons: BTreeMap::new() };
        assert_eq!(e.to_string(), "no nodes available to schedule pods");
    }
}
