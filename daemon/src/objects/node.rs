//! Node defaulting and validation (taints, pod CIDRs), and what tables and `describe` read from
//! a Node (roles, the STATUS word, a taint as text), with Kubernetes' rules and wording.

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::validation::{label_value, qualified_name};
use super::Cause;

/// The label prefix naming a node's roles (`node-role.kubernetes.io/control-plane`).
pub const ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// The older role label (`kubernetes.io/role=master`), still read by kubectl.
pub const ROLE_LABEL: &str = "kubernetes.io/role";
/// The taint effects Kubernetes knows.
pub const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// The API server's defaults: `allocatable` is `capacity` when not reported; `podCIDR` and
/// `podCIDRs` mirror each other (the v1 conversion keeps them in step).
pub fn default(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        if status.allocatable.is_none() {
            status.allocatable = status.capacity.clone();
        }
    }
    let Some(spec) = node.spec.as_mut() else { return };
    let first = spec.pod_cidrs.as_ref().and_then(|c| c.first()).cloned();
    match (spec.pod_cidr.as_deref().filter(|c| !c.is_empty()), first) {
        (Some(cidr), None) => spec.pod_cidrs = Some(vec![cidr.to_string()]),
        (None, Some(first)) => spec.pod_cidr = Some(first),
        _ => {}
    }
}

/// `ValidateNode`'s rules for what Skerry reads: taints (key, value, effect, unique by key and
/// effect) and pod CIDRs.
pub fn validate(node: &Node) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = node.spec.as_ref() else { return causes };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in spec.taints.iter().flatten().enumerate() {
        let path = format!("spec.taints[{i}]");
        if let Err(e) = qualified_name(&t.key) {
            causes.push(Cause::invalid(format!("{path}.key"), &t.key, e));
        }
        if let Some(value) = t.value.as_deref() {
            if let Err(e) = label_value(value) {
                causes.push(Cause::invalid(format!("{path}.value"), value, e));
            }
        }
        if t.effect.is_empty() {
            causes.push(Cause::required(format!("{path}.effect")));
        } else if !EFFECTS.contains(&t.effect.as_str()) {
            causes.push(Cause::unsupported(format!("{path}.effect"), &t.effect, EFFECTS));
        }
        if seen.contains(&(t.key.as_str(), t.effect.as_str())) {
            causes.push(Cause::new(
                path,
                format!(
                    "Duplicate value: core.Taint{{Key:{:?}, Value:{:?}, Effect:{:?}, TimeAdded:<nil>}}: taints must be unique by key and effect pair",
                    t.key,
                    t.value.as_deref().unwrap_or(""),
                    t.effect
                ),
            ));
            continue;
        }
        seen.push((&t.key, &t.effect));
    }
    // Validated after the v1 conversion, which fills podCIDRs from podCIDR.
    let cidrs = match (spec.pod_cidrs.as_ref().filter(|c| !c.is_empty()), spec.pod_cidr.as_ref()) {
        (Some(list), _) => list.clone(),
        (None, Some(one)) if !one.is_empty() => vec![one.clone()],
        _ => Vec::new(),
    };
    for (i, cidr) in cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            causes.push(Cause::invalid(
                format!("spec.podCIDRs[{i}]"),
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".into(),
            ));
        }
    }
    causes
}

/// `ValidateNodeUpdate`: a pod CIDR, once assigned, stays.
pub fn validate_update(old: &Node, new: &Node) -> Vec<Cause> {
    let cidrs = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    let (old, new) = (cidrs(old), cidrs(new));
    if !old.is_empty() && old != new {
        return vec![Cause::new(
            "spec.podCIDRs",
            "Forbidden: node updates may not change podCIDR except from \"\" to valid".into(),
        )];
    }
    Vec::new()
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, prefix)) = text.split_once('/') else { return false };
    let Ok(prefix) = prefix.parse::<u8>() else { return false };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// The node's roles, sorted, as kubectl finds them: `node-role.kubernetes.io/<role>` labels and
/// a non-empty `kubernetes.io/role`.
pub fn roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = super::meta::labels(node)
        .into_iter()
        .filter_map(|(k, v)| match k.strip_prefix(ROLE_PREFIX) {
            Some(role) if !role.is_empty() => Some(role.to_string()),
            Some(_) => None,
            None if k == ROLE_LABEL && !v.is_empty() => Some(v),
            None => None,
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// STATUS of `get nodes`: `Ready`, `NotReady` (a Ready condition that is not True) or
/// `Unknown` (none), with `,SchedulingDisabled` when cordoned.
pub fn status_text(node: &Value) -> String {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" });
    let mut text = ready.unwrap_or("Unknown").to_string();
    if is_unschedulable(node) {
        text.push_str(",SchedulingDisabled");
    }
    text
}

/// Whether the node is cordoned (`spec.unschedulable`).
pub fn is_unschedulable(node: &Value) -> bool {
    node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false)
}

/// The first address of a type (`InternalIP`), if any.
pub fn address<'a>(node: &'a Value, kind: &str) -> Option<&'a str> {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == kind)
        .and_then(|a| a["address"].as_str())
}

/// A taint as kubectl writes it: `key=value:Effect`, `key:Effect`, or `key` (no effect).
pub fn taint_text(taint: &Value) -> String {
    let key = taint["key"].as_str().unwrap_or("");
    let value = taint["value"].as_str().unwrap_or("");
    let effect = taint["effect"].as_str().unwrap_or("");
    let mut text = key.to_string();
    if !value.is_empty() {
        text = format!("{text}={value}");
    }
    if !effect.is_empty() {
        text = format!("{text}:{effect}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{admit, admit_update, resource::NODES};
    use serde_json::json;

    fn node(extra: Value) -> Value {
        let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1"}});
        crate::objects::merge_patch(&mut n, &extra);
        n
    }

    #[test]
    fn taints_are_checked_like_the_api_server() {
        let ok = node(json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
            {"key": "example.com/spot", "effect": "PreferNoSchedule"}
        ]}}));
        assert!(admit(&NODES, ok).is_ok());
        let e = admit(&NODES, node(json!({"spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}))).unwrap_err();
        assert!(
            e.to_string().contains("spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""),
            "{e}"
        );
        let e = admit(&NODES, node(json!({"spec": {"taints": [{"key": "k", "effect": ""}]}}))).unwrap_err();
        assert!(e.to_string().contains("spec.taints[0].effect: Required value"), "{e}");
        let e =
            admit(&NODES, node(json!({"spec": {"taints": [{"key": "bad key", "effect": "NoSchedule"}]}}))).unwrap_err();
        assert!(e.to_string().contains("spec.taints[0].key: Invalid value: \"bad key\""), "{e}");
        let e = admit(&NODES, node(json!({"spec": {"taints": [{"key": "k", "value": "-x", "effect": "NoSchedule"}]}})))
            .unwrap_err();
        assert!(e.to_string().contains("spec.taints[0].value: Invalid value: \"-x\""), "{e}");
        let twice = json!({"spec": {"taints": [{"key": "k", "value": "a", "effect": "NoSchedule"}, {"key": "k", "value": "b", "effect": "NoSchedule"}]}});
        let e = admit(&NODES, node(twice)).unwrap_err();
        assert!(e.to_string().contains("spec.taints[1]: Duplicate value: core.Taint{Key:\"k\", Value:\"b\", Effect:\"NoSchedule\", TimeAdded:<nil>}: taints must be unique by key and effect pair"), "{e}");
    }

    #[test]
    fn names_are_subdomains_and_unknown_fields_are_kept() {
        assert!(admit(&NODES, node(json!({"metadata": {"name": "edge-1.site-a"}}))).is_ok());
        let e = admit(&NODES, node(json!({"metadata": {"name": "Edge_1"}}))).unwrap_err();
        assert!(e.to_string().contains("metadata.name: Invalid value: \"Edge_1\""), "{e}");
        let a = admit(&NODES, node(json!({"spec": {"frobnicate": 1}, "status": {"capacity": {"cpu": "2"}}}))).unwrap();
        assert_eq!(a.object["spec"]["frobnicate"], 1);
        assert!(a.warnings[0].contains("spec.frobnicate"), "{:?}", a.warnings);
        assert_eq!(a.object["status"]["allocatable"], json!({"cpu": "2"}), "allocatable defaults to capacity");
    }

    #[test]
    fn pod_cidrs_mirror_each_other_and_stay_once_set() {
        let a = admit(&NODES, node(json!({"spec": {"podCIDR": "10.42.1.0/24"}}))).unwrap().object;
        assert_eq!(a["spec"]["podCIDRs"], json!(["10.42.1.0/24"]));
        let e = admit(&NODES, node(json!({"spec": {"podCIDR": "10.42.1.0/33"}}))).unwrap_err();
        assert!(
            e.to_string().contains("spec.podCIDRs[0]: Invalid value: \"10.42.1.0/33\": must be a valid CIDR"),
            "{e}"
        );
        let bare = admit(&NODES, node(json!({}))).unwrap().object;
        assert!(admit_update(&NODES, &bare, a.clone()).is_ok(), "from none to one is allowed");
        let e = admit_update(&NODES, &a, node(json!({"spec": {"podCIDR": "10.42.2.0/24"}}))).unwrap_err();
        assert!(e.to_string().contains("spec.podCIDRs: Forbidden: node updates may not change podCIDR"), "{e}");
        assert!(
            admit_update(&NODES, &a, node(json!({"spec": {"podCIDR": "10.42.1.0/24", "unschedulable": true}}))).is_ok()
        );
    }

    #[test]
    fn roles_status_and_taints_as_kubectl_prints_them() {
        let n = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "true", "kubernetes.io/role": "master", "node-role.kubernetes.io/": "x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(roles(&n), ["control-plane", "etcd", "master"]);
        assert!(roles(&json!({})).is_empty());
        assert_eq!(status_text(&n), "Ready");
        let mut cordoned = n.clone();
        cordoned["spec"] = json!({"unschedulable": true});
        cordoned["status"]["conditions"][0]["status"] = json!("Unknown");
        assert_eq!(status_text(&cordoned), "NotReady,SchedulingDisabled");
        assert_eq!(status_text(&json!({})), "Unknown");
        assert_eq!(taint_text(&json!({"key": "a", "value": "b", "effect": "NoSchedule"})), "a=b:NoSchedule");
        assert_eq!(taint_text(&json!({"key": "a", "effect": "NoExecute"})), "a:NoExecute");
        assert_eq!(taint_text(&json!({"key": "a"})), "a");
    }
}
