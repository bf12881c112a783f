//! The claims, volumes and classes a pass needs for the VolumeBinding checks: which claims
//! are bound to which PersistentVolume, and where each volume may be used
//! (`spec.nodeAffinity.required`, as local and local-path volumes carry).
//!
//! As kube-scheduler's VolumeBinding plugin: a missing or deleting claim and an unbound claim
//! of an `Immediate` class stop the pod before any node is looked at (PreFilter); a bound
//! claim whose volume is gone, or whose volume's node affinity the node does not match, rules
//! that node out. Not done here: claims of a `WaitForFirstConsumer` class that are still
//! unbound put no constraint on the node (Skerry's PV controller binds or provisions them once
//! the pod is placed; kube-scheduler would look for a matching volume per node).

use std::collections::HashMap;

use serde_json::Value;

use super::matching::NodeSelector;
use crate::objects::meta;

/// Kubernetes' annotation on a claim the PV controller finished binding.
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

#[derive(Debug, Clone)]
enum Claim {
    Deleting,
    /// Bound to the named volume (`spec.volumeName` and the bind-completed annotation).
    Bound(String),
    /// Waiting for the PV controller (or pre-bound by name, not yet completed).
    Unbound {
        delayed: bool,
    },
}

/// The volume objects of a pass, indexed.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    /// (namespace, name) → claim.
    claims: HashMap<(String, String), Claim>,
    /// Volume name → its required node affinity (`None`: usable anywhere).
    volumes: HashMap<String, Option<NodeSelector>>,
}

/// One bound claim's volume, in the order of the pod's volumes.
#[derive(Debug, Clone)]
pub(crate) enum BoundVolume {
    /// The claim names a volume that does not exist.
    Missing,
    Affinity(NodeSelector),
}

impl Volumes {
    /// Indexes v1 PersistentVolumeClaims, PersistentVolumes and storage.k8s.io/v1
    /// StorageClasses (the classes tell an `Immediate` claim from a `WaitForFirstConsumer` one).
    pub fn new(claims: &[Value], volumes: &[Value], classes: &[Value]) -> Volumes {
        let delayed_classes: Vec<&str> =
            classes.iter().filter(|c| c["volumeBindingMode"] == "WaitForFirstConsumer").map(meta::name).collect();
        let claims = claims
            .iter()
            .map(|c| {
                let key = (meta::namespace(c).to_string(), meta::name(c).to_string());
                let volume = c.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("");
                let completed = c.pointer("/metadata/annotations").and_then(|a| a.get(BIND_COMPLETED)).is_some();
                let class = c
                    .pointer("/spec/storageClassName")
                    .or_else(|| c.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let state = if meta::is_deleting(c) {
                    Claim::Deleting
                } else if !volume.is_empty() && completed {
                    Claim::Bound(volume.to_string())
                } else {
                    Claim::Unbound { delayed: !class.is_empty() && delayed_classes.contains(&class) }
                };
                (key, state)
            })
            .collect();
        let volumes = volumes
            .iter()
            .map(|pv| {
                let required =
                    pv.pointer("/spec/nodeAffinity/required").filter(|r| r.is_object()).map(NodeSelector::parse);
                (meta::name(pv).to_string(), required)
            })
            .collect();
        Volumes { claims, volumes }
    }

    /// The VolumeBinding PreFilter for a pod's claims: the bound claims' volumes, or the
    /// message that makes the pod unschedulable everywhere.
    pub(crate) fn pod_volumes(&self, namespace: &str, claims: &[String]) -> Result<Vec<BoundVolume>, String> {
        let mut bound = Vec::new();
        let mut unbound_immediate = false;
        for name in claims {
            match self.claims.get(&(namespace.to_string(), name.clone())) {
                None => return Err(format!("persistentvolumeclaim {name:?} not found")),
                Some(Claim::Deleting) => return Err(format!("persistentvolumeclaim {name:?} is being deleted")),
                Some(Claim::Unbound { delayed }) => unbound_immediate |= !delayed,
                Some(Claim::Bound(volume)) => bound.push(match self.volumes.get(volume) {
                    None => BoundVolume::Missing,
                    Some(None) => continue,
                    Some(Some(selector)) => BoundVolume::Affinity(selector.clone()),
                }),
            }
        }
        if unbound_immediate {
            return Err("pod has unbound immediate PersistentVolumeClaims".to_string());
        }
        Ok(bound)
    }
}
