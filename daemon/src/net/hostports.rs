//! Keeps Skerry's nftables table in step with the pods of this node: one DNAT per hostPort of
//! a pod that has an address, masquerade per configuration. Level-triggered: the whole desired
//! table is computed from the store and applied when it differs from what was last applied.

use std::net::Ipv4Addr;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::nft::{self, HostPort, NodeRules};
use crate::objects::{meta, resource};
use crate::store::Store;

/// The hostPorts of the pods bound to `node` that have an address and are not finished.
pub fn host_ports(pods: &[Value], node: &str) -> Vec<HostPort> {
    let mut out = Vec::new();
    for pod in pods {
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
            continue;
        }
        if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(pod_ip) =
            pod.pointer("/status/podIP").and_then(Value::as_str).and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
            for p in c["ports"].as_array().into_iter().flatten() {
                let Some(host_port) = p["hostPort"].as_u64().filter(|h| *h > 0 && *h <= 65535) else { continue };
                let Some(container_port) = p["containerPort"].as_u64().filter(|c| *c > 0 && *c <= 65535) else {
                    continue;
                };
                out.push(HostPort {
                    protocol: p["protocol"].as_str().unwrap_or("TCP").to_lowercase(),
                    host_ip: p["hostIP"].as_str().and_then(|h| h.parse().ok()),
                    host_port: host_port as u16,
                    pod_ip,
                    container_port: container_port as u16,
                });
            }
        }
    }
    out.sort();
    out
}

pub async fn run(store: Store, node: String, pod_cidr: (Ipv4Addr, u8), masquerade: bool, shutdown: CancellationToken) {
    let key = resource::PODS.key();
    let applied = std::sync::Arc::new(tokio::sync::Mutex::new(None::<NodeRules>));
    crate::controllers::run_loop(store.clone(), &[key.as_str()], shutdown, || {
        let store = store.clone();
        let node = node.clone();
        let key = key.clone();
        let applied = applied.clone();
        async move {
            let mut applied = applied.lock().await;
            let Ok((pods, _)) = store.list(&key, None).await else { return };
            let live: Vec<Value> = pods.into_iter().filter(|p| !meta::is_deleting(p)).collect();
            let want = NodeRules { pod_cidr, masquerade, host_ports: host_ports(&live, &node) };
            if applied.as_ref() == Some(&want) {
                return;
            }
            match nft::apply(&nft::render(&want)).await {
                Ok(()) => *applied = Some(want),
                Err(e) => tracing::error!(error = %e, "programming nftables failed; will retry"),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_ports_of_running_pods_on_this_node() {
        let pod = |name: &str, node: &str, ip: Option<&str>, phase: &str| {
            json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.1"}, {"containerPort": 9000}
            ]}]}, "status": {"phase": phase, "podIP": ip}})
        };
        let pods = vec![
            pod("a", "n1", Some("10.42.0.5"), "Running"),
            pod("b", "n2", Some("10.42.0.6"), "Running"),
            pod("c", "n1", None, "Pending"),
            pod("d", "n1", Some("10.42.0.7"), "Succeeded"),
        ];
        let ports = host_ports(&pods, "n1");
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[0],
            HostPort {
                protocol: "tcp".into(),
                host_ip: None,
                host_port: 8080,
                pod_ip: "10.42.0.5".parse().unwrap(),
                container_port: 80
            }
        );
        assert_eq!(ports[1].protocol, "udp");
        assert_eq!(ports[1].host_ip, Some("10.0.0.1".parse().unwrap()));
    }
}
