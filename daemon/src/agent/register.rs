//! Registration: this node's own `Node` object, as kubelet keeps it — created at start, then its
//! reported status (capacity, allocatable, addresses, system info, the `Ready` condition) written
//! only when something reported changed. No periodic heartbeat writes: liveness is gossip's.
//!
//! What the node reports is built from [`Facts`] by pure functions ([`new_node`],
//! [`status_update`], [`spec_update`]); [`run`] gathers the facts and writes through the
//! proposer: a `Create` the first time, `UpdateStatus` for status, and an `Update` only to add
//! standard labels or the pod CIDR that are missing. Labels, taints and `unschedulable` set by
//! users are never changed here.
//!
//! Allocatable is capacity minus what kubelet subtracts by default: its hard eviction
//! thresholds (`memory.available<100Mi`, `nodefs.available<10%`) and the memory held by huge
//! pages; cpu and pods are allocatable in full (no `kube-reserved`/`system-reserved`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::facts::{self, Facts};
use super::Context;
use crate::events::EventType;
use crate::objects::{self, meta, quantity, resource};
use crate::store::{Command, Rejection, StoreError};

/// Pods a node takes, as kubelet's default `maxPods`.
pub const MAX_PODS: u64 = 110;
/// Memory kept free by kubelet's default hard eviction threshold.
const MEMORY_RESERVE: u64 = 100 << 20;
/// The share of the node filesystem kept free by kubelet's default `nodefs.available<10%`
/// (a Go `float32`, so the arithmetic matches kubelet's to the byte).
const NODEFS_RESERVE: f32 = 0.1;
/// How often the facts are read again.
const RECHECK: Duration = Duration::from_secs(60);
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// What a node says about itself that does not come from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    /// The pod CIDR this node's pods get addresses from.
    pub pod_cidr: Option<String>,
    /// The port the node serves on (the cluster port), as `daemonEndpoints.kubeletEndpoint`.
    pub port: u16,
    /// Reported as `kubeletVersion`.
    pub version: String,
    /// Servers carry the `control-plane` role (today every node is one).
    pub server: bool,
}

/// The labels kubelet puts on its node (hostname, OS and architecture, with the beta twins).
pub fn standard_labels(identity: &Identity) -> Vec<(&'static str, String)> {
    let arch = facts::go_arch(std::env::consts::ARCH).to_string();
    vec![
        ("beta.kubernetes.io/arch", arch.clone()),
        ("beta.kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", arch),
        ("kubernetes.io/hostname", identity.name.clone()),
        ("kubernetes.io/os", "linux".into()),
    ]
}

/// The status fields the node owns: capacity, allocatable, addresses, system info, endpoints.
pub fn reported(identity: &Identity, facts: &Facts) -> Map<String, Value> {
    let bytes = |v: u64| quantity::format_units(v, true);
    let huge_total: u64 = facts.hugepages.iter().map(|(_, b)| b).sum();
    let nodefs_reserve = (facts.ephemeral_bytes as f64 * f64::from(NODEFS_RESERVE)) as u64;
    let mut capacity = Map::new();
    let mut allocatable = Map::new();
    capacity.insert("cpu".into(), json!(facts.cpus.to_string()));
    allocatable.insert("cpu".into(), json!(facts.cpus.to_string()));
    capacity.insert("ephemeral-storage".into(), json!(bytes(facts.ephemeral_bytes)));
    allocatable.insert("ephemeral-storage".into(), json!(bytes(facts.ephemeral_bytes.saturating_sub(nodefs_reserve))));
    for (size, total) in &facts.hugepages {
        capacity.insert(format!("hugepages-{size}"), json!(bytes(*total)));
        allocatable.insert(format!("hugepages-{size}"), json!(bytes(*total)));
    }
    capacity.insert("memory".into(), json!(bytes(facts.memory_bytes)));
    let memory = facts.memory_bytes.saturating_sub(MEMORY_RESERVE).saturating_sub(huge_total);
    allocatable.insert("memory".into(), json!(bytes(memory)));
    capacity.insert("pods".into(), json!(MAX_PODS.to_string()));
    allocatable.insert("pods".into(), json!(MAX_PODS.to_string()));
    let mut out = Map::new();
    out.insert("capacity".into(), Value::Object(capacity));
    out.insert("allocatable".into(), Value::Object(allocatable));
    out.insert(
        "addresses".into(),
        json!([{"type": "InternalIP", "address": identity.ip.to_string()}, {"type": "Hostname", "address": identity.name}]),
    );
    out.insert("daemonEndpoints".into(), json!({"kubeletEndpoint": {"Port": identity.port}}));
    out.insert(
        "nodeInfo".into(),
        json!({
            "machineID": facts.machine_id,
            "systemUUID": facts.system_uuid,
            "bootID": facts.boot_id,
            "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": facts.runtime_version.clone().unwrap_or_default(),
            "kubeletVersion": identity.version,
            "operatingSystem": "linux",
            "architecture": facts::go_arch(std::env::consts::ARCH),
        }),
    );
    out
}

/// kubelet's `Ready` condition of a healthy node.
fn ready(now: &str) -> Value {
    json!({"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
        "reason": "KubeletReady", "message": "kubelet is posting ready status"})
}

/// The Node this node registers with the first time.
pub fn new_node(identity: &Identity, facts: &Facts, now: &str) -> Value {
    let mut labels: Map<String, Value> =
        standard_labels(identity).into_iter().map(|(k, v)| (k.into(), json!(v))).collect();
    if identity.server {
        labels.insert(format!("{}control-plane", objects::node::ROLE_PREFIX), json!(""));
    }
    let mut status = reported(identity, facts);
    status.insert("conditions".into(), json!([ready(now)]));
    let mut spec = json!({});
    if let Some(cidr) = &identity.pod_cidr {
        spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": identity.name, "labels": labels},
        "spec": spec,
        "status": status,
    })
}

/// The status to write when something reported differs from `current`'s (the rest of its
/// status, such as conditions others write, is kept); `None` when nothing changed. A runtime
/// whose version could not be read keeps the version reported before.
pub fn status_update(current: &Value, identity: &Identity, facts: &Facts, now: &str) -> Option<Value> {
    let before = current.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = if before.is_object() { before.clone() } else { json!({}) };
    for (k, v) in reported(identity, facts) {
        status[k] = v;
    }
    if facts.runtime_version.is_none() {
        if let Some(known) = before.pointer("/nodeInfo/containerRuntimeVersion") {
            status["nodeInfo"]["containerRuntimeVersion"] = known.clone();
        }
    }
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let healthy =
        conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True" && c["reason"] == "KubeletReady");
    if !healthy {
        conditions.retain(|c| c["type"] != "Ready");
        conditions.push(ready(now));
        status["conditions"] = json!(conditions);
    }
    if status == before {
        return None;
    }
    for c in status["conditions"].as_array_mut().into_iter().flatten().filter(|c| c["type"] == "Ready") {
        c["lastHeartbeatTime"] = json!(now);
    }
    Some(status)
}

/// `current` with the standard labels and the pod CIDR it lacks; `None` when it lacks none.
/// Present values are never changed, whoever set them.
pub fn spec_update(current: &Value, identity: &Identity) -> Option<Value> {
    let mut node = current.clone();
    let labels = meta::labels(current);
    let missing: Vec<(&str, String)> =
        standard_labels(identity).into_iter().filter(|(k, _)| !labels.contains_key(*k)).collect();
    let no_cidr = current.pointer("/spec/podCIDR").and_then(Value::as_str).is_none_or(str::is_empty);
    let add_cidr = identity.pod_cidr.as_ref().filter(|_| no_cidr);
    if missing.is_empty() && add_cidr.is_none() {
        return None;
    }
    if !missing.is_empty() {
        let m = meta::metadata_mut(&mut node);
        if !m.get("labels").is_some_and(Value::is_object) {
            m.insert("labels".into(), json!({}));
        }
        for (k, v) in missing {
            m["labels"][k] = json!(v);
        }
    }
    if let Some(cidr) = add_cidr {
        if !node.get("spec").is_some_and(Value::is_object) {
            node["spec"] = json!({});
        }
        node["spec"]["podCIDR"] = json!(cidr);
        node["spec"]["podCIDRs"] = json!([cidr]);
    }
    Some(node)
}

/// Whether the Ready condition of a status is True.
fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Keeps this node's Node registered and its reported status current until `shutdown`.
pub async fn run(ctx: Arc<Context>, identity: Identity, shutdown: CancellationToken) {
    let key = resource::NODES.key();
    let mut watcher = match ctx.store.watch(ctx.store.revision().await.unwrap_or(0)).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "node registration cannot watch the store");
            return;
        }
    };
    let mut facts = facts::gather(ctx.runtime.as_ref(), &ctx.data_dir).await;
    let mut gathered = tokio::time::Instant::now();
    let mut unschedulable: Option<bool> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            event = watcher.next() => match event {
                Ok(ev) if ev.resource == key && meta::name(&ev.object) == identity.name => {}
                Ok(_) => continue,
                Err(_) => {
                    if let Ok(w) = ctx.store.watch(ctx.store.revision().await.unwrap_or(0)).await {
                        watcher = w;
                    }
                }
            },
        }
        if gathered.elapsed() >= RECHECK {
            facts = facts::gather(ctx.runtime.as_ref(), &ctx.data_dir).await;
            gathered = tokio::time::Instant::now();
        }
        next = tokio::time::Instant::now() + RECHECK;
        match reconcile(&ctx, &identity, &facts).await {
            Ok(node) => {
                let now = objects::node::is_unschedulable(&node);
                if unschedulable.is_some_and(|before| before != now) {
                    let (reason, word) = if now {
                        ("NodeNotSchedulable", "NodeNotSchedulable")
                    } else {
                        ("NodeSchedulable", "NodeSchedulable")
                    };
                    let message = format!("Node {} status is now: {word}", identity.name);
                    ctx.recorder.record(&node, EventType::Normal, reason, &message).await;
                }
                unschedulable = Some(now);
            }
            Err(e) => {
                tracing::warn!(error = %e, node = identity.name, "could not register this node; will retry");
                next = tokio::time::Instant::now() + RETRY;
            }
        }
    }
}

/// Creates the Node, or brings what it reports up to date. Returns the Node as stored.
async fn reconcile(ctx: &Context, identity: &Identity, facts: &Facts) -> Result<Value, StoreError> {
    let key = resource::NODES.key();
    let Some(mut current) = ctx.store.get(&key, "", &identity.name).await? else {
        return create(ctx, identity, facts).await;
    };
    if let Some(node) = spec_update(&current, identity) {
        current = ctx.proposer.propose(Command::Update { resource: key.clone(), object: node }).await?.object;
    }
    let now = meta::now();
    if let Some(status) = status_update(&current, identity, facts, &now) {
        let was_ready = is_ready(&current);
        let command = Command::UpdateStatus {
            resource: key,
            namespace: String::new(),
            name: identity.name.clone(),
            uid: Some(meta::uid(&current).to_string()),
            resource_version: Some(meta::resource_version(&current).to_string()),
            status,
        };
        current = ctx.proposer.propose(command).await?.object;
        if !was_ready {
            node_ready(ctx, &current).await;
        }
    }
    Ok(current)
}

async fn create(ctx: &Context, identity: &Identity, facts: &Facts) -> Result<Value, StoreError> {
    let mut identity = identity.clone();
    loop {
        let admitted = objects::admit(&resource::NODES, new_node(&identity, facts, &meta::now()))
            .map_err(|e| StoreError::Task(format!("this node's own Node is invalid: {e}")))?;
        let mut node = admitted.object;
        meta::set(&mut node, "uid", uuid::Uuid::new_v4().to_string());
        meta::set(&mut node, "creationTimestamp", meta::now());
        match ctx.proposer.propose(Command::Create { resource: resource::NODES.key(), object: node }).await {
            Ok(applied) => {
                tracing::info!(node = identity.name, "registered this node");
                node_ready(ctx, &applied.object).await;
                return Ok(applied.object);
            }
            // Another node holds this pod CIDR: register without it rather than not at all.
            Err(StoreError::Rejected(Rejection::Invalid { field, reason, .. }))
                if field == "spec.podCIDR" && identity.pod_cidr.is_some() =>
            {
                tracing::error!(
                    node = identity.name,
                    cidr = identity.pod_cidr,
                    reason,
                    "this node's pod CIDR is taken; registering without it"
                );
                identity.pod_cidr = None;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn node_ready(ctx: &Context, node: &Value) {
    let message = format!("Node {} status is now: NodeReady", meta::name(node));
    ctx.recorder.record(node, EventType::Normal, "NodeReady", &message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            name: "edge-1".into(),
            ip: "10.250.0.2".parse().unwrap(),
            pod_cidr: Some("10.42.0.0/24".into()),
            port: 6443,
            version: "v0.1.0".into(),
            server: true,
        }
    }

    fn facts() -> Facts {
        Facts {
            cpus: 2,
            memory_bytes: 4015520 * 1024,
            hugepages: vec![("2Mi".into(), 4 << 20), ("1Gi".into(), 0)],
            ephemeral_bytes: 20134592 * 1024,
            kernel_version: "6.1.0-18-amd64".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "m1".into(),
            system_uuid: "s1".into(),
            boot_id: "b1".into(),
            runtime_version: Some("containerd://1.6.20".into()),
        }
    }

    #[test]
    fn a_new_node_reports_like_kubelet() {
        let n = new_node(&identity(), &facts(), "2026-01-01T00:00:00Z");
        let arch = facts::go_arch(std::env::consts::ARCH);
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "edge-1");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(n["metadata"]["labels"]["beta.kubernetes.io/arch"], arch);
        assert_eq!(n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"], "");
        assert_eq!(n["spec"], json!({"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}));
        let s = &n["status"];
        assert_eq!(
            s["capacity"],
            json!({"cpu": "2", "ephemeral-storage": "20134592Ki", "hugepages-2Mi": "4Mi", "hugepages-1Gi": "0", "memory": "4015520Ki", "pods": "110"})
        );
        // kubelet's defaults: 100Mi and the huge pages off memory, 10% (a float32) off the disk.
        assert_eq!(
            s["allocatable"],
            json!({"cpu": "2", "ephemeral-storage": "18556039957", "hugepages-2Mi": "4Mi", "hugepages-1Gi": "0", "memory": "3909024Ki", "pods": "110"})
        );
        assert_eq!(
            s["addresses"],
            json!([{"type": "InternalIP", "address": "10.250.0.2"}, {"type": "Hostname", "address": "edge-1"}])
        );
        assert_eq!(s["daemonEndpoints"], json!({"kubeletEndpoint": {"Port": 6443}}));
        assert_eq!(s["nodeInfo"]["containerRuntimeVersion"], "containerd://1.6.20");
        assert_eq!(s["nodeInfo"]["kubeletVersion"], "v0.1.0");
        assert_eq!(
            (s["nodeInfo"]["operatingSystem"].as_str(), s["nodeInfo"]["architecture"].as_str()),
            (Some("linux"), Some(arch))
        );
        assert_eq!(s["conditions"][0]["reason"], "KubeletReady");
        assert_eq!(s["conditions"][0]["message"], "kubelet is posting ready status");
        let admitted = objects::admit(&resource::NODES, n).unwrap();
        assert!(admitted.warnings.is_empty(), "{:?}", admitted.warnings);
        let agent = Identity { server: false, pod_cidr: None, ..identity() };
        let n = new_node(&agent, &facts(), "t");
        assert!(objects::node::roles(&n).is_empty());
        assert_eq!(n["spec"], json!({}));
    }

    #[test]
    fn status_is_written_only_when_something_reported_changed() {
        let node = new_node(&identity(), &facts(), "t0");
        assert_eq!(status_update(&node, &identity(), &facts(), "t1"), None, "nothing changed: no heartbeat write");
        let mut other = facts();
        other.runtime_version = Some("containerd://1.7.0".into());
        let status = status_update(&node, &identity(), &other, "t1").unwrap();
        assert_eq!(status["nodeInfo"]["containerRuntimeVersion"], "containerd://1.7.0");
        let ready = &status["conditions"][0];
        assert_eq!(
            (ready["lastHeartbeatTime"].as_str(), ready["lastTransitionTime"].as_str()),
            (Some("t1"), Some("t0"))
        );
        // An unreachable runtime keeps the version reported before.
        other.runtime_version = None;
        assert_eq!(status_update(&node, &identity(), &other, "t2"), None);
        // Conditions written by others stay; a Ready that is not kubelet's becomes it again.
        let mut seen = node.clone();
        seen["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}, {"type": "NetworkUnavailable", "status": "False"}]);
        let status = status_update(&seen, &identity(), &facts(), "t3").unwrap();
        assert_eq!(status["conditions"][0]["type"], "NetworkUnavailable");
        assert_eq!(
            (status["conditions"][1]["status"].as_str(), status["conditions"][1]["lastTransitionTime"].as_str()),
            (Some("True"), Some("t3"))
        );
    }

    #[test]
    fn registration_never_overwrites_what_users_set() {
        let mut node = new_node(&identity(), &facts(), "t0");
        assert_eq!(spec_update(&node, &identity()), None);
        node["metadata"]["labels"]["kubernetes.io/hostname"] = json!("renamed");
        node["metadata"]["labels"].as_object_mut().unwrap().remove("kubernetes.io/os");
        node["metadata"]["labels"].as_object_mut().unwrap().remove("node-role.kubernetes.io/control-plane");
        node["metadata"]["labels"]["team"] = json!("edge");
        node["spec"] = json!({"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]});
        let updated = spec_update(&node, &identity()).unwrap();
        let labels = &updated["metadata"]["labels"];
        assert_eq!(
            (labels["kubernetes.io/hostname"].as_str(), labels["kubernetes.io/os"].as_str()),
            (Some("renamed"), Some("linux"))
        );
        assert_eq!(labels["team"], "edge");
        assert!(labels.get("node-role.kubernetes.io/control-plane").is_none(), "roles are set at registration only");
        assert_eq!(updated["spec"]["unschedulable"], true);
        assert_eq!(updated["spec"]["taints"][0]["key"], "k");
        assert_eq!(updated["spec"]["podCIDR"], "10.42.0.0/24");
        let status = status_update(&node, &identity(), &facts(), "t1");
        assert!(status.is_none(), "labels and spec are not status");
    }
}
