//! What a pod asks of a node — requests, host ports, selectors, tolerations, owner, claims —
//! read from its JSON once per placement, so filters and scores never parse JSON per node.

use std::collections::BTreeMap;

use serde_json::Value;

use super::matching::{NodeSelector, Taint, Term, Toleration};
use crate::objects::{meta, quantity};

/// The CPU kube-scheduler assumes for a container without a CPU request when it *scores*
/// (`schedutil.DefaultMilliCPURequest`); filtering uses the real request.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory assumed likewise (`schedutil.DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Resource amounts: CPU in millicores, the rest in whole units (bytes, devices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Requests {
    pub cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
    /// Extended resources, hugepages and the like (`nvidia.com/gpu`), by name.
    pub scalars: BTreeMap<String, i64>,
}

fn quantity_of(v: &Value, cpu: bool) -> i64 {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return 0,
    };
    let parsed = if cpu { quantity::parse_cpu_millis(&text) } else { quantity::parse_bytes(&text) };
    // Admission validated the pod; an unreadable quantity counts as nothing.
    parsed.map(|q| i64::try_from(q).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl Requests {
    /// A `ResourceList` (`requests`, `allocatable`, `overhead`). `pods` is not a request and
    /// is read separately for nodes.
    pub(crate) fn parse(list: &Value) -> Requests {
        let mut r = Requests::default();
        for (name, q) in list.as_object().into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.cpu = quantity_of(q, true),
                "memory" => r.memory = quantity_of(q, false),
                "ephemeral-storage" => r.ephemeral = quantity_of(q, false),
                "pods" => {}
                other => {
                    r.scalars.insert(other.to_string(), quantity_of(q, false));
                }
            }
        }
        r
    }

    pub(crate) fn add(&mut self, other: &Requests) {
        self.cpu = self.cpu.saturating_add(other.cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral = self.ephemeral.saturating_add(other.ephemeral);
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    fn max(&mut self, other: &Requests) {
        self.cpu = self.cpu.max(other.cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral = self.ephemeral.max(other.ephemeral);
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub(crate) fn scalar(&self, name: &str) -> i64 {
        self.scalars.get(name).copied().unwrap_or(0)
    }
}

/// A container's requests; with `defaults`, a missing CPU or memory request counts as
/// [`DEFAULT_MILLI_CPU_REQUEST`] / [`DEFAULT_MEMORY_REQUEST`] (`NonMissingContainerRequests`).
fn container_requests(c: &Value, defaults: bool) -> Requests {
    let list = c.pointer("/resources/requests").unwrap_or(&Value::Null);
    let mut r = Requests::parse(list);
    if defaults {
        if list.get("cpu").is_none() {
            r.cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if list.get("memory").is_none() {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn is_sidecar(c: &Value) -> bool {
    c["restartPolicy"] == "Always"
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The pod's effective request, as `resource.PodRequests` computes it: the sum of the
/// containers and the restartable init containers (sidecars), or the largest init phase if
/// bigger — an init container runs beside the sidecars started before it, alone otherwise —
/// then pod-level `spec.resources.requests` (cpu, memory) in place of the aggregate, plus
/// `spec.overhead`.
pub(crate) fn pod_requests(pod: &Value, defaults: bool) -> Requests {
    let mut total = Requests::default();
    for c in list(pod, "/spec/containers") {
        total.add(&container_requests(c, defaults));
    }
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for c in list(pod, "/spec/initContainers") {
        let own = container_requests(c, defaults);
        let phase = if is_sidecar(c) {
            total.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut phase = own;
            phase.add(&sidecars);
            phase
        };
        init_peak.max(&phase);
    }
    total.max(&init_peak);
    if let Some(pod_level) = pod.pointer("/spec/resources/requests").filter(|v| v.is_object()) {
        let level = Requests::parse(pod_level);
        if pod_level.get("cpu").is_some() {
            total.cpu = level.cpu;
        }
        if pod_level.get("memory").is_some() {
            total.memory = level.memory;
        }
    }
    if let Some(overhead) = pod.pointer("/spec/overhead") {
        total.add(&Requests::parse(overhead));
    }
    total
}

/// A host port a pod binds: (protocol, host IP, port), with kubelet's defaults (TCP, 0.0.0.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i64,
}

/// The address that means "every address" (`DefaultBindAllHostIP`).
pub const ALL_ADDRESSES: &str = "0.0.0.0";

impl HostPort {
    /// `HostPortInfo.CheckConflict`: the same protocol and port, and the same address or
    /// 0.0.0.0 on either side.
    pub(crate) fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ALL_ADDRESSES || other.ip == ALL_ADDRESSES)
    }
}

/// The host ports of the containers and sidecars (the ones that keep running).
pub(crate) fn host_ports(pod: &Value) -> Vec<HostPort> {
    let sidecars = list(pod, "/spec/initContainers").iter().filter(|c| is_sidecar(c));
    list(pod, "/spec/containers")
        .iter()
        .chain(sidecars)
        .flat_map(|c| list(c, "/ports"))
        .filter_map(|p| {
            let port = p["hostPort"].as_i64().filter(|h| *h > 0)?;
            let ip = p["hostIP"].as_str().filter(|h| !h.is_empty()).unwrap_or(ALL_ADDRESSES).to_string();
            let protocol = p["protocol"].as_str().filter(|h| !h.is_empty()).unwrap_or("TCP").to_string();
            Some(HostPort { protocol, ip, port })
        })
        .collect()
}

/// The controller owner's UID: replicas of one owner are spread over nodes.
pub(crate) fn owner(pod: &Value) -> Option<String> {
    meta::controller_of(pod).and_then(|r| r["uid"].as_str()).filter(|u| !u.is_empty()).map(String::from)
}

/// What occupies a node once a pod is there.
#[derive(Debug, Clone, Default)]
pub(crate) struct Footprint {
    pub requests: Requests,
    /// CPU and memory with the scoring defaults, as `NodeInfo.NonZeroRequested` counts them.
    pub non_zero: (i64, i64),
    pub ports: Vec<HostPort>,
    pub owner: Option<String>,
}

impl Footprint {
    pub(crate) fn of(pod: &Value) -> Footprint {
        let nz = pod_requests(pod, true);
        Footprint {
            requests: pod_requests(pod, false),
            non_zero: (nz.cpu, nz.memory),
            ports: host_ports(pod),
            owner: owner(pod),
        }
    }
}

/// A pod about to be placed.
#[derive(Debug, Clone)]
pub(crate) struct PodInfo {
    pub namespace: String,
    pub footprint: Footprint,
    /// `spec.nodeSelector`: every pair must be a label of the node.
    pub node_selector: Vec<(String, String)>,
    /// `requiredDuringSchedulingIgnoredDuringExecution`.
    pub required: Option<NodeSelector>,
    /// `preferredDuringSchedulingIgnoredDuringExecution`: (weight, term); weight-0 terms dropped.
    pub preferred: Vec<(i64, Term)>,
    pub tolerations: Vec<Toleration>,
    /// Tolerations that count for PreferNoSchedule taints (no effect, or that effect).
    pub prefer_tolerations: Vec<Toleration>,
    /// Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule` (a cordon).
    pub tolerates_cordon: bool,
    /// The `persistentVolumeClaim.claimName`s of `spec.volumes`, in order.
    pub claims: Vec<String>,
}

/// The taint a cordoned node is treated as having (`v1.TaintNodeUnschedulable`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

impl PodInfo {
    pub(crate) fn new(pod: &Value) -> PodInfo {
        let spec = &pod["spec"];
        let node_selector = spec["nodeSelector"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        let affinity = &spec["affinity"]["nodeAffinity"];
        let required = affinity
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .filter(|v| v.is_object())
            .map(NodeSelector::parse);
        let preferred = list(affinity, "/preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .filter_map(|p| Some((p["weight"].as_i64().filter(|w| *w != 0)?, Term::parse(&p["preference"]))))
            .collect();
        let tolerations: Vec<Toleration> = list(pod, "/spec/tolerations").iter().map(Toleration::parse).collect();
        let prefer_tolerations = tolerations.iter().filter(|t| t.for_prefer_no_schedule()).cloned().collect();
        let cordon = Taint::parse(&serde_json::json!({"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}));
        let tolerates_cordon = tolerations.iter().any(|t| t.tolerates(&cordon));
        let claims = list(pod, "/spec/volumes")
            .iter()
            .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str().map(String::from))
            .collect();
        PodInfo {
            namespace: meta::namespace(pod).to_string(),
            footprint: Footprint::of(pod),
            node_selector,
            required,
            preferred,
            tolerations,
            prefer_tolerations,
            tolerates_cordon,
            claims,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(cpu: Option<&str>, mem: Option<&str>) -> Value {
        let mut req = serde_json::Map::new();
        if let Some(cpu) = cpu {
            req.insert("cpu".into(), json!(cpu));
        }
        if let Some(mem) = mem {
            req.insert("memory".into(), json!(mem));
        }
        json!({"name": "c", "resources": {"requests": req}})
    }

    #[test]
    fn effective_requests_as_kubernetes() {
        // Containers add up; a plain init container counts only if bigger.
        let pod = json!({"spec": {"containers": [c(Some("100m"), Some("64Mi")), c(Some("200m"), None)],
            "initContainers": [c(Some("500m"), Some("32Mi"))]}});
        let r = pod_requests(&pod, false);
        assert_eq!((r.cpu, r.memory), (500, 64 << 20));
        // Scoring defaults fill in what a container does not request.
        let nz = pod_requests(&pod, true);
        assert_eq!((nz.cpu, nz.memory), (500, (64 << 20) + DEFAULT_MEMORY_REQUEST));
        // A sidecar adds to the containers and runs beside later init containers.
        let mut sidecar = c(Some("300m"), Some("100Mi"));
        sidecar["restartPolicy"] = json!("Always");
        let pod = json!({"spec": {"containers": [c(Some("100m"), Some("100Mi"))],
            "initContainers": [sidecar, c(Some("350m"), Some("10Mi"))]}});
        let r = pod_requests(&pod, false);
        assert_eq!((r.cpu, r.memory), (650, 200 << 20));
        // Pod-level requests replace the aggregate; overhead is added; numbers and extended
        // resources are read.
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": 2, "nvidia.com/gpu": "1", "ephemeral-storage": "1Gi"}}}],
            "resources": {"requests": {"cpu": "3"}}, "overhead": {"cpu": "250m", "memory": "120Mi"}}});
        let r = pod_requests(&pod, false);
        assert_eq!((r.cpu, r.memory, r.ephemeral, r.scalar("nvidia.com/gpu")), (3250, 120 << 20, 1 << 30, 1));
    }

    #[test]
    fn host_ports_with_defaults() {
        let mut sidecar = json!({"name": "s", "restartPolicy": "Always", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]});
        let pod = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}],
            "initContainers": [sidecar.clone(), {"name": "i", "ports": [{"containerPort": 1, "hostPort": 1}]}]}});
        let ports = host_ports(&pod);
        assert_eq!(
            ports,
            vec![
                HostPort { protocol: "TCP".into(), ip: "0.0.0.0".into(), port: 8080 },
                HostPort { protocol: "UDP".into(), ip: "0.0.0.0".into(), port: 53 },
            ]
        );
        sidecar["restartPolicy"] = json!("OnFailure");
        assert!(!is_sidecar(&sidecar));
    }
}
