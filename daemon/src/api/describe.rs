//! `describe` output, rendered server-side in kubectl's layout.

use std::fmt::Write;

use serde_json::Value;

use crate::objects::meta;

use super::format::{age, describe_time};

/// A `kubectl describe`-style writer: aligned `Key:  value` lines with indentation.
struct Out {
    text: String,
    /// Where top-level values start (kubectl's tab writer: the longest key of the kind + 2).
    column: usize,
}

impl Out {
    fn line(&mut self, indent: usize, key: &str, value: impl std::fmt::Display) {
        let label = format!("{key}:");
        let _ = writeln!(self.text, "{:indent$}{label:<width$}{value}", "", width = self.width(indent, &label));
    }
    /// Values line up in one column per indent level, as kubectl's tab writer lays them out.
    fn width(&self, indent: usize, label: &str) -> usize {
        let column: usize = if indent == 0 { self.column } else { 20 };
        column.saturating_sub(indent).max(label.len() + 2)
    }

    fn raw(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{text}");
    }
    fn map(&mut self, indent: usize, key: &str, map: &std::collections::BTreeMap<String, String>) {
        if map.is_empty() {
            self.line(indent, key, "<none>");
            return;
        }
        let pad = self.width(indent, &format!("{key}:")) + indent;
        for (i, (k, v)) in map.iter().enumerate() {
            if i == 0 {
                self.line(indent, key, format!("{k}={v}"));
            } else {
                let _ = writeln!(self.text, "{:pad$}{k}={v}", "");
            }
        }
    }
}

/// Describes any object; pods and namespaces get their full kubectl layout.
/// `related` carries what the layout needs besides the object: a Service's Endpoints, a
/// Deployment's ReplicaSets, the pods of a ReplicaSet or ReplicationController.
pub fn describe(kind: &str, obj: &Value, related: &[Value], events: &[Value]) -> String {
    if kind == "Node" {
        return super::describe_node::describe(obj, related, events);
    }
    let column = match kind {
        "Service" => 26,
        "Deployment" => 24,
        "ReplicaSet" | "ReplicationController" => 14,
        _ => 18,
    };
    let mut out = Out { text: String::new(), column };
    out.line(0, "Name", meta::name(obj));
    if !meta::namespace(obj).is_empty() {
        out.line(0, "Namespace", meta::namespace(obj));
    }
    match kind {
        "Pod" => pod(&mut out, obj),
        "Service" => service(&mut out, obj, related.first()),
        "Deployment" => deployment(&mut out, obj, related),
        "ReplicaSet" | "ReplicationController" => replica_set(&mut out, obj, related),
        "ConfigMap" | "Secret" => config(&mut out, kind, obj),
        "Namespace" => {
            out.map(0, "Labels", &meta::labels(obj));
            out.map(0, "Annotations", &meta::string_map(obj, "annotations"));
            out.line(0, "Status", obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Active"));
            out.raw("\nNo resource quota.\n\nNo LimitRange resource.");
        }
        _ => {
            out.map(0, "Labels", &meta::labels(obj));
            out.map(0, "Annotations", &meta::string_map(obj, "annotations"));
        }
    }
    events_section(&mut out, events);
    out.text
}

fn pod(out: &mut Out, pod: &Value) {
    let spec = &pod["spec"];
    let status = &pod["status"];
    out.line(0, "Priority", spec["priority"].as_i64().unwrap_or(0));
    out.line(0, "Service Account", spec["serviceAccountName"].as_str().unwrap_or("default"));
    let node = match (spec["nodeName"].as_str(), status["hostIP"].as_str()) {
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n.to_string(),
        _ => "<none>".into(),
    };
    out.line(0, "Node", node);
    if status["startTime"].is_string() {
        out.line(0, "Start Time", describe_time(status.get("startTime")));
    }
    out.map(0, "Labels", &meta::labels(pod));
    annotations(out, 0, pod);
    if let Some(owner) = controller_of(pod) {
        out.line(0, "Controlled By", owner);
    }
    if meta::is_deleting(pod) {
        out.line(0, "Status", format!("Terminating (lasts {})", age(pod.pointer("/metadata/deletionTimestamp"))));
        out.line(
            0,
            "Termination Grace Period",
            format!("{}s", pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0)),
        );
    } else {
        out.line(0, "Status", status["phase"].as_str().unwrap_or("Pending"));
    }
    if let Some(reason) = status["reason"].as_str() {
        out.line(0, "Reason", reason);
    }
    if let Some(message) = status["message"].as_str() {
        out.line(0, "Message", message);
    }
    out.line(0, "IP", status["podIP"].as_str().unwrap_or(""));
    let ips: Vec<&str> = status["podIPs"].as_array().into_iter().flatten().filter_map(|i| i["ip"].as_str()).collect();
    if ips.is_empty() {
        out.line(0, "IPs", "<none>");
    } else {
        out.raw("IPs:");
        for ip in ips {
            out.line(2, "IP", ip);
        }
    }
    out.raw("Containers:");
    for c in spec["containers"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("");
        let cs = status["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str() == Some(name))
            .cloned()
            .unwrap_or(Value::Null);
        container(out, c, &cs);
    }
    out.raw("Conditions:");
    out.raw("  Type                        Status");
    for cond in status["conditions"].as_array().into_iter().flatten() {
        out.raw(format!("  {:<28}{} ", cond["type"].as_str().unwrap_or(""), cond["status"].as_str().unwrap_or("")));
    }
    volumes(out, 0, spec);
    out.line(0, "QoS Class", status["qosClass"].as_str().unwrap_or("BestEffort"));
    let selectors: std::collections::BTreeMap<String, String> = spec["nodeSelector"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    if selectors.is_empty() {
        out.line(0, "Node-Selectors", "<none>");
    } else {
        out.map(0, "Node-Selectors", &selectors);
    }
    out.line(0, "Tolerations", "<none>");
}

fn service(out: &mut Out, svc: &Value, endpoints: Option<&Value>) {
    out.map(0, "Labels", &meta::labels(svc));
    annotations(out, 0, svc);
    let spec = &svc["spec"];
    let selector: Vec<String> = spec["selector"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    out.line(0, "Selector", if selector.is_empty() { "<none>".into() } else { selector.join(",") });
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    out.line(0, "Type", kind);
    if kind == "ExternalName" {
        out.line(0, "External Name", spec["externalName"].as_str().unwrap_or(""));
    } else {
        out.line(0, "IP Family Policy", spec["ipFamilyPolicy"].as_str().unwrap_or("SingleStack"));
        let families: Vec<&str> =
            spec["ipFamilies"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        out.line(0, "IP Families", families.join(","));
        out.line(0, "IP", spec["clusterIP"].as_str().unwrap_or(""));
        let ips: Vec<&str> = spec["clusterIPs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        out.line(0, "IPs", ips.join(","));
    }
    if let Some(ext) = spec["externalIPs"].as_array().filter(|a| !a.is_empty()) {
        let ext: Vec<&str> = ext.iter().filter_map(Value::as_str).collect();
        out.line(0, "External IPs", ext.join(","));
    }
    let ingress: Vec<&str> = svc
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str())
        .collect();
    if !ingress.is_empty() {
        out.line(0, "LoadBalancer Ingress", ingress.join(", "));
    }
    for p in spec["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("<unset>");
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        out.line(0, "Port", format!("{name}  {}/{proto}", p["port"]));
        let target = match &p["targetPort"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        out.line(0, "TargetPort", format!("{target}/{proto}"));
        if let Some(np) = p["nodePort"].as_i64() {
            out.line(0, "NodePort", format!("{name}  {np}/{proto}"));
        }
        let addrs: Vec<String> =
            endpoints
                .and_then(|e| e["subsets"].as_array())
                .into_iter()
                .flatten()
                .filter(|s| {
                    s["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|sp| sp["name"].as_str().unwrap_or("") == p["name"].as_str().unwrap_or(""))
                })
                .flat_map(|s| {
                    let port = s["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|sp| sp["name"].as_str().unwrap_or("") == p["name"].as_str().unwrap_or(""))
                        .map(|sp| sp["port"].clone());
                    s["addresses"].as_array().cloned().unwrap_or_default().into_iter().map(move |a| {
                        format!("{}:{}", a["ip"].as_str().unwrap_or(""), port.clone().unwrap_or_default())
                    })
                })
                .collect();
        out.line(0, "Endpoints", addrs.join(","));
    }
    out.line(0, "Session Affinity", spec["sessionAffinity"].as_str().unwrap_or("None"));
    if let Some(p) = spec["externalTrafficPolicy"].as_str() {
        out.line(0, "External Traffic Policy", p);
    }
    out.line(0, "Internal Traffic Policy", spec["internalTrafficPolicy"].as_str().unwrap_or("Cluster"));
}

/// ConfigMaps show their data; Secrets only the size of each value, never the value.
fn config(out: &mut Out, kind: &str, obj: &Value) {
    out.map(0, "Labels", &meta::labels(obj));
    annotations(out, 0, obj);
    out.raw("");
    if kind == "Secret" {
        out.line(0, "Type", obj["type"].as_str().unwrap_or("Opaque"));
        out.raw("\nData\n====");
        let data = crate::objects::config::secret_data(obj);
        let width = data.keys().map(|k| k.len() + 3).max().unwrap_or(0);
        for (k, v) in &data {
            out.raw(format!("{:<width$}{} bytes", format!("{k}:"), v.len()));
        }
        return;
    }
    out.raw("Data\n====");
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        out.raw(format!("{k}:\n----\n{}\n", v.as_str().unwrap_or("")));
    }
    out.raw("\nBinaryData\n====");
    for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
        let n = v.as_str().map_or(0, |b| b.len() * 3 / 4);
        out.raw(format!("{k}: {n} bytes"));
    }
    out.raw("");
}

/// `Annotations:` as kubectl prints them (`key: value`), without the last-applied manifest.
fn annotations(out: &mut Out, indent: usize, obj: &Value) {
    let mut map = meta::string_map(obj, "annotations");
    map.remove(crate::objects::LAST_APPLIED);
    if map.is_empty() {
        out.line(indent, "Annotations", "<none>");
        return;
    }
    let pad = out.width(indent, "Annotations:") + indent;
    for (i, (k, v)) in map.iter().enumerate() {
        if i == 0 {
            out.line(indent, "Annotations", format!("{k}: {v}"));
        } else {
            let _ = writeln!(out.text, "{:pad$}{k}: {v}", "");
        }
    }
}

/// `Deployment/webapp`: the controlling owner, as `Controlled By` shows it.
fn controller_of(obj: &Value) -> Option<String> {
    meta::controller_of(obj)
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["name"].as_str().unwrap_or("")))
}

fn owned_by<'a>(owner: &'a Value, objects: &'a [Value]) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| meta::is_owned_by(o, meta::uid(owner)))
}

fn deployment(out: &mut Out, d: &Value, replica_sets: &[Value]) {
    let spec = &d["spec"];
    let status = &d["status"];
    out.line(0, "CreationTimestamp", describe_time(d.pointer("/metadata/creationTimestamp")));
    out.map(0, "Labels", &meta::labels(d));
    annotations(out, 0, d);
    out.line(0, "Selector", super::table::selector_text(&spec["selector"]));
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    out.line(
        0,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            spec["replicas"].as_i64().unwrap_or(1),
            n(&status["updatedReplicas"]),
            n(&status["replicas"]),
            n(&status["availableReplicas"]),
            n(&status["unavailableReplicas"])
        ),
    );
    let strategy = spec.pointer("/strategy/type").and_then(Value::as_str).unwrap_or("RollingUpdate");
    out.line(0, "StrategyType", strategy);
    out.line(0, "MinReadySeconds", spec["minReadySeconds"].as_i64().unwrap_or(0));
    if strategy == "RollingUpdate" {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "25%".into(),
            v => v.to_string(),
        };
        let ru = &spec["strategy"]["rollingUpdate"];
        out.line(
            0,
            "RollingUpdateStrategy",
            format!("{} max unavailable, {} max surge", text(&ru["maxUnavailable"]), text(&ru["maxSurge"])),
        );
    }
    pod_template(out, &spec["template"]);
    if let Some(conditions) = status["conditions"].as_array().filter(|c| !c.is_empty()) {
        out.raw("Conditions:");
        out.raw("  Type           Status  Reason");
        out.raw("  ----           ------  ------");
        for c in conditions {
            out.raw(format!(
                "  {:<15}{:<8}{}",
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            ));
        }
    }
    let owned: Vec<&Value> = owned_by(d, replica_sets).collect();
    let (new, old): (Vec<&Value>, Vec<&Value>) = owned
        .into_iter()
        .partition(|rs| crate::objects::workload::equal_ignore_hash(&rs["spec"]["template"], &spec["template"]));
    let summary = |rs: &&Value| {
        format!(
            "{} ({}/{} replicas created)",
            meta::name(rs),
            n(&rs["status"]["replicas"]),
            rs["spec"]["replicas"].as_i64().unwrap_or(0)
        )
    };
    let old: Vec<String> = old
        .iter()
        .filter(|rs| n(&rs["spec"]["replicas"]) > 0 || n(&rs["status"]["replicas"]) > 0)
        .map(summary)
        .collect();
    out.line(0, "OldReplicaSets", if old.is_empty() { "<none>".into() } else { old.join(", ") });
    out.line(0, "NewReplicaSet", new.first().map(summary).unwrap_or_else(|| "<none>".into()));
}

fn replica_set(out: &mut Out, rs: &Value, pods: &[Value]) {
    let spec = &rs["spec"];
    out.line(0, "Selector", super::table::selector_text(&spec["selector"]));
    out.map(0, "Labels", &meta::labels(rs));
    annotations(out, 0, rs);
    if let Some(owner) = controller_of(rs) {
        out.line(0, "Controlled By", owner);
    }
    out.line(
        0,
        "Replicas",
        format!(
            "{} current / {} desired",
            rs.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            spec["replicas"].as_i64().unwrap_or(1)
        ),
    );
    let mut counts = [0; 4];
    for p in owned_by(rs, pods) {
        match p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending") {
            "Running" => counts[0] += 1,
            "Succeeded" => counts[2] += 1,
            "Failed" => counts[3] += 1,
            _ => counts[1] += 1,
        }
    }
    out.line(
        0,
        "Pods Status",
        format!("{} Running / {} Waiting / {} Succeeded / {} Failed", counts[0], counts[1], counts[2], counts[3]),
    );
    pod_template(out, &spec["template"]);
}

/// `Pod Template:` as kubectl prints it for workloads.
fn pod_template(out: &mut Out, template: &Value) {
    out.raw("Pod Template:");
    out.map(2, "Labels", &meta::labels(template));
    if !meta::string_map(template, "annotations").is_empty() {
        annotations(out, 2, template);
    }
    out.raw("  Containers:");
    for c in template.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        out.raw(format!("   {}:", c["name"].as_str().unwrap_or("")));
        out.line(4, "Image", c["image"].as_str().unwrap_or(""));
        let ports: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p["containerPort"], p["protocol"].as_str().unwrap_or("TCP")))
            .collect();
        out.line(4, "Port", if ports.is_empty() { "<none>".into() } else { ports.join(", ") });
        let host_ports: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p["hostPort"].as_i64().unwrap_or(0), p["protocol"].as_str().unwrap_or("TCP")))
            .collect();
        out.line(4, "Host Port", if host_ports.is_empty() { "<none>".into() } else { host_ports.join(", ") });
        resources(out, c);
        probes(out, c);
        environment(out, c);
        mounts(out, c);
    }
    volumes(out, 2, &template["spec"]);
    out.line(2, "Node-Selectors", "<none>");
    out.line(2, "Tolerations", "<none>");
}

/// `Mounts:` of a container: `/data from data (rw)`, as kubectl prints them.
fn mounts(out: &mut Out, c: &Value) {
    let lines: Vec<String> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mode = if m["readOnly"].as_bool() == Some(true) { "ro" } else { "rw" };
            let sub = m["subPath"].as_str().map(|p| format!(",path=\"{p}\"")).unwrap_or_default();
            format!("{} from {} ({mode}{sub})", m["mountPath"].as_str().unwrap_or(""), m["name"].as_str().unwrap_or(""))
        })
        .collect();
    if lines.is_empty() {
        out.line(4, "Mounts", "<none>");
        return;
    }
    out.raw("    Mounts:");
    for l in lines {
        out.raw(format!("      {l}"));
    }
}

/// `Volumes:` with each volume's source, as kubectl prints the common types.
fn volumes(out: &mut Out, indent: usize, spec: &Value) {
    let list = spec["volumes"].as_array().filter(|v| !v.is_empty());
    let Some(list) = list else {
        out.line(indent, "Volumes", "<none>");
        return;
    };
    let pad = " ".repeat(indent);
    out.raw(format!("{pad}Volumes:"));
    for v in list {
        out.raw(format!("{pad}  {}:", v["name"].as_str().unwrap_or("")));
        let text = |x: &Value| {
            x.as_str().map(str::to_string).unwrap_or_else(|| x.as_bool().map(|b| b.to_string()).unwrap_or_default())
        };
        let fields: Vec<(&str, String)> = if let Some(p) = v.get("persistentVolumeClaim").filter(|x| x.is_object()) {
            vec![
                ("Type", "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)".into()),
                ("ClaimName", text(&p["claimName"])),
                ("ReadOnly", p["readOnly"].as_bool().unwrap_or(false).to_string()),
            ]
        } else if let Some(h) = v.get("hostPath").filter(|x| x.is_object()) {
            vec![
                ("Type", "HostPath (bare host directory volume)".into()),
                ("Path", text(&h["path"])),
                ("HostPathType", text(&h["type"])),
            ]
        } else if let Some(e) = v.get("emptyDir").filter(|x| x.is_object()) {
            vec![
                ("Type", "EmptyDir (a temporary directory that shares a pod's lifetime)".into()),
                ("Medium", text(&e["medium"])),
                ("SizeLimit", e["sizeLimit"].as_str().unwrap_or("<unset>").to_string()),
            ]
        } else if let Some(c) = v.get("configMap").filter(|x| x.is_object()) {
            vec![
                ("Type", "ConfigMap (a volume populated by a ConfigMap)".into()),
                ("Name", text(&c["name"])),
                ("Optional", c["optional"].as_bool().unwrap_or(false).to_string()),
            ]
        } else if let Some(sec) = v.get("secret").filter(|x| x.is_object()) {
            vec![
                ("Type", "Secret (a volume populated by a Secret)".into()),
                ("SecretName", text(&sec["secretName"])),
                ("Optional", sec["optional"].as_bool().unwrap_or(false).to_string()),
            ]
        } else {
            vec![("Type", "<unknown>".into())]
        };
        let width = fields.iter().map(|(k, _)| k.len() + 3).max().unwrap_or(0);
        for (k, val) in fields {
            out.raw(format!("{pad}    {:<width$}{val}", format!("{k}:")));
        }
    }
}

/// `Limits:` and `Requests:` of a container, as kubectl prints them.
fn resources(out: &mut Out, c: &Value) {
    let sections = [("limits", "Limits"), ("requests", "Requests")];
    // One column for both sections, as kubectl's tab writer lines them up.
    let width = sections
        .iter()
        .filter_map(|(f, _)| c["resources"][f].as_object())
        .flat_map(|m| m.keys())
        .map(|k| k.len() + 3)
        .max()
        .unwrap_or(0);
    for (field, label) in sections {
        let Some(map) = c["resources"][field].as_object().filter(|m| !m.is_empty()) else { continue };
        out.raw(format!("    {label}:"));
        for (k, v) in map {
            let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            out.raw(format!("      {:<width$}{v}", format!("{k}:")));
        }
    }
}

/// `Liveness:`/`Readiness:`/`Startup:` lines, as kubectl prints probes.
fn probes(out: &mut Out, c: &Value) {
    for (field, label) in [("livenessProbe", "Liveness"), ("readinessProbe", "Readiness"), ("startupProbe", "Startup")]
    {
        let p = &c[field];
        if !p.is_object() {
            continue;
        }
        let port = |v: &Value| match v {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let action = if let Some(h) = p.get("httpGet") {
            let scheme = h["scheme"].as_str().unwrap_or("HTTP").to_lowercase();
            format!(
                "http-get {scheme}://{}:{}{}",
                h["host"].as_str().unwrap_or(""),
                port(&h["port"]),
                h["path"].as_str().unwrap_or("/")
            )
        } else if let Some(t) = p.get("tcpSocket") {
            format!("tcp-socket {}:{}", t["host"].as_str().unwrap_or(""), port(&t["port"]))
        } else if let Some(e) = p.get("exec") {
            let cmd: Vec<&str> = e["command"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("exec [{}]", cmd.join(" "))
        } else {
            "unknown".into()
        };
        let n = |k: &str, d: i64| p[k].as_i64().unwrap_or(d);
        out.line(
            4,
            label,
            format!(
                "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
                n("initialDelaySeconds", 0),
                n("timeoutSeconds", 1),
                n("periodSeconds", 10),
                n("successThreshold", 1),
                n("failureThreshold", 3)
            ),
        );
    }
}

/// What kubectl prints for an env entry: its value, or where the value comes from (a Secret's
/// value is never shown).
fn env_value(e: &Value) -> String {
    let from = &e["valueFrom"];
    let optional = |r: &Value| r["optional"].as_bool().unwrap_or(false);
    if let Some(r) = from.get("secretKeyRef").filter(|r| r.is_object()) {
        return format!(
            "<set to the key '{}' in secret '{}'>  Optional: {}",
            r["key"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            optional(r)
        );
    }
    if let Some(r) = from.get("configMapKeyRef").filter(|r| r.is_object()) {
        return format!(
            "<set to the key '{}' of config map '{}'>  Optional: {}",
            r["key"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            optional(r)
        );
    }
    if let Some(r) = from.get("fieldRef").filter(|r| r.is_object()) {
        return format!("({}:{})", r["apiVersion"].as_str().unwrap_or("v1"), r["fieldPath"].as_str().unwrap_or(""));
    }
    e["value"].as_str().unwrap_or("").to_string()
}

fn environment(out: &mut Out, c: &Value) {
    let sources: Vec<String> = c["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let (kind, r) = if f["configMapRef"].is_object() {
                ("ConfigMap", &f["configMapRef"])
            } else if f["secretRef"].is_object() {
                ("Secret", &f["secretRef"])
            } else {
                return None;
            };
            let prefix = f["prefix"].as_str().map(|p| format!(" with prefix '{p}'")).unwrap_or_default();
            Some(format!(
                "{}  {kind}{prefix}  Optional: {}",
                r["name"].as_str().unwrap_or(""),
                r["optional"].as_bool().unwrap_or(false)
            ))
        })
        .collect();
    if !sources.is_empty() {
        out.raw("    Environment Variables from:");
        for s in sources {
            out.raw(format!("      {s}"));
        }
    }
    let env: Vec<String> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}:  {}", e["name"].as_str().unwrap_or(""), env_value(e)))
        .collect();
    if env.is_empty() {
        out.line(4, "Environment", "<none>");
    } else {
        out.raw("    Environment:");
        for e in env {
            out.raw(format!("      {e}"));
        }
    }
}

fn container(out: &mut Out, c: &Value, cs: &Value) {
    out.raw(format!("  {}:", c["name"].as_str().unwrap_or("")));
    if let Some(id) = cs["containerID"].as_str() {
        out.line(4, "Container ID", id);
    }
    out.line(4, "Image", c["image"].as_str().unwrap_or(""));
    out.line(4, "Image ID", cs["imageID"].as_str().unwrap_or(""));
    let ports: Vec<String> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["containerPort"], p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    let host_ports: Vec<String> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["hostPort"].as_i64().unwrap_or(0), p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    out.line(4, "Port", if ports.is_empty() { "<none>".into() } else { ports.join(", ") });
    out.line(4, "Host Port", if host_ports.is_empty() { "<none>".into() } else { host_ports.join(", ") });
    if let Some(cmd) = c["command"].as_array() {
        out.raw("    Command:");
        for a in cmd {
            out.raw(format!("      {}", a.as_str().unwrap_or("")));
        }
    }
    if let Some(args) = c["args"].as_array() {
        out.raw("    Args:");
        for a in args {
            out.raw(format!("      {}", a.as_str().unwrap_or("")));
        }
    }
    state(out, "State", &cs["state"]);
    if cs["lastState"].as_object().is_some_and(|m| !m.is_empty()) {
        state(out, "Last State", &cs["lastState"]);
    }
    out.line(4, "Ready", if cs["ready"].as_bool() == Some(true) { "True" } else { "False" });
    out.line(4, "Restart Count", cs["restartCount"].as_i64().unwrap_or(0));
    resources(out, c);
    probes(out, c);
    environment(out, c);
    mounts(out, c);
}

fn state(out: &mut Out, label: &str, state: &Value) {
    if let Some(r) = state.get("running").filter(|v| v.is_object()) {
        out.line(4, label, "Running");
        out.line(6, "Started", describe_time(r.get("startedAt")));
    } else if let Some(t) = state.get("terminated").filter(|v| v.is_object()) {
        out.line(4, label, "Terminated");
        out.line(6, "Reason", t["reason"].as_str().unwrap_or(""));
        out.line(6, "Exit Code", t["exitCode"].as_i64().unwrap_or(0));
        if let Some(sig) = t["signal"].as_i64() {
            out.line(6, "Signal", sig);
        }
        out.line(6, "Started", describe_time(t.get("startedAt")));
        out.line(6, "Finished", describe_time(t.get("finishedAt")));
    } else if let Some(w) = state.get("waiting").filter(|v| v.is_object()) {
        out.line(4, label, "Waiting");
        out.line(6, "Reason", w["reason"].as_str().unwrap_or(""));
        if let Some(m) = w["message"].as_str() {
            out.line(6, "Message", m);
        }
    } else {
        out.line(4, label, "Waiting");
    }
}

fn events_section(out: &mut Out, events: &[Value]) {
    if events.is_empty() {
        out.line(0, "Events", "<none>");
        return;
    }
    out.text.push_str(&events_text(events));
}

/// The `Events:` table of a non-empty event list.
pub(super) fn events_text(events: &[Value]) -> String {
    let mut out = Out { text: String::new(), column: 0 };
    out.raw("Events:");
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            let count = e["count"].as_i64().unwrap_or(1);
            let last =
                age(e.get("lastTimestamp").filter(|v| !v.is_null()).or(e.pointer("/metadata/creationTimestamp")));
            let when =
                if count > 1 { format!("{last} (x{count} over {})", age(e.get("firstTimestamp"))) } else { last };
            [
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
                when,
                e.pointer("/source/component").and_then(Value::as_str).unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").trim().to_string(),
            ]
        })
        .collect();
    let header = ["Type", "Reason", "Age", "From", "Message"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(&format!(" {c}"));
            } else {
                s.push_str(&format!(" {c:<w$}", w = widths[i] + 1));
            }
        }
        s
    };
    out.raw(line(header.to_vec()));
    out.raw(line(header.iter().map(|h| "-".repeat(h.len())).collect::<Vec<_>>().iter().map(String::as_str).collect()));
    for r in &rows {
        out.raw(line(r.iter().map(String::as_str).collect()));
    }
    out.text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::describe;

    #[test]
    fn secrets_show_sizes_never_values() {
        let s = json!({"metadata": {"name": "db", "namespace": "default"}, "type": "Opaque", "data": {"password": "czNjcjN0", "user": "YWRtaW4="}});
        let text = describe("Secret", &s, &[], &[]);
        assert!(text.contains("password:  6 bytes"), "{text}");
        assert!(text.contains("user:      5 bytes"), "{text}");
        assert!(!text.contains("s3cr3t") && !text.contains("czNjcjN0"), "{text}");
    }

    #[test]
    fn environment_names_sources_not_secret_values() {
        let c = json!({"name": "app", "image": "app:1",
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
            "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "PLAIN", "value": "x"}]});
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [c]}, "status": {}});
        let text = describe("Pod", &pod, &[], &[]);
        assert!(
            text.contains(
                "    Environment Variables from:\n      settings  ConfigMap with prefix 'APP_'  Optional: false\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("      PASSWORD:  <set to the key 'password' in secret 'db'>  Optional: false\n"),
            "{text}"
        );
        assert!(text.contains("      POD:  (v1:metadata.name)\n"), "{text}");
        assert!(text.contains("      PLAIN:  x\n"), "{text}");
    }

    #[test]
    fn deployments_show_replicas_strategy_and_replica_sets() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "uid": "d1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:2",
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
                        "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}]}}},
            "status": {"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2, "unavailableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
        let owner = json!([{"uid": "d1", "kind": "Deployment", "name": "web", "controller": true}]);
        let new = json!({"metadata": {"name": "web-new", "ownerReferences": owner}, "spec": {"replicas": 1,
            "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "new"}}, "spec": d["spec"]["template"]["spec"]}}, "status": {"replicas": 1}});
        let old = json!({"metadata": {"name": "web-old", "ownerReferences": owner}, "spec": {"replicas": 2,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}, "status": {"replicas": 2}});
        let text = describe("Deployment", &d, &[old, new], &[]);
        assert!(
            text.contains("Replicas:               2 desired | 1 updated | 3 total | 2 available | 1 unavailable"),
            "{text}"
        );
        assert!(text.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"), "{text}");
        assert!(
            text.contains("Readiness:      http-get http://:80/ delay=0s timeout=1s period=1s #success=1 #failure=3"),
            "{text}"
        );
        assert!(text.contains("OldReplicaSets:         web-old (2/2 replicas created)"), "{text}");
        assert!(text.contains("    Limits:\n      memory:  64Mi\n    Requests:\n      cpu:     250m\n"), "{text}");
        assert!(text.contains("NewReplicaSet:          web-new (1/1 replicas created)"), "{text}");
        assert!(text.contains("  Available      True    MinimumReplicasAvailable"), "{text}");
    }
}

#[cfg(test)]
mod volume_tests {
    use serde_json::json;

    use super::describe;

    #[test]
    fn mounts_and_volumes_name_their_sources() {
        let pod = json!({"metadata": {"name": "mongodb", "namespace": "default"},
            "spec": {"containers": [{"name": "mongodb", "image": "mongo:3.6.5-jessie",
                        "volumeMounts": [{"name": "mongo-persistent-storage", "mountPath": "/data/db"}, {"name": "cfg", "mountPath": "/etc/app", "readOnly": true, "subPath": "app"}]}],
                     "volumes": [{"name": "mongo-persistent-storage", "persistentVolumeClaim": {"claimName": "mongo-pvc"}},
                                 {"name": "cfg", "configMap": {"name": "settings"}}]}, "status": {}});
        let text = describe("Pod", &pod, &[], &[]);
        assert!(text.contains("    Mounts:\n      /data/db from mongo-persistent-storage (rw)\n      /etc/app from cfg (ro,path=\"app\")\n"), "{text}");
        assert!(text.contains("  mongo-persistent-storage:\n    Type:       PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:  mongo-pvc\n    ReadOnly:   false\n"), "{text}");
        assert!(text.contains("  cfg:\n    Type:      ConfigMap (a volume populated by a ConfigMap)\n    Name:      settings\n    Optional:  false\n"), "{text}");
    }
}
