//! Service defaulting and validation, with Kubernetes' defaults and field paths. Address and
//! port allocation needs cluster state and lives with the API (`api::services`).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validation::{dns1123_label, dns1123_subdomain};
use super::Cause;

pub const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

/// Fills the defaults the Kubernetes API server fills (allocation aside).
pub fn default(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let cfg = spec.session_affinity_config.get_or_insert_with(Default::default);
        let client = cfg.client_ip.get_or_insert_with(Default::default);
        client.timeout_seconds.get_or_insert(10800);
    }
    if kind != "ExternalName" {
        spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".into());
        spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        spec.ip_family_policy.get_or_insert_with(|| "SingleStack".into());
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        spec.external_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if p.target_port.is_none() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    svc.status.get_or_insert_with(Default::default).load_balancer.get_or_insert_with(Default::default);
}

pub fn validate(svc: &Service) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = &svc.spec else {
        return vec![Cause::required("spec")];
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !TYPES.contains(&kind) {
        causes.push(Cause::unsupported("spec.type", kind, TYPES));
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if kind == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => causes.push(Cause::required("spec.externalName")),
            Some(n) => {
                if let Err(e) = dns1123_subdomain(n.trim_end_matches('.')) {
                    causes.push(Cause::invalid("spec.externalName", n, e));
                }
            }
        }
    } else if ports.is_empty() && spec.cluster_ip.as_deref() != Some("None") {
        causes.push(Cause::required("spec.ports"));
    }
    if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            causes.push(Cause::invalid(
                "spec.clusterIP",
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
            ));
        }
    }
    if spec.cluster_ip.as_deref() == Some("None") && matches!(kind, "NodePort" | "LoadBalancer") {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {kind} services"),
        ));
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            causes.push(Cause::invalid(format!("spec.externalIPs[{i}]"), ip, "must be a valid IP address".into()));
        }
    }
    if let Some(a) = spec.session_affinity.as_deref() {
        if !matches!(a, "None" | "ClientIP") {
            causes.push(Cause::unsupported("spec.sessionAffinity", a, &["ClientIP", "None"]));
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match p.name.as_deref() {
            Some(n) if !n.is_empty() => {
                if let Err(e) = dns1123_label(n) {
                    causes.push(Cause::invalid(format!("{path}.name"), n, e));
                } else if !names.insert(n.to_string()) {
                    causes.push(Cause::new(format!("{path}.name"), format!("Duplicate value: {n:?}")));
                }
            }
            _ if ports.len() > 1 => causes.push(Cause::required(format!("{path}.name"))),
            _ => {}
        }
        if !(1..=65535).contains(&p.port) {
            causes.push(Cause::invalid(
                format!("{path}.port"),
                &p.port.to_string(),
                "must be between 1 and 65535, inclusive".into(),
            ));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            causes.push(Cause::unsupported(format!("{path}.protocol"), proto, &["SCTP", "TCP", "UDP"]));
        }
        if !seen.insert((p.port, proto.to_string())) {
            causes.push(Cause::new(
                path.to_string(),
                format!("Duplicate value: {{port: {}, protocol: {proto}}}", p.port),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                causes.push(Cause::invalid(
                    format!("{path}.targetPort"),
                    &t.to_string(),
                    "must be between 1 and 65535, inclusive".into(),
                ));
            }
            Some(IntOrString::String(s)) if dns1123_label(s).is_err() || s.len() > 15 => {
                causes.push(Cause::invalid(
                    format!("{path}.targetPort"),
                    s,
                    "must be a port number or a container port name (an IANA_SVC_NAME)".into(),
                ));
            }
            _ => {}
        }
        if let Some(np) = p.node_port {
            if !matches!(kind, "NodePort" | "LoadBalancer") && np != 0 {
                causes.push(Cause::new(
                    format!("{path}.nodePort"),
                    format!("Forbidden: may not be used when `type` is '{kind}'"),
                ));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use crate::objects::{admit, resource};
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fleetman-webapp", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn defaults_like_kubernetes() {
        let a = admit(
            &resource::SERVICES,
            svc(json!({"selector": {"app": "webapp"}, "ports": [{"port": 80}], "type": "NodePort"})),
        )
        .unwrap();
        let spec = &a.object["spec"];
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        let a = admit(
            &resource::SERVICES,
            svc(json!({"ports": [{"port": 53, "protocol": "UDP"}], "sessionAffinity": "ClientIP"})),
        )
        .unwrap();
        assert_eq!(a.object["spec"]["type"], "ClusterIP");
        assert_eq!(a.object["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
    }

    #[test]
    fn invalid_services() {
        let e =
            admit(&resource::SERVICES, svc(json!({"ports": [{"port": 80}, {"port": 81}]}))).unwrap_err().to_string();
        assert!(e.contains("spec.ports[0].name: Required value"), "{e}");
        let e =
            admit(&resource::SERVICES, svc(json!({"type": "Magic", "ports": [{"port": 80}]}))).unwrap_err().to_string();
        assert!(e.contains("spec.type: Unsupported value"), "{e}");
        let e = admit(&resource::SERVICES, svc(json!({"type": "ExternalName"}))).unwrap_err().to_string();
        assert!(e.contains("spec.externalName: Required value"), "{e}");
        let e = admit(&resource::SERVICES, svc(json!({"ports": [{"port": 70000}]}))).unwrap_err().to_string();
        assert!(e.contains("spec.ports[0].port"), "{e}");
        let e = admit(&resource::SERVICES, svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.ports[0].nodePort: Forbidden"), "{e}");
        assert!(
            admit(&resource::SERVICES, svc(json!({"type": "ExternalName", "externalName": "db.example.com"}))).is_ok()
        );
        assert!(admit(&resource::SERVICES, svc(json!({"clusterIP": "None", "selector": {"a": "b"}}))).is_ok());
    }
}
