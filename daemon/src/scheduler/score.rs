//! The scores: every node that passed the filters gets 0–100 from each scorer, normalised over
//! those nodes as kube-scheduler's plugins normalise them, then a weighted sum; the highest
//! sum wins and a tie goes to the node whose name sorts first.
//!
//! | scorer | after | raw score | normalised | weight |
//! |---|---|---|---|---|
//! | least allocated | NodeResourcesFit, `LeastAllocated` | mean over cpu and memory of `(allocatable − requested) × 100 / allocatable`, 0 when full; requests with the scoring defaults (100m, 200 MiB per container without one) including the pod's | already 0–100 | [`WEIGHT_LEAST_ALLOCATED`] = 1 |
//! | preferred node affinity | NodeAffinity | sum of the weights of the matching preferred terms | `× 100 / max` (all 0 when max is 0) | [`WEIGHT_NODE_AFFINITY`] = 2 |
//! | PreferNoSchedule taints | TaintToleration | PreferNoSchedule taints the pod does not tolerate | `100 − × 100 / max` (all 100 when max is 0) | [`WEIGHT_TAINTS`] = 3 |
//! | spreading | SelectorSpread's formula at PodTopologySpread's weight | pods of the same controller owner on the node | `(max − count) × 100 / max` (all 100 when max is 0) | [`WEIGHT_SPREAD`] = 2 |
//!
//! The weights are kube-scheduler's defaults for those plugins. Spreading counts pods of the
//! pod's controller ownerReference rather than pods matching Services and controllers'
//! selectors (SelectorSpread) or the default topology spread constraints (PodTopologySpread);
//! for replicas of one ReplicaSet that is the same set. Left out: BalancedAllocation,
//! ImageLocality and InterPodAffinity. All arithmetic is on integers, so a placement is a
//! pure function of the input.

use super::matching::tolerated;
use super::node_state::NodeState;
use super::pod_info::PodInfo;

/// `framework.MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;
/// NodeResourcesFit's default weight.
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
/// NodeAffinity's default weight.
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
/// TaintToleration's default weight.
pub const WEIGHT_TAINTS: i64 = 3;
/// PodTopologySpread's default weight.
pub const WEIGHT_SPREAD: i64 = 2;

/// One feasible node's raw scores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw {
    pub node: usize,
    least_allocated: i64,
    affinity: i64,
    taints: i64,
    same_owner: i64,
}

/// `leastRequestedScore`.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    match (capacity - requested).checked_mul(MAX_NODE_SCORE) {
        Some(scaled) => scaled / capacity,
        // Only beyond 92 PB of memory; 128-bit division is a slow library call, kept off the hot path.
        None => ((i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE)) / i128::from(capacity)) as i64,
    }
}

/// The raw scores of `node` (index `index`) for `pod`; `owner_pods` is the pod's owner's pod
/// count per node, if it has an owner.
pub(crate) fn raw(pod: &PodInfo, node: &NodeState, index: usize, owner_pods: Option<&[u32]>) -> Raw {
    let (cpu, memory) = pod.footprint.non_zero;
    let cpu_score = least_requested(node.non_zero.0.saturating_add(cpu), node.allocatable.cpu);
    let memory_score = least_requested(node.non_zero.1.saturating_add(memory), node.allocatable.memory);
    let affinity = pod.preferred.iter().filter(|(_, t)| t.matches(&node.name, &node.labels)).map(|(w, _)| *w).sum();
    let taints = node.prefer_taints.iter().filter(|t| !tolerated(&pod.prefer_tolerations, t)).count() as i64;
    Raw {
        node: index,
        least_allocated: (cpu_score + memory_score) / 2,
        affinity,
        taints,
        same_owner: owner_pods.map_or(0, |counts| i64::from(counts[index])),
    }
}

/// `DefaultNormalizeScore`: scales to 0–100 by the largest raw score; `reverse` makes fewer better.
fn normalize(raw: i64, max: i64, reverse: bool) -> i64 {
    if max == 0 {
        return if reverse { MAX_NODE_SCORE } else { 0 };
    }
    let score = MAX_NODE_SCORE * raw / max;
    if reverse {
        MAX_NODE_SCORE - score
    } else {
        score
    }
}

/// The weighted totals of the feasible nodes, in the order given.
pub(crate) fn totals(raws: &[Raw]) -> impl Iterator<Item = (usize, i64)> + '_ {
    let max = |f: fn(&Raw) -> i64| raws.iter().map(f).max().unwrap_or(0);
    let (max_affinity, max_taints, max_owner) = (max(|r| r.affinity), max(|r| r.taints), max(|r| r.same_owner));
    raws.iter().map(move |r| {
        let spread =
            if max_owner == 0 { MAX_NODE_SCORE } else { MAX_NODE_SCORE * (max_owner - r.same_owner) / max_owner };
        let total = WEIGHT_LEAST_ALLOCATED * r.least_allocated
            + WEIGHT_NODE_AFFINITY * normalize(r.affinity, max_affinity, false)
            + WEIGHT_TAINTS * normalize(r.taints, max_taints, true)
            + WEIGHT_SPREAD * spread;
        (r.node, total)
    })
}

/// The index of the best node: the highest total, the first (smallest name) among equals.
/// `raws` is non-empty and in node-name order.
pub(crate) fn best(raws: &[Raw]) -> usize {
    let mut best = (usize::MAX, i64::MIN);
    for (node, total) in totals(raws) {
        if total > best.1 {
            best = (node, total);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_formulas() {
        assert_eq!(least_requested(0, 4000), 100);
        assert_eq!(least_requested(1000, 4000), 75);
        assert_eq!(least_requested(4001, 4000), 0);
        assert_eq!(least_requested(10, 0), 0);
        assert_eq!(least_requested(0, i64::MAX), 100);
        assert_eq!(least_requested(i64::MAX / 2, i64::MAX), 50);
        assert_eq!(normalize(3, 4, false), 75);
        assert_eq!(normalize(0, 0, false), 0);
        assert_eq!(normalize(1, 4, true), 75);
        assert_eq!(normalize(0, 0, true), 100);
    }
}
