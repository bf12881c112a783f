//! Server-side tables (`meta.k8s.io/v1 Table`) with kubectl's columns for each kind.

use serde_json::{json, Value};

use crate::objects::meta;

use super::format::{age, human_duration};

struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
}

const fn col(name: &'static str, kind: &'static str, priority: u8) -> Column {
    Column { name, kind, priority }
}

fn columns(kind: &str) -> &'static [Column] {
    const POD: &[Column] = &[
        col("Name", "string", 0),
        col("Ready", "string", 0),
        col("Status", "string", 0),
        col("Restarts", "string", 0),
        col("Age", "string", 0),
        col("IP", "string", 1),
        col("Node", "string", 1),
        col("Nominated Node", "string", 1),
        col("Readiness Gates", "string", 1),
    ];
    const NODE: &[Column] = &[
        col("Name", "string", 0),
        col("Status", "string", 0),
        col("Roles", "string", 0),
        col("Age", "string", 0),
        col("Version", "string", 0),
        col("Internal-IP", "string", 1),
        col("External-IP", "string", 1),
        col("OS-Image", "string", 1),
        col("Kernel-Version", "string", 1),
        col("Container-Runtime", "string", 1),
    ];
    const NAMESPACE: &[Column] = &[col("Name", "string", 0), col("Status", "string", 0), col("Age", "string", 0)];
    const EVENT: &[Column] = &[
        col("Last Seen", "string", 0),
        col("Type", "string", 0),
        col("Reason", "string", 0),
        col("Object", "string", 0),
        col("Message", "string", 0),
    ];
    const OTHER: &[Column] = &[col("Name", "string", 0), col("Age", "string", 0)];
    const SERVICE: &[Column] = &[
        col("Name", "string", 0),
        col("Type", "string", 0),
        col("Cluster-IP", "string", 0),
        col("External-IP", "string", 0),
        col("Port(s)", "string", 0),
        col("Age", "string", 0),
        col("Selector", "string", 1),
    ];
    const ENDPOINTS: &[Column] = &[col("Name", "string", 0), col("Endpoints", "string", 0), col("Age", "string", 0)];
    const DEPLOYMENT: &[Column] = &[
        col("Name", "string", 0),
        col("Ready", "string", 0),
        col("Up-to-date", "integer", 0),
        col("Available", "integer", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ];
    const REPLICA_SET: &[Column] = &[
        col("Name", "string", 0),
        col("Desired", "integer", 0),
        col("Current", "integer", 0),
        col("Ready", "integer", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ];
    const PV: &[Column] = &[
        col("Name", "string", 0),
        col("Capacity", "string", 0),
        col("Access Modes", "string", 0),
        col("Reclaim Policy", "string", 0),
        col("Status", "string", 0),
        col("Claim", "string", 0),
        col("StorageClass", "string", 0),
        col("VolumeAttributesClass", "string", 0),
        col("Reason", "string", 0),
        col("Age", "string", 0),
        col("VolumeMode", "string", 1),
    ];
    const PVC: &[Column] = &[
        col("Name", "string", 0),
        col("Status", "string", 0),
        col("Volume", "string", 0),
        col("Capacity", "string", 0),
        col("Access Modes", "string", 0),
        col("StorageClass", "string", 0),
        col("VolumeAttributesClass", "string", 0),
        col("Age", "string", 0),
        col("VolumeMode", "string", 1),
    ];
    const CONFIG_MAP: &[Column] = &[col("Name", "string", 0), col("Data", "integer", 0), col("Age", "string", 0)];
    const SECRET: &[Column] =
        &[col("Name", "string", 0), col("Type", "string", 0), col("Data", "integer", 0), col("Age", "string", 0)];
    const STORAGE_CLASS: &[Column] = &[
        col("Name", "string", 0),
        col("Provisioner", "string", 0),
        col("ReclaimPolicy", "string", 0),
        col("VolumeBindingMode", "string", 0),
        col("AllowVolumeExpansion", "string", 0),
        col("Age", "string", 0),
    ];
    const JOIN_TOKEN: &[Column] = &[
        col("ID", "string", 0),
        col("Role", "string", 0),
        col("TTL", "string", 0),
        col("Expires", "string", 0),
        col("Uses", "string", 0),
        col("Description", "string", 0),
    ];
    match kind {
        "JoinToken" => JOIN_TOKEN,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "StorageClass" => STORAGE_CLASS,
        "Deployment" => DEPLOYMENT,
        "ReplicaSet" | "ReplicationController" => REPLICA_SET,
        "PersistentVolume" => PV,
        "PersistentVolumeClaim" => PVC,
        "Pod" => POD,
        "Service" => SERVICE,
        "Endpoints" => ENDPOINTS,
        "Namespace" => NAMESPACE,
        "Node" => NODE,
        "Event" => EVENT,
        _ => OTHER,
    }
}

fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = json!(meta::name(obj));
    let created = obj.pointer("/metadata/creationTimestamp");
    match kind {
        "Pod" => pod_cells(obj),
        "Node" => node_cells(obj),
        "Namespace" => vec![
            name,
            json!(obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Active")),
            json!(age(created)),
        ],
        "Event" => {
            let last = obj.get("lastTimestamp").filter(|v| !v.is_null()).or(obj.get("eventTime")).or(created);
            let involved = &obj["involvedObject"];
            let object = format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or("").to_lowercase(),
                involved["name"].as_str().unwrap_or("")
            );
            vec![
                json!(age(last)),
                json!(obj["type"].as_str().unwrap_or("")),
                json!(obj["reason"].as_str().unwrap_or("")),
                json!(object),
                json!(obj["message"].as_str().unwrap_or("")),
            ]
        }
        "JoinToken" => join_token_cells(obj),
        "Service" => service_cells(obj),
        "Endpoints" => vec![name, json!(endpoints_text(obj)), json!(age(created))],
        "Deployment" | "ReplicaSet" | "ReplicationController" => workload_cells(kind, obj),
        "PersistentVolume" | "PersistentVolumeClaim" => volume_cells(kind, obj),
        "ConfigMap" => {
            let n =
                obj["data"].as_object().map_or(0, |m| m.len()) + obj["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), json!(age(created))]
        }
        "Secret" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len());
            vec![name, json!(obj["type"].as_str().unwrap_or("Opaque")), json!(n), json!(age(created))]
        }
        "StorageClass" => {
            let shown = if crate::objects::config::is_default_class(obj) {
                format!("{} (default)", meta::name(obj))
            } else {
                meta::name(obj).to_string()
            };
            vec![
                json!(shown),
                json!(obj["provisioner"].as_str().unwrap_or("")),
                json!(obj["reclaimPolicy"].as_str().unwrap_or("Delete")),
                json!(obj["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                json!(obj["allowVolumeExpansion"].as_bool().unwrap_or(false)),
                json!(age(created)),
            ]
        }
        _ => vec![name, json!(age(created))],
    }
}

/// A join token as `kubeadm token list` shows one: time left (`<forever>`), when it expires
/// (`<never>`), uses left (`unlimited`); the secret is never stored, so never shown.
fn join_token_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let expires = crate::objects::meta::parse_time(spec.get("expirationTimestamp"));
    let (ttl, at) = match expires {
        Some(at) => {
            let left = at.duration_since(jiff::Timestamp::now());
            let ttl = if left.is_negative() { "expired".to_string() } else { short_duration(left) };
            (ttl, spec["expirationTimestamp"].as_str().unwrap_or("").to_string())
        }
        None => ("<forever>".to_string(), "<never>".to_string()),
    };
    let uses = spec["usesLeft"].as_u64().map_or("unlimited".to_string(), |n| n.to_string());
    vec![
        json!(meta::name(obj)),
        json!(spec["role"].as_str().unwrap_or("")),
        json!(ttl),
        json!(at),
        json!(uses),
        json!(spec["description"].as_str().unwrap_or("<none>")),
    ]
}

/// A duration in its largest unit, as kubeadm prints a token's TTL (`23h`, `59m`, `30s`).
fn short_duration(d: jiff::SignedDuration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A selector as kubectl prints it: `app=web,tier in (a,b)`; `<none>` when empty.
pub fn selector_text(selector: &Value) -> String {
    let pairs = |m: &Value| -> Vec<String> {
        m.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect()
    };
    // A ReplicationController's selector is a plain map; the others' a LabelSelector.
    let is_label_selector = selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some();
    if !is_label_selector {
        let p = pairs(selector);
        return if p.is_empty() { "<none>".into() } else { p.join(",") };
    }
    let mut parts = pairs(&selector["matchLabels"]);
    for e in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn workload_cells(kind: &str, obj: &Value) -> Vec<Value> {
    let int = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let containers = obj.pointer("/spec/template/spec/containers").and_then(Value::as_array);
    let names: Vec<&str> = containers.into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = containers.into_iter().flatten().filter_map(|c| c["image"].as_str()).collect();
    let desired = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let mut row = vec![json!(meta::name(obj))];
    if kind == "Deployment" {
        row.push(json!(format!("{}/{desired}", int("/status/readyReplicas"))));
        row.push(json!(int("/status/updatedReplicas")));
        row.push(json!(int("/status/availableReplicas")));
    } else {
        row.push(json!(desired));
        row.push(json!(int("/status/replicas")));
        row.push(json!(int("/status/readyReplicas")));
    }
    row.push(json!(age(obj.pointer("/metadata/creationTimestamp"))));
    row.push(json!(names.join(",")));
    row.push(json!(images.join(",")));
    row.push(json!(selector_text(obj.pointer("/spec/selector").unwrap_or(&Value::Null))));
    row
}

/// `RWO,RWX`: access modes as kubectl abbreviates them.
pub fn access_modes(modes: Option<&Value>) -> String {
    let short: Vec<&str> = modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    short.join(",")
}

fn volume_cells(kind: &str, obj: &Value) -> Vec<Value> {
    let text = |p: &str, none: &str| json!(obj.pointer(p).and_then(Value::as_str).unwrap_or(none));
    let created = age(obj.pointer("/metadata/creationTimestamp"));
    if kind == "PersistentVolume" {
        let claim = match (
            obj.pointer("/spec/claimRef/namespace").and_then(Value::as_str),
            obj.pointer("/spec/claimRef/name").and_then(Value::as_str),
        ) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            _ => String::new(),
        };
        vec![
            json!(meta::name(obj)),
            text("/spec/capacity/storage", ""),
            json!(access_modes(obj.pointer("/spec/accessModes"))),
            text("/spec/persistentVolumeReclaimPolicy", "Retain"),
            text("/status/phase", "Available"),
            json!(claim),
            text("/spec/storageClassName", ""),
            text("/spec/volumeAttributesClassName", "<unset>"),
            text("/status/reason", ""),
            json!(created),
            text("/spec/volumeMode", "Filesystem"),
        ]
    } else {
        vec![
            json!(meta::name(obj)),
            text("/status/phase", "Pending"),
            text("/spec/volumeName", ""),
            text("/status/capacity/storage", ""),
            json!(access_modes(obj.pointer("/status/accessModes"))),
            text("/spec/storageClassName", "<unset>"),
            text("/spec/volumeAttributesClassName", "<unset>"),
            json!(created),
            text("/spec/volumeMode", "Filesystem"),
        ]
    }
}

/// `80/TCP` or `80:30080/TCP`, comma-separated, as kubectl prints PORT(S).
pub fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

/// EXTERNAL-IP: load-balancer ingress and external IPs, `<pending>` for a LoadBalancer
/// without ingress, the name for ExternalName.
pub fn external_ips(svc: &Value) -> String {
    let kind = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return svc.pointer("/spec/externalName").and_then(Value::as_str).unwrap_or("<none>").to_string();
    }
    let mut ips: Vec<String> = svc
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(String::from))
        .collect();
    for ip in svc.pointer("/spec/externalIPs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    {
        if !ips.iter().any(|i| i == ip) {
            ips.push(ip.to_string());
        }
    }
    match (ips.is_empty(), kind) {
        (false, _) => ips.join(","),
        (true, "LoadBalancer") => "<pending>".into(),
        _ => "<none>".into(),
    }
}

fn service_cells(svc: &Value) -> Vec<Value> {
    let kind = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let cluster_ip = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("<none>");
    let selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    vec![
        json!(meta::name(svc)),
        json!(kind),
        json!(cluster_ip),
        json!(external_ips(svc)),
        json!(service_ports(svc)),
        json!(age(svc.pointer("/metadata/creationTimestamp"))),
        json!(if selector.is_empty() { "<none>".into() } else { selector.join(",") }),
    ]
}

/// ENDPOINTS: `ip:port` pairs of ready addresses, at most three then `+ N more...`.
pub fn endpoints_text(ep: &Value) -> String {
    let mut all = Vec::new();
    for s in ep["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            for p in s["ports"].as_array().into_iter().flatten() {
                all.push(format!("{}:{}", a["ip"].as_str().unwrap_or(""), p["port"]));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
        _ => all.join(","),
    }
}

/// Renders objects of one kind as a Table; `rows` keep the full object for `--show-labels` and `-A`.
pub fn render(kind: &str, objects: &[Value], resource_version: u64) -> Value {
    let defs: Vec<Value> = columns(kind)
        .iter()
        .map(|c| json!({"name": c.name.to_uppercase(), "type": c.kind, "format": if c.name == "Name" { "name" } else { "" }, "description": "", "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| json!({"cells": cells(kind, o), "object": o})).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// The STATUS column of `kubectl get pods` (kubectl's printPod).
pub fn pod_status_reason(pod: &Value) -> String {
    let status = &pod["status"];
    let mut reason = status["reason"].as_str().or(status["phase"].as_str()).unwrap_or("Pending").to_string();
    let mut initializing = false;
    let init_total = pod.pointer("/spec/initContainers").and_then(Value::as_array).map_or(0, Vec::len);
    for (i, c) in status["initContainerStatuses"].as_array().into_iter().flatten().enumerate() {
        let state = &c["state"];
        if state["terminated"]["exitCode"].as_i64() == Some(0) {
            continue;
        }
        initializing = true;
        reason = if let Some(r) = state["terminated"]["reason"].as_str() {
            format!("Init:{r}")
        } else if state["terminated"].is_object() {
            format!("Init:ExitCode:{}", state["terminated"]["exitCode"])
        } else if let Some(r) = state["waiting"]["reason"].as_str().filter(|r| *r != "PodInitializing") {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in status["containerStatuses"].as_array().into_iter().flatten().rev() {
            let state = &c["state"];
            if let Some(r) = state["waiting"]["reason"].as_str() {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"].as_str() {
                reason = r.to_string();
            } else if state["terminated"].is_object() {
                reason = match state["terminated"]["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", state["terminated"]["exitCode"].as_i64().unwrap_or(0)),
                };
            } else if state["running"].is_object() && c["ready"].as_bool() == Some(true) {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if meta::is_deleting(pod) {
        reason = "Terminating".into();
    }
    reason
}

/// kubectl's printNode: STATUS from the Ready condition and cordon, ROLES from the role labels.
fn node_cells(node: &Value) -> Vec<Value> {
    use crate::objects::node;
    let roles = node::roles(node);
    let info = |field: &str| {
        node.pointer(&format!("/status/nodeInfo/{field}")).and_then(Value::as_str).filter(|s| !s.is_empty())
    };
    vec![
        json!(meta::name(node)),
        json!(node::status_text(node)),
        json!(if roles.is_empty() { "<none>".into() } else { roles.join(",") }),
        json!(age(node.pointer("/metadata/creationTimestamp"))),
        json!(info("kubeletVersion").unwrap_or("")),
        json!(node::address(node, "InternalIP").unwrap_or("<none>")),
        json!(node::address(node, "ExternalIP").unwrap_or("<none>")),
        json!(info("osImage").unwrap_or("<unknown>")),
        json!(info("kernelVersion").unwrap_or("<unknown>")),
        json!(info("containerRuntimeVersion").unwrap_or("<unknown>")),
    ]
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let total = pod.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let ready = statuses.into_iter().flatten().filter(|c| c["ready"].as_bool() == Some(true)).count();
    let restarts: i64 = statuses.into_iter().flatten().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
    let last_restart = statuses
        .into_iter()
        .flatten()
        .filter_map(|c| meta::parse_time(c.pointer("/lastState/terminated/finishedAt")))
        .max();
    let restarts = match last_restart {
        Some(t) if restarts > 0 => {
            format!("{restarts} ({} ago)", human_duration(jiff::Timestamp::now().as_second() - t.as_second()))
        }
        _ => restarts.to_string(),
    };
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or("<none>");
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("<none>");
    vec![
        json!(meta::name(pod)),
        json!(format!("{ready}/{total}")),
        json!(pod_status_reason(pod)),
        json!(restarts),
        json!(age(pod.pointer("/metadata/creationTimestamp"))),
        json!(ip),
        json!(node),
        json!("<none>"),
        json!("<none>"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_column() {
        let mut pod =
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        assert_eq!(pod_status_reason(&pod), "Pending");
        pod["status"]["containerStatuses"] =
            json!([{"name": "a", "ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
        assert_eq!(pod_status_reason(&pod), "CrashLoopBackOff");
        pod["status"]["containerStatuses"] =
            json!([{"name": "a", "ready": false, "state": {"terminated": {"exitCode": 3}}}]);
        assert_eq!(pod_status_reason(&pod), "ExitCode:3");
        pod["status"]["phase"] = json!("Running");
        pod["status"]["containerStatuses"] = json!([{"name": "a", "ready": true, "state": {"running": {}}}]);
        assert_eq!(pod_status_reason(&pod), "Running");
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pod_status_reason(&pod), "Terminating");
    }

    #[test]
    fn service_and_endpoints_rows() {
        let svc = json!({"metadata": {"name": "fleetman-webapp"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.3", "selector": {"app": "webapp"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let cells = service_cells(&svc);
        assert_eq!(cells[1..5], [json!("NodePort"), json!("10.43.0.3"), json!("<none>"), json!("80:30080/TCP")]);
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "externalIPs": ["192.0.2.9"]}});
        assert_eq!(external_ips(&lb), "192.0.2.9");
        assert_eq!(external_ips(&json!({"spec": {"type": "LoadBalancer"}})), "<pending>");
        assert_eq!(
            external_ips(&json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}})),
            "db.example.com"
        );
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}], "ports": [{"port": 80}, {"port": 81}]}]});
        assert_eq!(endpoints_text(&ep), "10.42.0.5:80,10.42.0.5:81,10.42.0.6:80 + 1 more...");
        assert_eq!(endpoints_text(&json!({})), "<none>");
    }

    #[test]
    fn workload_rows() {
        let d = json!({"metadata": {"name": "webapp"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "webapp"}},
            "template": {"spec": {"containers": [{"name": "webapp", "image": "webapp:1"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = render("Deployment", std::slice::from_ref(&d), 1);
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "2/3");
        assert_eq!((cells[2].clone(), cells[3].clone()), (json!(3), json!(2)));
        assert_eq!(cells[7], "app=webapp");
        let t = render("ReplicaSet", &[d], 1);
        assert_eq!(t["columnDefinitions"][1]["name"], "DESIRED");
        assert_eq!(t["rows"][0]["cells"].as_array().unwrap()[1..4], [json!(3), json!(3), json!(2)]);
        let rc = json!({"metadata": {"name": "redis"}, "spec": {"selector": {"app": "redis", "role": "master"}}});
        assert_eq!(workload_cells("ReplicationController", &rc)[7], "app=redis,role=master");
        let sel = json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]}, {"key": "u", "operator": "DoesNotExist"}]});
        assert_eq!(selector_text(&sel), "a=b,t in (x,y),!u");
    }

    #[test]
    fn config_rows() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("ConfigMap", &cm)[1], json!(3));
        let s = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(cells("Secret", &s)[1..3], [json!("kubernetes.io/tls"), json!(2)]);
        let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "skerry.io/local-path"});
        assert_eq!(cells("StorageClass", &sc)[0], "local-path (default)");
    }

    #[test]
    fn volume_rows() {
        let pvc = json!({"metadata": {"name": "mongo-pvc"}, "spec": {"storageClassName": "mylocalstorage", "accessModes": ["ReadWriteOnce"]}, "status": {"phase": "Pending"}});
        let cells = volume_cells("PersistentVolumeClaim", &pvc);
        assert_eq!(
            cells[..6],
            [json!("mongo-pvc"), json!("Pending"), json!(""), json!(""), json!(""), json!("mylocalstorage")]
        );
        let pv = json!({"metadata": {"name": "local-storage"}, "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
            "claimRef": {"namespace": "default", "name": "mongo-pvc"}}, "status": {"phase": "Bound"}});
        let cells = volume_cells("PersistentVolume", &pv);
        assert_eq!(
            cells[1..6],
            [json!("20Gi"), json!("RWO,RWX"), json!("Retain"), json!("Bound"), json!("default/mongo-pvc")]
        );
    }

    #[test]
    fn node_rows() {
        let n = json!({"metadata": {"name": "edge-1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "Hostname", "address": "edge-1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
                       "nodeInfo": {"kubeletVersion": "v0.1.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.6.20"}}});
        let t = render("Node", &[n], 3);
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "NAME",
                "STATUS",
                "ROLES",
                "AGE",
                "VERSION",
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME"
            ]
        );
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[..3], [json!("edge-1"), json!("Ready,SchedulingDisabled"), json!("control-plane")]);
        assert_eq!(
            cells[4..],
            [
                json!("v0.1.0"),
                json!("10.0.0.5"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("containerd://1.6.20")
            ]
        );
        let bare = node_cells(&json!({"metadata": {"name": "new"}}));
        assert_eq!(bare[1..3], [json!("Unknown"), json!("<none>")]);
        assert_eq!(
            bare[5..],
            [json!("<none>"), json!("<none>"), json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
        );
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "webapp"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}, {"name": "b", "ready": false, "restartCount": 2, "state": {"running": {}}}]}});
        let t = render("Pod", &[pod], 7);
        assert_eq!(t["rows"][0]["cells"][0], "webapp");
        assert_eq!(t["rows"][0]["cells"][1], "1/2");
        assert_eq!(t["rows"][0]["cells"][3], "2");
        assert_eq!(t["columnDefinitions"][0]["name"], "NAME");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
