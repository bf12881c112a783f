//! Pod placement for a cluster: a pure, deterministic function of the nodes and pods, after
//! kube-scheduler's default profile.
//!
//! A pass builds a [`Cluster`] snapshot once — v1 Nodes, the pods already bound, the volume
//! objects ([`Volumes`]) — then calls [`Cluster::place`] for each pod to place. `place` runs
//! the filters ([`filter`]: cordon, taints, node affinity, host ports, resources, volume node
//! affinity), scores the nodes that pass ([`score`]: least allocated, preferred affinity,
//! PreferNoSchedule taints, spreading an owner's replicas), picks the best (ties: the node
//! name that sorts first) and records the pod there, so the next pod of the same pass sees
//! it. A pod that fits nowhere gets a [`FitError`] whose text is kube-scheduler's message.
//!
//! Deliberate differences from kube-scheduler: every node is evaluated (no
//! `percentageOfNodesToScore` sample and no rotating start index, so the same input always
//! gives the same node); no preemption, pod (anti-)affinity, topology spread constraints,
//! image locality, balanced allocation, scheduling gates or volume limits; readiness is read
//! from both taints and conditions ([`node_state`]).
//!
//! Invariant: pure — no IO, no clock, no randomness; JSON is read once per node and once per
//! pod, never per (pod, node) pair. Boundary: [`Cluster::new`], [`Cluster::place`],
//! [`Cluster::rank`], [`Volumes::new`], [`FitError`]. Binding (the store's `Command::Bind`),
//! the controller loop and Node objects are the caller's.

mod filter;
mod fit_error;
mod matching;
mod node_state;
mod pod_info;
mod score;
mod volumes;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::Value;

pub use fit_error::FitError;
pub use score::{MAX_NODE_SCORE, WEIGHT_LEAST_ALLOCATED, WEIGHT_NODE_AFFINITY, WEIGHT_SPREAD, WEIGHT_TAINTS};
pub use volumes::Volumes;

use matching::NodeSelector;
use node_state::NodeState;
use pod_info::{Footprint, PodInfo};
use score::Raw;

/// The absent-node reason when NodeAffinity's PreFilter narrowed the pass to named nodes
/// (`matchFields` on `metadata.name`, as DaemonSet pods carry).
const NOT_IN_NAMED_NODES: &str = "node(s) didn't satisfy plugin(s) [NodeAffinity]";
/// NodeAffinity's PreFilter message when the named nodes of every term conflict.
const NAMED_NODES_CONFLICT: &str = "pod affinity terms conflict";

/// The node a pod is bound to, if any.
fn bound_node(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
}

/// Whether a bound pod still occupies its node: it has not finished (deleting pods still do).
fn occupies(pod: &Value) -> bool {
    !matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// The nodes of a pass and what is on them.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Sorted by name: ties go to the first.
    nodes: Vec<NodeState>,
    /// Controller owner UID → its pods per node (indexed like `nodes`).
    owners: HashMap<String, Vec<u32>>,
    volumes: Volumes,
    /// Scratch for a placement's feasible nodes, kept between calls.
    raws: Vec<Raw>,
}

impl Cluster {
    /// A snapshot of `nodes` (v1 Nodes) with `pods` on them. Every pod may be given: those
    /// with a `spec.nodeName` of one of the nodes that have not finished are counted there;
    /// the others are ignored.
    pub fn new(nodes: &[Value], pods: &[Value], volumes: Volumes) -> Cluster {
        let mut nodes: Vec<NodeState> = nodes.iter().map(NodeState::new).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        let placed: Vec<(usize, Footprint)> = pods
            .iter()
            .filter(|p| occupies(p))
            .filter_map(|p| Some((*index.get(bound_node(p)?)?, Footprint::of(p))))
            .collect();
        let mut cluster = Cluster { nodes, owners: HashMap::new(), volumes, raws: Vec::new() };
        for (node, footprint) in &placed {
            cluster.occupy(*node, footprint);
        }
        cluster
    }

    /// The node names, sorted.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// Chooses a node for `pod` and records the pod there. A pod that already names its node
    /// (`spec.nodeName`) is not the scheduler's to place: its node name comes back unchecked
    /// and nothing is recorded (bound pods are counted by [`Cluster::new`]).
    pub fn place(&mut self, pod: &Value) -> Result<String, FitError> {
        if let Some(node) = bound_node(pod) {
            return Ok(node.to_string());
        }
        let info = PodInfo::new(pod);
        let mut raws = std::mem::take(&mut self.raws);
        let best = self.feasible(&info, &mut raws).map(|()| score::best(&raws));
        self.raws = raws;
        let best = best?;
        self.occupy(best, &info.footprint);
        Ok(self.nodes[best].name.clone())
    }

    /// The nodes `pod` fits with their total scores, best first (what [`Cluster::place`]
    /// chooses from), without recording anything; `spec.nodeName` is not looked at.
    pub fn rank(&self, pod: &Value) -> Result<Vec<(String, i64)>, FitError> {
        let info = PodInfo::new(pod);
        let mut raws = Vec::new();
        self.feasible(&info, &mut raws)?;
        let mut ranked: Vec<(usize, i64)> = score::totals(&raws).collect();
        ranked.sort_by_key(|(node, total)| (-total, *node));
        Ok(ranked.into_iter().map(|(node, total)| (self.nodes[node].name.clone(), total)).collect())
    }

    fn occupy(&mut self, node: usize, footprint: &Footprint) {
        self.nodes[node].add(footprint);
        if let Some(owner) = &footprint.owner {
            let count = self.nodes.len();
            self.owners.entry(owner.clone()).or_insert_with(|| vec![0; count])[node] += 1;
        }
    }

    /// PreFilter and Filter: fills `raws` with the raw scores of the nodes `pod` fits, in
    /// name order, or says why there are none.
    fn feasible(&self, pod: &PodInfo, raws: &mut Vec<Raw>) -> Result<(), FitError> {
        raws.clear();
        let all = self.nodes.len();
        if all == 0 {
            return Err(FitError { nodes: 0, pre_filter: None, reasons: Default::default() });
        }
        let named = pod.required.as_ref().and_then(NodeSelector::named_nodes);
        if named.as_ref().is_some_and(Vec::is_empty) {
            return Err(FitError::pre_filter(all, NAMED_NODES_CONFLICT));
        }
        let bound_volumes = if pod.claims.is_empty() {
            Vec::new()
        } else {
            self.volumes.pod_volumes(&pod.namespace, &pod.claims).map_err(|m| FitError::pre_filter(all, m))?
        };
        let owner_pods = pod.footprint.owner.as_ref().and_then(|o| self.owners.get(o)).map(Vec::as_slice);
        let mut counts = [0usize; 64];
        let mut absent = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if named.as_ref().is_some_and(|names| !names.contains(&node.name)) {
                absent += 1;
                continue;
            }
            let mut reasons = filter::check(pod, &bound_volumes, node);
            if reasons == 0 {
                raws.push(score::raw(pod, node, i, owner_pods));
            }
            while reasons != 0 {
                counts[reasons.trailing_zeros() as usize] += 1;
                reasons &= reasons - 1;
            }
        }
        if !raws.is_empty() {
            return Ok(());
        }
        let mut error = FitError { nodes: all, pre_filter: None, reasons: Default::default() };
        for (bit, text) in filter::REASON_TEXT {
            let n = counts[bit.trailing_zeros() as usize];
            if n > 0 {
                error.reasons.insert(text.to_string(), n);
            }
        }
        for (bit, n) in counts.iter().enumerate().skip(filter::SCALAR_BASE as usize).filter(|(_, n)| **n > 0) {
            for text in filter::scalar_reasons(pod, 1 << bit) {
                *error.reasons.entry(text).or_default() += n;
            }
        }
        if absent > 0 {
            error.reasons.insert(NOT_IN_NAMED_NODES.to_string(), absent);
        }
        Err(error)
    }
}
