//! `describe node` in kubectl's layout (`describeNode`): written as tab-separated text and laid
//! out by [`tabbed`], as kubectl's tab writer does, so columns line up exactly where kubectl's do.
//!
//! Left out because Skerry has no such data: the `Lease` section (liveness moves to gossip) and
//! `ProviderID`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::objects::{meta, node, quantity};

use super::format::{age, describe_time, tabbed};

/// kubectl prints longer annotation values on lines of their own, shortened to this.
const MAX_ANNOTATION_LEN: usize = 140;

/// Describes `node`, with the non-terminated `pods` bound to it and its `events`.
pub fn describe(node: &Value, pods: &[Value], events: &[Value]) -> String {
    let mut w = String::new();
    let roles = node::roles(node);
    let _ = writeln!(w, "Name:\t{}", meta::name(node));
    let _ = writeln!(w, "Roles:\t{}", if roles.is_empty() { "<none>".to_string() } else { roles.join(",") });
    multiline(&mut w, "Labels", meta::labels(node).into_iter().map(|(k, v)| format!("{k}={v}")).collect());
    annotations(&mut w, node);
    let _ = writeln!(w, "CreationTimestamp:\t{}", describe_time(node.pointer("/metadata/creationTimestamp")));
    let mut taints: Vec<&Value> =
        node.pointer("/spec/taints").and_then(Value::as_array).into_iter().flatten().collect();
    let sort_key = |t: &Value| format!("{},{}", t["effect"].as_str().unwrap_or(""), t["key"].as_str().unwrap_or(""));
    taints.sort_by_key(|t| sort_key(t));
    multiline(&mut w, "Taints", taints.into_iter().map(node::taint_text).collect());
    let _ = writeln!(w, "Unschedulable:\t{}", node::is_unschedulable(node));
    let status = &node["status"];
    if let Some(conditions) = status["conditions"].as_array().filter(|c| !c.is_empty()) {
        w.push_str("Conditions:\n  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage\n");
        w.push_str("  ----\t------\t-----------------\t------------------\t------\t-------\n");
        for c in conditions {
            let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
            let _ = writeln!(
                w,
                "  {} \t{} \t{} \t{} \t{} \t{}",
                text("type"),
                text("status"),
                describe_time(c.get("lastHeartbeatTime")),
                describe_time(c.get("lastTransitionTime")),
                text("reason"),
                text("message")
            );
        }
    }
    w.push_str("Addresses:\n");
    for a in status["addresses"].as_array().into_iter().flatten() {
        let _ = writeln!(w, "  {}:\t{}", a["type"].as_str().unwrap_or(""), a["address"].as_str().unwrap_or(""));
    }
    for (title, field) in [("Capacity", "capacity"), ("Allocatable", "allocatable")] {
        let list = resource_list(&status[field]);
        if !list.is_empty() {
            let _ = writeln!(w, "{title}:");
            for (name, value) in list {
                let _ = writeln!(w, "  {name}:\t{value}");
            }
        }
    }
    let info = |k: &str| status["nodeInfo"][k].as_str().unwrap_or("").to_string();
    w.push_str("System Info:\n");
    for (label, field) in [
        ("Machine ID", "machineID"),
        ("System UUID", "systemUUID"),
        ("Boot ID", "bootID"),
        ("Kernel Version", "kernelVersion"),
        ("OS Image", "osImage"),
        ("Operating System", "operatingSystem"),
        ("Architecture", "architecture"),
        ("Container Runtime Version", "containerRuntimeVersion"),
        ("Kubelet Version", "kubeletVersion"),
    ] {
        let _ = writeln!(w, "  {label}:\t{}", info(field));
    }
    if !info("kubeProxyVersion").is_empty() {
        let _ = writeln!(w, "  Kube-Proxy Version:\t{}", info("kubeProxyVersion"));
    }
    if let Some(cidr) = node.pointer("/spec/podCIDR").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        let _ = writeln!(w, "PodCIDR:\t{cidr}");
    }
    let cidrs: Vec<&str> = node
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !cidrs.is_empty() {
        let _ = writeln!(w, "PodCIDRs:\t{}", cidrs.join(","));
    }
    if let Some(id) = node.pointer("/spec/providerID").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        let _ = writeln!(w, "ProviderID:\t{id}");
    }
    resources(&mut w, node, pods);
    if events.is_empty() {
        w.push_str("Events:\t<none>\n");
        return tabbed(&w);
    }
    // kubectl flushes its tab writer before the events table.
    let mut out = tabbed(&w);
    out.push_str(&super::describe::events_text(events));
    out
}

/// `Labels:`/`Taints:`: the first entry after the title, the others below it in the same column.
fn multiline(w: &mut String, title: &str, entries: Vec<String>) {
    if entries.is_empty() {
        let _ = writeln!(w, "{title}:\t<none>");
        return;
    }
    for (i, e) in entries.iter().enumerate() {
        let head = if i == 0 { format!("{title}:") } else { String::new() };
        let _ = writeln!(w, "{head}\t{e}");
    }
}

/// kubectl's `printAnnotationsMultiline`: sorted, without the last-applied manifest; long or
/// multi-line values on lines of their own.
fn annotations(w: &mut String, obj: &Value) {
    let mut map = meta::string_map(obj, "annotations");
    map.remove(crate::objects::LAST_APPLIED);
    if map.is_empty() {
        w.push_str("Annotations:\t<none>\n");
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        w.push_str(if i == 0 { "Annotations:\t" } else { "\t" });
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            let _ = writeln!(w, "{k}:");
            for line in v.split('\n') {
                let short = match line.char_indices().nth(MAX_ANNOTATION_LEN - 2) {
                    Some((at, _)) => format!("{}...", &line[..at]),
                    None => line.to_string(),
                };
                let _ = writeln!(w, "\t  {short}");
            }
        } else {
            let _ = writeln!(w, "{k}: {v}");
        }
    }
}

/// A resource list (`capacity`), sorted by name, values as stored.
fn resource_list(list: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    out.sort();
    out
}

/// A summed quantity: millicores for `cpu`, whole units otherwise; written in the form of its
/// first non-zero term, as apimachinery adds quantities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Amount {
    value: u64,
    binary: bool,
}

impl Amount {
    fn parse(resource: &str, text: &str) -> Amount {
        let value = if resource == "cpu" { quantity::parse_cpu_millis(text) } else { quantity::parse_bytes(text) };
        Amount { value: value.unwrap_or(0), binary: quantity::is_binary(text) }
    }

    fn add(&mut self, other: Amount) {
        if self.value == 0 {
            self.binary = other.binary;
        }
        self.value = self.value.saturating_add(other.value);
    }

    fn text(&self, resource: &str) -> String {
        if resource == "cpu" {
            quantity::format_cpu_millis(self.value)
        } else {
            quantity::format_units(self.value, self.binary)
        }
    }
}

type Amounts = BTreeMap<String, Amount>;

fn amounts(list: &Value) -> Amounts {
    list.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Amount::parse(k, v.as_str()?))))
        .collect()
}

/// kubectl's `PodRequestsAndLimits`: the containers' sum, at least each init container's.
fn pod_requests_and_limits(pod: &Value) -> (Amounts, Amounts) {
    let (mut requests, mut limits) = (Amounts::new(), Amounts::new());
    let list = |c: &Value, field: &str| amounts(&c["resources"][field]);
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        for (into, field) in [(&mut requests, "requests"), (&mut limits, "limits")] {
            for (name, amount) in list(c, field) {
                into.entry(name).or_default().add(amount);
            }
        }
    }
    for c in pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten() {
        for (into, field) in [(&mut requests, "requests"), (&mut limits, "limits")] {
            for (name, amount) in list(c, field) {
                let entry = into.entry(name).or_default();
                if amount.value > entry.value {
                    *entry = amount;
                }
            }
        }
    }
    for (name, amount) in amounts(pod.pointer("/spec/overhead").unwrap_or(&Value::Null)) {
        requests.entry(name.clone()).or_default().add(amount);
        if limits.get(&name).is_some_and(|l| l.value > 0) {
            limits.entry(name).or_default().add(amount);
        }
    }
    (requests, limits)
}

/// `int64(float64(part) / float64(whole) * 100)`, 0 when there is no whole.
fn percent(part: &Amount, whole: Option<&Amount>) -> i64 {
    match whole.map(|w| w.value).filter(|w| *w > 0) {
        Some(w) => (part.value as f64 / w as f64 * 100.0) as i64,
        None => 0,
    }
}

/// `Non-terminated Pods` and `Allocated resources`, against allocatable (or capacity).
fn resources(w: &mut String, node: &Value, pods: &[Value]) {
    let status = &node["status"];
    let allocatable = match status["allocatable"].as_object().filter(|m| !m.is_empty()) {
        Some(_) => amounts(&status["allocatable"]),
        None => amounts(&status["capacity"]),
    };
    let zero = Amount::default();
    let of = |list: &Amounts, name: &str| list.get(name).copied().unwrap_or_default();
    let cell = |list: &Amounts, name: &str| {
        let a = of(list, name);
        format!("{} ({}%)", a.text(name), percent(&a, allocatable.get(name)))
    };
    let _ = writeln!(w, "Non-terminated Pods:\t({} in total)", pods.len());
    w.push_str("  Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge\n");
    w.push_str("  ---------\t----\t\t------------\t----------\t---------------\t-------------\t---\n");
    let (mut total_requests, mut total_limits) = (Amounts::new(), Amounts::new());
    for pod in pods {
        let (requests, limits) = pod_requests_and_limits(pod);
        let _ = writeln!(
            w,
            "  {}\t{}\t\t{}\t{}\t{}\t{}\t{}",
            meta::namespace(pod),
            meta::name(pod),
            cell(&requests, "cpu"),
            cell(&limits, "cpu"),
            cell(&requests, "memory"),
            cell(&limits, "memory"),
            age(pod.pointer("/metadata/creationTimestamp"))
        );
        for (total, list) in [(&mut total_requests, requests), (&mut total_limits, limits)] {
            for (name, amount) in list {
                total.entry(name).or_default().add(amount);
            }
        }
    }
    w.push_str("Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n");
    w.push_str("  Resource\tRequests\tLimits\n  --------\t--------\t------\n");
    let hugepages = allocatable.keys().filter(|k| k.starts_with("hugepages-")).cloned();
    let rows: Vec<String> =
        ["cpu", "memory", "ephemeral-storage"].iter().map(|s| s.to_string()).chain(hugepages).collect();
    for name in rows {
        let _ = writeln!(w, "  {name}\t{}\t{}", cell(&total_requests, &name), cell(&total_limits, &name));
    }
    let standard = |k: &str| matches!(k, "cpu" | "memory" | "ephemeral-storage" | "storage" | "pods");
    for name in allocatable.keys().filter(|k| !standard(k) && !k.starts_with("hugepages-")) {
        let (r, l) = (total_requests.get(name).unwrap_or(&zero), total_limits.get(name).unwrap_or(&zero));
        let _ = writeln!(w, "  {name}\t{}\t{}", r.text(name), l.text(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({
            "metadata": {"name": "edge-1", "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"kubernetes.io/hostname": "edge-1", "node-role.kubernetes.io/control-plane": "", "beta.kubernetes.io/arch": "amd64"},
                "annotations": {"example.com/note": "hi"}},
            "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "unschedulable": true,
                "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:04:05Z", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": "10.250.0.2"}, {"type": "Hostname", "address": "edge-1"}],
                "capacity": {"cpu": "2", "memory": "4015520Ki", "pods": "110", "ephemeral-storage": "20134592Ki", "hugepages-2Mi": "0"},
                "allocatable": {"cpu": "2", "memory": "3913120Ki", "pods": "110", "ephemeral-storage": "18556039957", "hugepages-2Mi": "0"},
                "nodeInfo": {"machineID": "m1", "systemUUID": "s1", "bootID": "b1", "kernelVersion": "6.1.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion": "containerd://1.6.20", "kubeletVersion": "v0.1.0"}
            }
        })
    }

    #[test]
    fn the_layout_is_kubectls() {
        let pod = json!({"metadata": {"name": "web-abc12", "namespace": "default"}, "spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}});
        let text = describe(&node(), &[pod], &[]);
        let expected = "\
Name:               edge-1
Roles:              control-plane
Labels:             beta.kubernetes.io/arch=amd64
                    kubernetes.io/hostname=edge-1
                    node-role.kubernetes.io/control-plane=
Annotations:        example.com/note: hi
CreationTimestamp:  Fri, 02 Jan 2026 03:04:05 +0000
Taints:             dedicated=gpu:NoExecute
                    node.kubernetes.io/unschedulable:NoSchedule
Unschedulable:      true
Conditions:
  Type    Status  LastHeartbeatTime                 LastTransitionTime                Reason         Message
  ----    ------  -----------------                 ------------------                ------         -------
  Ready   True    Fri, 02 Jan 2026 03:04:05 +0000   Fri, 02 Jan 2026 03:04:05 +0000   KubeletReady   kubelet is posting ready status
Addresses:
  InternalIP:  10.250.0.2
  Hostname:    edge-1
Capacity:
  cpu:                2
  ephemeral-storage:  20134592Ki
  hugepages-2Mi:      0
  memory:             4015520Ki
  pods:               110
Allocatable:
  cpu:                2
  ephemeral-storage:  18556039957
  hugepages-2Mi:      0
  memory:             3913120Ki
  pods:               110
System Info:
  Machine ID:                 m1
  System UUID:                s1
  Boot ID:                    b1
  Kernel Version:             6.1.0
  OS Image:                   Debian GNU/Linux 12 (bookworm)
  Operating System:           linux
  Architecture:               amd64
  Container Runtime Version:  containerd://1.6.20
  Kubelet Version:            v0.1.0
PodCIDR:                      10.42.0.0/24
PodCIDRs:                     10.42.0.0/24
Non-terminated Pods:          (1 in total)
  Namespace                   Name         CPU Requests  CPU Limits  Memory Requests  Memory Limits  Age
  ---------                   ----         ------------  ----------  ---------------  -------------  ---
";
        assert!(text.starts_with(expected), "{text}");
        assert!(text.contains("\n  default                     web-abc12    1 (50%)       500m (25%)  128Mi (3%)       128Mi (3%)     "), "{text}");
        assert!(
            text.ends_with(
                "\
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource           Requests    Limits
  --------           --------    ------
  cpu                1 (50%)     500m (25%)
  memory             128Mi (3%)  128Mi (3%)
  ephemeral-storage  0 (0%)      0 (0%)
  hugepages-2Mi      0 (0%)      0 (0%)
Events:              <none>
"
            ),
            "{text}"
        );
    }

    #[test]
    fn sums_keep_the_form_of_their_first_term() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"memory": "100M", "cpu": "1500m"}}},
            {"resources": {"requests": {"memory": "64Mi"}}}],
            "overhead": {"cpu": "250m"}}});
        let (r, l) = pod_requests_and_limits(&pod);
        assert_eq!(r["memory"].text("memory"), "167108864");
        assert_eq!(r["cpu"].text("cpu"), "1750m");
        assert!(l.is_empty());
        let bare = describe(&json!({"metadata": {"name": "n"}}), &[], &[]);
        assert!(bare.contains("Roles:              <none>\n"), "{bare}");
        assert!(bare.contains("Taints:             <none>\n"), "{bare}");
        assert!(bare.contains("Non-terminated Pods:          (0 in total)\n"), "{bare}");
    }
}
