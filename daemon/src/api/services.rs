//! Service address and port allocation: ClusterIPs from the service CIDR, NodePorts from the
//! node-port range, picked from the stored Services this replica sees. Picking is only a
//! proposal: the store's state machine reserves each value in the write's own transaction and
//! refuses one that another Service holds (two requests or two servers racing), so the API
//! picks again.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::error::ApiError;
use crate::objects::meta;

/// The service network, as configured.
#[derive(Debug)]
pub struct ServiceNet {
    pub cidr: (Ipv4Addr, u8),
    /// The cluster DNS address (reserved for `kube-system/kube-dns`).
    pub dns_ip: Ipv4Addr,
    pub node_ports: (u16, u16),
}

fn invalid(field: String, value: &str, why: String) -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("Service is invalid: {field}: Invalid value: {value}: {why}"),
    );
    e.details = json!({"kind": "Service", "causes": [{"field": field, "message": why, "reason": "FieldValueInvalid"}]});
    e
}

fn in_cidr(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn owner(svc: &Value) -> String {
    format!("{}/{}", meta::namespace(svc), meta::name(svc))
}

impl ServiceNet {
    /// Fills `spec.clusterIP(s)` and `spec.ports[].nodePort` of `new`, keeping what `old` had,
    /// honouring explicit values when free, rejecting conflicts with a 422 naming the owner.
    /// `others` are all other stored Services. New values are the first free ones from
    /// `start` on (0: the lowest; a random start spreads writers that raced for one value).
    pub fn allocate(&self, new: &mut Value, old: Option<&Value>, others: &[Value], start: u64) -> Result<(), ApiError> {
        let kind = new.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        let spec = new["spec"].as_object_mut().ok_or_else(|| ApiError::bad_request("spec is required"))?;
        if kind == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            return Ok(());
        }
        // ClusterIP: immutable once set.
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(str::to_string);
        let asked = spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let ip = match (old_ip, asked) {
            (Some(o), Some(a)) if o != a => {
                return Err(invalid("spec.clusterIP".into(), &format!("{a:?}"), "field is immutable".into()));
            }
            (Some(o), _) => o,
            (None, Some(a)) if a == "None" => a,
            (None, Some(a)) => {
                let addr: Ipv4Addr = a.parse().map_err(|_| {
                    invalid("spec.clusterIP".into(), &format!("{a:?}"), "must be a valid IP address".into())
                })?;
                if !in_cidr(addr, self.cidr) {
                    return Err(invalid(
                        "spec.clusterIPs".into(),
                        &format!("[]string{{{a:?}}}"),
                        format!("failed to allocate IP {a}: the provided IP ({a}) is not in the valid range. The range of valid IPs is {}/{}", self.cidr.0, self.cidr.1),
                    ));
                }
                if let Some(o) =
                    others.iter().find(|o| o.pointer("/spec/clusterIP").and_then(Value::as_str) == Some(&a))
                {
                    return Err(invalid(
                        "spec.clusterIPs".into(),
                        &format!("[]string{{{a:?}}}"),
                        format!(
                            "failed to allocate IP {a}: provided IP is already allocated (by service {})",
                            owner(o)
                        ),
                    ));
                }
                a
            }
            (None, None) => self.next_ip(others, start)?.to_string(),
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));

        let wants_node_ports = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
        let old_ports: HashMap<(i64, String), i64> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    (p["port"].as_i64()?, p["protocol"].as_str().unwrap_or("TCP").to_string()),
                    p["nodePort"].as_i64()?,
                ))
            })
            .collect();
        let mut taken: HashMap<i64, String> = others
            .iter()
            .flat_map(|o| {
                o.pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(move |p| Some((p["nodePort"].as_i64()?, owner(o))))
            })
            .collect();
        let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else { return Ok(()) };
        for (i, p) in ports.iter_mut().enumerate() {
            if !wants_node_ports {
                p.as_object_mut().map(|m| m.remove("nodePort"));
                continue;
            }
            let key = (p["port"].as_i64().unwrap_or(0), p["protocol"].as_str().unwrap_or("TCP").to_string());
            let asked = p["nodePort"].as_i64().filter(|n| *n != 0);
            let port = match asked {
                Some(n) => {
                    let (lo, hi) = self.node_ports;
                    if n < lo as i64 || n > hi as i64 {
                        return Err(invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &n.to_string(),
                            format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        ));
                    }
                    if let Some(o) = taken.get(&n) {
                        return Err(invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &n.to_string(),
                            format!("provided port is already allocated (by service {o}); choose another or omit it"),
                        ));
                    }
                    n
                }
                None => match old_ports.get(&key) {
                    Some(n) => *n,
                    None => self.next_port(&taken, start)?,
                },
            };
            taken.insert(port, "this service".into());
            p["nodePort"] = json!(port);
        }
        Ok(())
    }

    /// The first free address from `start` on; the DNS address is only ever taken explicitly.
    fn next_ip(&self, others: &[Value], start: u64) -> Result<Ipv4Addr, ApiError> {
        let used: std::collections::HashSet<&str> =
            others.iter().filter_map(|o| o.pointer("/spec/clusterIP").and_then(Value::as_str)).collect();
        let (net, len) = self.cidr;
        let size = 1u64 << (32 - len as u32);
        // Skip the network address, .1 (kept for the API's own service) and the broadcast.
        let usable = size.saturating_sub(3);
        (0..usable)
            .map(|i| 2 + (start + i) % usable.max(1))
            .map(|off| Ipv4Addr::from(u32::from(net).wrapping_add(off as u32)))
            .find(|ip| *ip != self.dns_ip && !used.contains(ip.to_string().as_str()))
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("failed to allocate a serviceIP: range is full ({}/{}); delete unused services", net, len),
                )
            })
    }

    fn next_port(&self, taken: &HashMap<i64, String>, start: u64) -> Result<i64, ApiError> {
        let (lo, hi) = self.node_ports;
        let n = (hi - lo) as i64 + 1;
        (0..n).map(|i| lo as i64 + (start as i64 % n + i) % n).find(|p| !taken.contains_key(p)).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("failed to allocate a nodePort: range {lo}-{hi} is full; delete unused NodePort services"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> ServiceNet {
        ServiceNet {
            cidr: ("10.43.0.0".parse().unwrap(), 29),
            dns_ip: "10.43.0.2".parse().unwrap(),
            node_ports: (30000, 30001),
        }
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn cluster_ips_and_node_ports() {
        let n = net();
        let mut a = svc("a", json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        n.allocate(&mut a, None, &[], 0).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.43.0.3", "skips .0, .1 and the DNS address");
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 30000);
        let mut b = svc("b", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}));
        let e = n.allocate(&mut b, None, std::slice::from_ref(&a), 0).unwrap_err();
        assert!(e.message.contains("already allocated (by service default/a)"), "{}", e.message);
        let mut b = svc("b", json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        n.allocate(&mut b, None, std::slice::from_ref(&a), 0).unwrap();
        assert_eq!(
            (b["spec"]["clusterIP"].as_str(), b["spec"]["ports"][0]["nodePort"].as_i64()),
            (Some("10.43.0.4"), Some(30001))
        );
        let mut c = svc("c", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        let e = n.allocate(&mut c, None, &[a.clone(), b.clone()], 0).unwrap_err();
        assert!(e.message.contains("range 30000-30001 is full"), "{}", e.message);
        let mut d = svc("d", json!({"ports": [{"port": 80}]}));
        n.allocate(&mut d, None, &[a.clone(), b.clone()], 0).unwrap();
        assert_eq!(d["spec"]["clusterIP"], "10.43.0.5");
        let mut e2 = svc("e", json!({"ports": [{"port": 80}]}));
        n.allocate(&mut e2, None, &[a.clone(), b.clone(), d.clone()], 0).unwrap();
        assert_eq!(e2["spec"]["clusterIP"], "10.43.0.6", "the broadcast address .7 is never handed out");
        let mut f = svc("f", json!({"ports": [{"port": 80}]}));
        assert!(n.allocate(&mut f, None, &[a, b, d, e2], 0).unwrap_err().message.contains("range is full"));
    }

    #[test]
    fn updates_keep_and_release() {
        let n = net();
        let mut a = svc("a", json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        n.allocate(&mut a, None, &[], 0).unwrap();
        let mut changed = svc("a", json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        n.allocate(&mut changed, Some(&a), &[], 0).unwrap();
        assert_eq!(changed["spec"], a["spec"]);
        let mut to_ip = svc("a", json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30000}]}));
        n.allocate(&mut to_ip, Some(&a), &[], 0).unwrap();
        assert!(to_ip["spec"]["ports"][0].get("nodePort").is_none());
        let mut moved = svc("a", json!({"clusterIP": "10.43.0.6", "ports": [{"port": 80}]}));
        assert!(n.allocate(&mut moved, Some(&a), &[], 0).unwrap_err().message.contains("immutable"));
        let mut outside = svc("x", json!({"clusterIP": "10.9.9.9", "ports": [{"port": 80}]}));
        assert!(n.allocate(&mut outside, None, &[], 0).unwrap_err().message.contains("not in the valid range"));
        let mut headless = svc("h", json!({"clusterIP": "None"}));
        n.allocate(&mut headless, None, &[], 0).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let mut ext =
            svc("x", json!({"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "10.43.0.3"}));
        n.allocate(&mut ext, None, &[], 0).unwrap();
        assert!(ext["spec"].get("clusterIP").is_none());
    }
}
