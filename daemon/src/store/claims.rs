//! Values that must be unique across the cluster (a Service's ClusterIP and NodePorts, a Node's
//! pod CIDR), read from an object by a pure function. `apply` reserves them in the
//! `reservations` table inside the command's transaction, so two writers — two API requests,
//! two servers — can never both be told a value is theirs.

use serde_json::Value;

/// One value an object holds that no other object may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim {
    /// The space the value is unique in: `clusterIP`, `nodePort` or `podCIDR`.
    pub space: &'static str,
    pub value: String,
    /// The field path an error names (`spec.ports[0].nodePort`).
    pub field: String,
}

impl Claim {
    /// The 422's value and reason when `owner` (`service default/web`) already holds the value,
    /// in the API server's wording.
    pub fn conflict(&self, owner: &str) -> (String, String) {
        match self.space {
            "clusterIP" => (
                format!("[]string{{{:?}}}", self.value),
                format!("failed to allocate IP {}: provided IP is already allocated (by {owner})", self.value),
            ),
            "nodePort" => (
                self.value.clone(),
                format!("provided port is already allocated (by {owner}); choose another or omit it"),
            ),
            _ => (format!("{:?}", self.value), format!("is already allocated (by {owner})")),
        }
    }
}

/// The unique values `object` of `resource` claims.
pub(super) fn claims(resource: &str, object: &Value) -> Vec<Claim> {
    let mut out = Vec::new();
    match resource {
        "services" => {
            let ip = object.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("");
            if !ip.is_empty() && ip != "None" {
                out.push(Claim { space: "clusterIP", value: ip.to_string(), field: "spec.clusterIPs".into() });
            }
            let ports = object.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            for (i, p) in ports.iter().enumerate() {
                let Some(n) = p["nodePort"].as_i64().filter(|n| *n != 0) else { continue };
                let value = n.to_string();
                // One Service may use a NodePort for several of its ports (TCP and UDP).
                if !out.iter().any(|c| c.space == "nodePort" && c.value == value) {
                    out.push(Claim { space: "nodePort", value, field: format!("spec.ports[{i}].nodePort") });
                }
            }
        }
        "nodes" => {
            if let Some(cidr) = object.pointer("/spec/podCIDR").and_then(Value::as_str).filter(|c| !c.is_empty()) {
                out.push(Claim { space: "podCIDR", value: cidr.to_string(), field: "spec.podCIDR".into() });
            }
        }
        _ => {}
    }
    out
}

/// How an error names the owner of a claim (`service default/web`, `node edge-1`).
pub(super) fn owner(resource: &str, namespace: &str, name: &str) -> String {
    let kind = resource.strip_suffix('s').unwrap_or(resource);
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn services_and_nodes_claim_their_unique_values() {
        let svc = json!({"spec": {"clusterIP": "10.43.0.3", "ports": [
            {"port": 53, "protocol": "UDP", "nodePort": 30053},
            {"port": 53, "protocol": "TCP", "nodePort": 30053},
            {"port": 80, "nodePort": 30080},
            {"port": 81}
        ]}});
        let got: Vec<(&str, String, String)> =
            claims("services", &svc).into_iter().map(|c| (c.space, c.value, c.field)).collect();
        assert_eq!(
            got,
            vec![
                ("clusterIP", "10.43.0.3".into(), "spec.clusterIPs".into()),
                ("nodePort", "30053".into(), "spec.ports[0].nodePort".into()),
                ("nodePort", "30080".into(), "spec.ports[2].nodePort".into()),
            ]
        );
        assert!(claims("services", &json!({"spec": {"clusterIP": "None"}})).is_empty(), "headless");
        assert!(claims("services", &json!({"spec": {"type": "ExternalName"}})).is_empty());
        let node = json!({"spec": {"podCIDR": "10.42.3.0/24"}});
        assert_eq!(claims("nodes", &node)[0].value, "10.42.3.0/24");
        assert!(claims("pods", &node).is_empty());
        assert_eq!(owner("services", "default", "web"), "service default/web");
        assert_eq!(owner("nodes", "", "edge-1"), "node edge-1");
    }
}
