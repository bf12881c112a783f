//! Stored Kubernetes v1 Services and Endpoints (JSON as the store keeps them) into the proxy's
//! [`ServicePort`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use super::{Endpoint, Protocol, ServicePort};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}

fn port_u16(v: &Value) -> Option<u16> {
    v.as_u64().filter(|p| (1..=65535).contains(p)).map(|p| p as u16)
}

fn ipv4(v: &Value) -> Option<Ipv4Addr> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// One [`ServicePort`] per port of each Service that is not `ExternalName`, sorted by namespace,
/// name, port name and protocol, with the endpoints of the Endpoints object of the same
/// namespace and name whose port has the same name (and protocol). IPv6 addresses are skipped.
pub fn from_objects(services: &[Value], endpoints: &[Value]) -> Vec<ServicePort> {
    let mut eps_by_name: BTreeMap<(&str, &str), &Value> = BTreeMap::new();
    for e in endpoints {
        if let (Some(ns), Some(name)) = (str_at(e, "/metadata/namespace"), str_at(e, "/metadata/name")) {
            eps_by_name.insert((ns, name), e);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name)) = (str_at(svc, "/metadata/namespace"), str_at(svc, "/metadata/name")) else {
            continue;
        };
        let ty = str_at(svc, "/spec/type").unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let cluster_ip = svc.pointer("/spec/clusterIP").and_then(ipv4);
        let mut external_ips: Vec<Ipv4Addr> =
            svc.pointer("/spec/externalIPs").and_then(Value::as_array).into_iter().flatten().filter_map(ipv4).collect();
        if ty == "LoadBalancer" {
            for ing in svc.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).into_iter().flatten() {
                external_ips.extend(ipv4(&ing["ip"]));
            }
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity_timeout = (str_at(svc, "/spec/sessionAffinity") == Some("ClientIP")).then(|| {
            svc.pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_u64)
                .filter(|t| *t > 0)
                .map_or(DEFAULT_AFFINITY_TIMEOUT, |t| t.min(u64::from(u32::MAX)) as u32)
        });
        let eps = eps_by_name.get(&(ns, name)).copied();
        for p in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            let Some(port) = port_u16(&p["port"]) else {
                continue;
            };
            let Some(protocol) = Protocol::parse(p["protocol"].as_str().unwrap_or("TCP")) else {
                continue;
            };
            let port_name = p["name"].as_str().unwrap_or("").to_string();
            let node_port = if matches!(ty, "NodePort" | "LoadBalancer") { port_u16(&p["nodePort"]) } else { None };
            out.push(ServicePort {
                namespace: ns.to_string(),
                service: name.to_string(),
                endpoints: eps.map(|e| endpoints_for(e, &port_name, protocol)).unwrap_or_default(),
                port_name,
                protocol,
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.clone(),
                affinity_timeout,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.service, &a.port_name, a.protocol).cmp(&(&b.namespace, &b.service, &b.port_name, b.protocol))
    });
    out
}

/// The addresses of every subset that has a port named `port_name` (for `protocol`), ready first
/// when an address is listed both ways.
fn endpoints_for(eps: &Value, port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut found: BTreeSet<(Ipv4Addr, u16, bool)> = BTreeSet::new();
    for subset in eps["subsets"].as_array().into_iter().flatten() {
        let port = subset["ports"].as_array().into_iter().flatten().find(|p| {
            p["name"].as_str().unwrap_or("") == port_name
                && Protocol::parse(p["protocol"].as_str().unwrap_or("TCP")) == Some(protocol)
        });
        let Some(port) = port.and_then(|p| port_u16(&p["port"])) else {
            continue;
        };
        for (key, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for a in subset[key].as_array().into_iter().flatten() {
                if let Some(ip) = ipv4(&a["ip"]) {
                    found.insert((ip, port, ready));
                }
            }
        }
    }
    let mut out: Vec<Endpoint> = Vec::new();
    for (ip, port, ready) in found {
        match out.iter_mut().find(|e| e.ip == ip && e.port == port) {
            Some(e) => e.ready |= ready,
            None => out.push(Endpoint { ip, port, ready }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": "web"}, "spec": spec})
    }

    fn eps(subsets: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"namespace": "default", "name": "web"}, "subsets": subsets})
    }

    #[test]
    fn named_ports_match_endpoint_ports_by_name() {
        let s = svc(json!({"type": "NodePort", "clusterIP": "10.43.0.20", "externalIPs": ["192.0.2.7"], "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web", "nodePort": 30080},
            {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353, "nodePort": 30053}
        ]}));
        let e = eps(json!([
            {"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}], "notReadyAddresses": [{"ip": "10.42.0.7"}],
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]}
        ]));
        let ports = from_objects(&[s], &[e]);
        assert_eq!(ports.len(), 2);
        let (dns, http) = (&ports[0], &ports[1]);
        assert_eq!(
            (dns.port_name.as_str(), dns.protocol, dns.port, dns.node_port),
            ("dns", Protocol::Udp, 53, Some(30053))
        );
        assert_eq!(
            (http.port_name.as_str(), http.protocol, http.port, http.node_port),
            ("http", Protocol::Tcp, 80, Some(30080))
        );
        assert_eq!(http.cluster_ip, Some("10.43.0.20".parse().unwrap()));
        assert_eq!(http.external_ips, vec!["192.0.2.7".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(
            http.endpoints,
            vec![
                Endpoint { ip: "10.42.0.5".parse().unwrap(), port: 8080, ready: true },
                Endpoint { ip: "10.42.0.6".parse().unwrap(), port: 8080, ready: true },
                Endpoint { ip: "10.42.0.7".parse().unwrap(), port: 8080, ready: false },
            ]
        );
        assert!(dns.endpoints.iter().all(|e| e.port == 5353));
        assert_eq!(http.affinity_timeout, None);
    }

    #[test]
    fn unnamed_port_and_missing_endpoints() {
        let s = svc(json!({"clusterIP": "10.43.0.21", "ports": [{"port": 80, "nodePort": 30001}]}));
        let ports = from_objects(std::slice::from_ref(&s), &[]);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port_name, "");
        assert_eq!(ports[0].protocol, Protocol::Tcp);
        assert_eq!(ports[0].node_port, None, "a ClusterIP service has no NodePort");
        assert!(ports[0].endpoints.is_empty());
        let e = eps(json!([{"addresses": [{"ip": "10.42.0.9"}], "ports": [{"port": 9000}]}]));
        assert_eq!(
            from_objects(&[s], &[e])[0].endpoints,
            vec![Endpoint { ip: "10.42.0.9".parse().unwrap(), port: 9000, ready: true }]
        );
    }

    #[test]
    fn headless_external_name_and_load_balancer() {
        let headless = svc(json!({"clusterIP": "None", "ports": [{"name": "a", "port": 80}]}));
        let ports = from_objects(&[headless], &[]);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].cluster_ip, None);

        let external = svc(json!({"type": "ExternalName", "externalName": "example.org", "ports": [{"port": 80}]}));
        assert!(from_objects(&[external], &[]).is_empty());

        let mut lb = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.43.0.22", "ports": [{"port": 443, "nodePort": 31443}]}),
        );
        lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}, {"hostname": "lb.example.org"}]}});
        let ports = from_objects(&[lb], &[]);
        assert_eq!(ports[0].external_ips, vec!["198.51.100.4".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(ports[0].node_port, Some(31443));
    }

    #[test]
    fn session_affinity_timeout_defaults() {
        let a = svc(json!({"clusterIP": "10.43.0.23", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
        assert_eq!(from_objects(&[a], &[])[0].affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        let b = svc(json!({"clusterIP": "10.43.0.23", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}));
        assert_eq!(from_objects(&[b], &[])[0].affinity_timeout, Some(60));
        let c = svc(json!({"clusterIP": "10.43.0.23", "sessionAffinity": "None", "ports": [{"port": 80}]}));
        assert_eq!(from_objects(&[c], &[])[0].affinity_timeout, None);
    }

    #[test]
    fn endpoints_of_other_services_and_protocols_are_ignored() {
        let s = svc(json!({"clusterIP": "10.43.0.24", "ports": [{"name": "p", "port": 80, "protocol": "UDP"}]}));
        let mut other =
            eps(json!([{"addresses": [{"ip": "10.42.0.1"}], "ports": [{"name": "p", "port": 80, "protocol": "UDP"}]}]));
        other["metadata"]["name"] = json!("other");
        let tcp =
            eps(json!([{"addresses": [{"ip": "10.42.0.2"}], "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}]));
        assert!(from_objects(std::slice::from_ref(&s), &[other])[0].endpoints.is_empty());
        assert!(from_objects(&[s], &[tcp])[0].endpoints.is_empty());
    }
}
