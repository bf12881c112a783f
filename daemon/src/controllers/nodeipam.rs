//! Pod networks for nodes, as kube-controller-manager's range allocator: a Node without
//! `spec.podCIDR` gets the first /24 of the cluster CIDR that no Node holds. The state machine
//! checks the choice again inside `apply` (pod CIDRs are unique values), so even two leaders
//! racing cannot hand one network out twice; a `Held` answer just moves on to the next.
//! The first server's own network is the one it was configured with (`--pod-cidr`).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::objects::{meta, resource};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

/// Every node's network is a /24 of the cluster CIDR.
pub const NODE_MASK: u8 = 24;

pub async fn run(store: Store, proposer: Proposer, cluster: (Ipv4Addr, u8), cancel: CancellationToken) {
    let key = resource::NODES.key();
    crate::controllers::run_loop(store.clone(), &[key.as_str()], cancel, || async {
        if let Err(e) = reconcile(&store, &proposer, cluster).await {
            tracing::warn!(error = %e, "assigning pod networks to nodes failed; will retry");
        }
    })
    .await;
}

async fn reconcile(store: &Store, proposer: &Proposer, cluster: (Ipv4Addr, u8)) -> Result<(), StoreError> {
    let key = resource::NODES.key();
    let (nodes, _) = store.list(&key, None).await?;
    let mut taken: HashSet<String> = nodes.iter().filter_map(pod_cidr).map(str::to_string).collect();
    for node in nodes.iter().filter(|n| pod_cidr(n).is_none() && !meta::is_deleting(n)) {
        loop {
            let Some(cidr) = next_free(cluster, &taken) else {
                tracing::warn!(
                    node = meta::name(node),
                    "no pod network left in the cluster CIDR for this node (CIDRNotAvailable)"
                );
                return Ok(());
            };
            taken.insert(cidr.clone());
            let mut object = node.clone();
            object["spec"]["podCIDR"] = json!(cidr);
            object["spec"]["podCIDRs"] = json!([cidr]);
            match proposer.propose(Command::Update { resource: key.clone(), object }).await {
                Ok(_) => {
                    tracing::info!(node = meta::name(node), pod_cidr = cidr, "assigned the node's pod network");
                    break;
                }
                // Held by another node meanwhile: try the next one.
                Err(StoreError::Rejected(Rejection::Invalid { .. })) => continue,
                // The node changed or went: the next pass sees it as it is.
                Err(StoreError::Rejected(_)) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn pod_cidr(node: &Value) -> Option<&str> {
    node.pointer("/spec/podCIDR").and_then(Value::as_str).filter(|c| !c.is_empty())
}

/// The first /24 of `cluster` not in `taken` (pure).
pub fn next_free(cluster: (Ipv4Addr, u8), taken: &HashSet<String>) -> Option<String> {
    let (base, len) = cluster;
    if len > NODE_MASK {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let start = u32::from(base) & mask;
    let count = 1u32 << (NODE_MASK - len);
    (0..count)
        .map(|k| format!("{}/{NODE_MASK}", Ipv4Addr::from(start + (k << (32 - NODE_MASK)))))
        .find(|c| !taken.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_free_slash_24_in_order() {
        let cluster = (Ipv4Addr::new(10, 42, 0, 0), 16);
        let mut taken = HashSet::new();
        assert_eq!(next_free(cluster, &taken).as_deref(), Some("10.42.0.0/24"));
        taken.insert("10.42.0.0/24".to_string());
        taken.insert("10.42.2.0/24".to_string());
        assert_eq!(next_free(cluster, &taken).as_deref(), Some("10.42.1.0/24"));
        let tiny = (Ipv4Addr::new(10, 42, 0, 0), 24);
        assert_eq!(next_free(tiny, &taken), None);
        assert_eq!(next_free((Ipv4Addr::new(10, 42, 0, 0), 25), &HashSet::new()), None);
    }

    #[tokio::test]
    async fn nodes_without_a_network_get_distinct_ones() {
        let (store, proposer) = crate::store::test_store().await;
        for (name, cidr) in [("a", Some("10.42.0.0/24")), ("b", None), ("c", None)] {
            let mut node =
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": name}, "spec": {}});
            if let Some(c) = cidr {
                node["spec"]["podCIDR"] = json!(c);
            }
            proposer.propose(Command::Create { resource: "nodes".into(), object: node }).await.unwrap();
        }
        reconcile(&store, &proposer, (Ipv4Addr::new(10, 42, 0, 0), 16)).await.unwrap();
        let (nodes, _) = store.list("nodes", None).await.unwrap();
        let cidrs: Vec<_> = nodes.iter().map(|n| n["spec"]["podCIDR"].as_str().unwrap().to_string()).collect();
        assert_eq!(cidrs, ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]);
        assert_eq!(nodes[1]["spec"]["podCIDRs"], json!(["10.42.1.0/24"]));
    }
}
