//! Pod defaulting and validation, with Kubernetes' defaults and field paths.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};

use super::validation::dns1123_label;
use super::Cause;

/// Fills the defaults the Kubernetes API server fills.
pub fn default(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(c);
    }
    super::volume::default(spec);
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase.get_or_insert_with(|| "Pending".into());
    // Computed, never taken from the client, as the API server does.
    status.qos_class = Some(qos_class(spec).into());
}

/// The API server's defaulting: a resource with a limit and no request requests its limit.
fn default_requests(c: &mut Container) {
    let Some(resources) = c.resources.as_mut() else { return };
    let Some(limits) = resources.limits.as_ref() else { return };
    let requests = resources.requests.get_or_insert_with(Default::default);
    for (name, q) in limits {
        requests.entry(name.clone()).or_insert_with(|| q.clone());
    }
}

/// A resource quantity in the unit it is compared in: millicores for `cpu`, whole units
/// (bytes) for everything else.
fn resource_value(name: &str, q: &str) -> Result<u64, String> {
    if name == "cpu" {
        super::quantity::parse_cpu_millis(q)
    } else {
        super::quantity::parse_bytes(q)
    }
}

/// kubelet's and the API server's QoS class (`ComputePodQOS`), from the (defaulted) requests
/// and limits of every container and init container, counting `cpu` and `memory` only:
/// nothing set anywhere is `BestEffort`; every container limiting both with the pod's summed
/// requests equal to its summed limits is `Guaranteed`; anything else `Burstable`.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    use std::collections::BTreeMap;
    let (mut requests, mut limits) = (BTreeMap::<&str, u64>::new(), BTreeMap::<&str, u64>::new());
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let r = c.resources.as_ref();
        let add = |list: Option<
            &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
                   into: &mut BTreeMap<&str, u64>| {
            let mut found = Vec::new();
            for name in ["cpu", "memory"] {
                let value = list.and_then(|l| l.get(name)).and_then(|q| resource_value(name, &q.0).ok()).unwrap_or(0);
                if value > 0 {
                    *into.entry(name).or_default() += value;
                    found.push(name);
                }
            }
            found
        };
        add(r.and_then(|r| r.requests.as_ref()), &mut requests);
        if add(r.and_then(|r| r.limits.as_ref()), &mut limits).len() < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.len() == limits.len() && requests.iter().all(|(name, r)| limits.get(name) == Some(r)) {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The API server's `ValidateResourceRequirements`: standard names, quantities that parse
/// and are not negative, requests at most their limits (equal for resources that cannot be
/// overcommitted: huge pages and extended resources).
fn validate_resources(c: &Container, path: &str, causes: &mut Vec<Cause>) {
    let Some(r) = &c.resources else { return };
    let empty = Default::default();
    let limits = r.limits.as_ref().unwrap_or(&empty);
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let check = |list: &str, name: &str, q: &str, causes: &mut Vec<Cause>| -> Option<u64> {
        let at = format!("{path}.resources.{list}[{name}]");
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
        if !standard && !name.contains('/') {
            causes.push(Cause::invalid(at.clone(), name, "must be a standard resource for containers".into()));
        }
        match resource_value(name, q) {
            Ok(v) => Some(v),
            Err(_) if q.starts_with('-') && resource_value(name, &q[1..]).is_ok() => {
                causes.push(Cause::invalid(at, q, "must be greater than or equal to 0".into()));
                None
            }
            Err(e) => {
                causes.push(Cause::invalid(at, q, e));
                None
            }
        }
    };
    let limit_values: std::collections::BTreeMap<&str, Option<u64>> =
        limits.iter().map(|(n, q)| (n.as_str(), check("limits", n, &q.0, causes))).collect();
    for (name, q) in requests {
        let request = check("requests", name, &q.0, causes);
        let (Some(request), Some(Some(limit))) = (request, limit_values.get(name.as_str())) else { continue };
        let limit_text = &limits[name].0;
        let overcommit = !name.contains('/') && !name.starts_with("hugepages-");
        if !overcommit && request != *limit {
            causes.push(Cause::invalid(
                format!("{path}.resources.requests"),
                &q.0,
                format!("must be equal to {name} limit of {limit_text}"),
            ));
        } else if request > *limit {
            causes.push(Cause::invalid(
                format!("{path}.resources.requests"),
                &q.0,
                format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    c.resources.get_or_insert_with(Default::default);
    default_requests(c);
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
        default_probe(probe);
    }
}

/// The API server's probe defaults (`initialDelaySeconds` stays absent: zero is omitted).
fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(http) = &mut p.http_get {
        http.path.get_or_insert_with(|| "/".into());
        http.scheme.get_or_insert_with(|| "HTTP".into());
    }
}

/// The API server's probe rules: one handler, counts not negative, a success threshold of 1
/// for liveness and startup probes.
fn validate_probes(c: &Container, path: &str, causes: &mut Vec<Cause>) {
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (field, probe) in probes {
        let Some(p) = probe else { continue };
        let at = format!("{path}.{field}");
        let handlers = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some(), p.grpc.is_some()]
            .iter()
            .filter(|h| **h)
            .count();
        if handlers == 0 {
            causes.push(Cause::new(at.clone(), "Required value: must specify a handler type".into()));
        } else if handlers > 1 {
            causes.push(Cause::new(at.clone(), "Forbidden: may not specify more than 1 handler type".into()));
        }
        let counts = [
            ("initialDelaySeconds", p.initial_delay_seconds),
            ("timeoutSeconds", p.timeout_seconds),
            ("periodSeconds", p.period_seconds),
            ("successThreshold", p.success_threshold),
            ("failureThreshold", p.failure_threshold),
        ];
        for (name, value) in counts {
            if let Some(v) = value.filter(|v| *v < 0) {
                causes.push(Cause::invalid(
                    format!("{at}.{name}"),
                    &v.to_string(),
                    "must be greater than or equal to 0".into(),
                ));
            }
        }
        if field != "readinessProbe" {
            if let Some(v) = p.success_threshold.filter(|v| *v > 1) {
                causes.push(Cause::invalid(format!("{at}.successThreshold"), &v.to_string(), "must be 1".into()));
            }
        }
    }
}

/// Kubernetes' rule: `:latest` or no tag pulls Always, anything else IfNotPresent.
pub fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

pub fn validate(pod: &Pod) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = &pod.spec else {
        return vec![Cause::required("spec")];
    };
    let volumes = super::volume::validate_volumes(spec, &mut causes);
    if spec.containers.is_empty() {
        causes.push(Cause::required("spec.containers"));
    }
    let mut seen = std::collections::HashSet::new();
    let all = spec.containers.iter().map(|c| ("containers", c));
    let init = spec.init_containers.iter().flatten().map(|c| ("initContainers", c));
    let mut index = std::collections::HashMap::<&str, usize>::new();
    for (list, c) in all.chain(init) {
        let i = index.entry(list).or_default();
        let path = format!("spec.{list}[{i}]");
        *i += 1;
        if let Err(e) = dns1123_label(&c.name) {
            causes.push(Cause::invalid(format!("{path}.name"), &c.name, e));
        } else if !seen.insert(c.name.clone()) {
            causes.push(Cause::new(format!("{path}.name"), format!("Duplicate value: {:?}", c.name)));
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            causes.push(Cause::required(format!("{path}.image")));
        }
        if let Some(p) = c.image_pull_policy.as_deref() {
            if !matches!(p, "Always" | "IfNotPresent" | "Never") {
                causes.push(Cause::unsupported(
                    format!("{path}.imagePullPolicy"),
                    p,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
        for (j, port) in c.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&port.container_port) {
                causes.push(Cause::invalid(
                    format!("{path}.ports[{j}].containerPort"),
                    &port.container_port.to_string(),
                    "must be between 1 and 65535, inclusive".into(),
                ));
            }
            if let Some(hp) = port.host_port {
                if !(0..=65535).contains(&hp) {
                    causes.push(Cause::invalid(
                        format!("{path}.ports[{j}].hostPort"),
                        &hp.to_string(),
                        "must be between 1 and 65535, inclusive".into(),
                    ));
                }
            }
            if let Some(proto) = port.protocol.as_deref() {
                if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                    causes.push(Cause::unsupported(
                        format!("{path}.ports[{j}].protocol"),
                        proto,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
        }
        validate_probes(c, &path, &mut causes);
        validate_resources(c, &path, &mut causes);
        for (j, env) in c.env.iter().flatten().enumerate() {
            if env.name.is_empty() {
                causes.push(Cause::required(format!("{path}.env[{j}].name")));
            }
        }
        super::volume::validate_mounts(c, &path, &volumes, &mut causes);
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !matches!(p, "Always" | "OnFailure" | "Never") {
            causes.push(Cause::unsupported("spec.restartPolicy", p, &["Always", "OnFailure", "Never"]));
        }
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        causes.push(Cause::invalid(
            "spec.terminationGracePeriodSeconds",
            "",
            "must be greater than or equal to 0".into(),
        ));
    }
    causes
}

/// Kubernetes lets a pod update change little: images and the grace period among few others.
/// Skerry allows metadata changes only; the spec is fixed once created.
pub fn validate_update(old: &Pod, new: &Pod) -> Vec<Cause> {
    if old.spec != new.spec {
        return vec![Cause::new(
            "spec",
            "Forbidden: pod updates may not change fields other than metadata; delete the pod and create it again \
             (or let a Deployment roll it)"
                .to_string(),
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}})).unwrap()
    }

    fn qos(containers: serde_json::Value) -> String {
        let mut p = pod(containers);
        assert!(validate(&p).is_empty(), "{:?}", validate(&p));
        default(&mut p);
        p.status.unwrap().qos_class.unwrap()
    }

    #[test]
    fn qos_classes_follow_kubelet() {
        use serde_json::json;
        assert_eq!(qos(json!([{"name": "a", "image": "i"}])), "BestEffort");
        assert_eq!(
            qos(json!([{"name": "a", "image": "i", "resources": {"limits": {"ephemeral-storage": "1Gi"}}}])),
            "BestEffort",
            "only cpu and memory count"
        );
        assert_eq!(
            qos(json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": "0"}}}])),
            "BestEffort",
            "zero counts as unset"
        );
        assert_eq!(
            qos(json!([{"name": "a", "image": "i", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}])),
            "Guaranteed",
            "requests default to limits"
        );
        assert_eq!(
            qos(
                json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "67108864"}}}])
            ),
            "Guaranteed",
            "equal in value, not in text"
        );
        assert_eq!(
            qos(json!([{"name": "a", "image": "i", "resources": {"limits": {"memory": "64Mi"}}}])),
            "Burstable",
            "no cpu limit"
        );
        assert_eq!(qos(json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m"}}}])), "Burstable");
        assert_eq!(
            qos(
                json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}])
            ),
            "Burstable",
            "request below limit"
        );
        assert_eq!(
            qos(json!([
                {"name": "a", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "b", "image": "i"}
            ])),
            "Burstable",
            "one container without limits"
        );
        assert_eq!(
            qos(json!([
                {"name": "a", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "b", "image": "i", "resources": {"limits": {"cpu": "2", "memory": "1Mi"}}}
            ])),
            "Guaranteed"
        );
        let mut p = pod(json!([{"name": "a", "image": "i"}]));
        p.status =
            Some(k8s_openapi::api::core::v1::PodStatus { qos_class: Some("Guaranteed".into()), ..Default::default() });
        default(&mut p);
        assert_eq!(p.status.unwrap().qos_class.as_deref(), Some("BestEffort"), "computed, not taken from the client");
    }

    #[test]
    fn requests_default_to_limits() {
        let mut p = pod(
            serde_json::json!([{"name": "a", "image": "i", "resources": {"requests": {"memory": "32Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}}]),
        );
        default(&mut p);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["requests"],
            serde_json::json!({"cpu": "1", "memory": "32Mi"})
        );
        let mut p = pod(serde_json::json!([{"name": "a", "image": "i"}]));
        default(&mut p);
        let v = serde_json::to_value(&p).unwrap();
        assert!(v["spec"]["containers"][0]["resources"].get("requests").is_none(), "no limits, no requests: {v}");
    }

    #[test]
    fn resource_rules() {
        let causes = |containers: serde_json::Value| -> Vec<String> {
            validate(&pod(containers)).iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
        };
        assert_eq!(
            causes(serde_json::json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": 2}, "limits": {"cpu": 1}}}])),
            ["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]
        );
        assert_eq!(
            causes(serde_json::json!([{"name": "a", "image": "i", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "64Mi"}}}])),
            ["spec.containers[0].resources.requests: Invalid value: \"128Mi\": must be less than or equal to memory limit of 64Mi"]
        );
        assert!(causes(serde_json::json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}])).is_empty());
        assert_eq!(
            causes(serde_json::json!([{"name": "a", "image": "i", "resources": {"limits": {"memory": "lots", "cpu": "-1", "gpu": "1"}}}])),
            [
                "spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
                "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": \"lots\" is not a quantity; write a number with an optional suffix, like 20Gi, 500M, 1.5, 500m or 1e3",
            ]
        );
        assert_eq!(
            causes(serde_json::json!([{"name": "a", "image": "i", "resources": {"requests": {"hugepages-2Mi": "2Mi"}, "limits": {"hugepages-2Mi": "4Mi"}}}])),
            ["spec.containers[0].resources.requests: Invalid value: \"2Mi\": must be equal to hugepages-2Mi limit of 4Mi"]
        );
        let init = serde_json::json!({"spec": {"containers": [{"name": "a", "image": "i"}],
            "initContainers": [{"name": "b", "image": "i", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}});
        let init: Vec<String> =
            validate(&serde_json::from_value(init).unwrap()).iter().map(|c| c.field.clone()).collect();
        assert_eq!(init, ["spec.initContainers[0].resources.requests"]);
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("127.0.0.1:5000/app"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/app:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("app@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn probe_defaults_and_rules() {
        let json = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i",
            "livenessProbe": {"httpGet": {"port": 80}},
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2, "successThreshold": 3},
        }]}});
        let mut pod: Pod = serde_json::from_value(json).unwrap();
        assert!(validate(&pod).is_empty(), "{:?}", validate(&pod));
        default(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        let live = &v["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(live["timeoutSeconds"], 1);
        assert_eq!(live["periodSeconds"], 10);
        assert_eq!(live["successThreshold"], 1);
        assert_eq!(live["failureThreshold"], 3);
        assert_eq!(live["httpGet"]["path"], "/");
        assert_eq!(live["httpGet"]["scheme"], "HTTP");
        assert!(live.get("initialDelaySeconds").is_none(), "zero is omitted, as the API server does: {live}");
        let ready = &v["spec"]["containers"][0]["readinessProbe"];
        assert_eq!((ready["periodSeconds"].as_i64(), ready["successThreshold"].as_i64()), (Some(2), Some(3)));

        let bad = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i",
            "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2},
            "startupProbe": {"periodSeconds": -1},
        }]}});
        let causes: Vec<String> = validate(&serde_json::from_value(bad).unwrap())
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            causes,
            [
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: \"2\": must be 1",
                "spec.containers[0].startupProbe: Required value: must specify a handler type",
                "spec.containers[0].startupProbe.periodSeconds: Invalid value: \"-1\": must be greater than or equal to 0",
            ]
        );
    }
}

/// The pod's `Ready` condition, if it has one.
pub fn ready_condition(pod: &serde_json::Value) -> Option<&serde_json::Value> {
    pod.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "Ready")
}

/// Whether the pod is ready (its `Ready` condition is `True`): what Services and replica
/// counts go by.
pub fn is_ready(pod: &serde_json::Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

/// The pod as it looks once a graceful deletion has begun: `deletionTimestamp` = now + grace.
/// A deletion already under way is only ever shortened.
pub fn begin_deletion(pod: &serde_json::Value, grace: i64, now: jiff::Timestamp) -> serde_json::Value {
    use super::meta;
    let current = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(serde_json::Value::as_i64);
    if current.is_some_and(|c| c <= grace) {
        return pod.clone();
    }
    let mut new = pod.clone();
    let deadline = now + jiff::SignedDuration::from_secs(grace);
    meta::set(&mut new, "deletionTimestamp", meta::timestamp(deadline));
    meta::set(&mut new, "deletionGracePeriodSeconds", grace);
    new
}

/// The grace period a delete request gets: the request's, else the pod's own, else 30 s.
pub fn grace_period(pod: &serde_json::Value, requested: Option<i64>) -> i64 {
    requested
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(serde_json::Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

#[cfg(test)]
mod deletion_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deletion_only_shortens() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 5}});
        assert_eq!(grace_period(&pod, None), 5);
        assert_eq!(grace_period(&pod, Some(-3)), 0);
        let d = begin_deletion(&pod, 30, now);
        assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 30);
        assert_eq!(begin_deletion(&d, 60, now), d);
        let shorter = begin_deletion(&d, 1, now);
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 1);
        assert_eq!(shorter["metadata"]["deletionTimestamp"], "2023-11-14T22:13:21Z");
    }
}
