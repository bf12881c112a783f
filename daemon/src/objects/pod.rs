//! Pod defaulting and validation, with Kubernetes' defaults and field paths.

use k8s_openapi::api::core::v1::{Container, Pod, Probe};

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
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase.get_or_insert_with(|| "Pending".into());
    status.qos_class.get_or_insert_with(|| "BestEffort".into());
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    c.resources.get_or_insert_with(Default::default);
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
    let probes = [("livenessProbe", &c.liveness_probe), ("readinessProbe", &c.readiness_probe), ("startupProbe", &c.startup_probe)];
    for (field, probe) in probes {
        let Some(p) = probe else { continue };
        let at = format!("{path}.{field}");
        let handlers = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some(), p.grpc.is_some()].iter().filter(|h| **h).count();
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
                causes.push(Cause::invalid(format!("{at}.{name}"), &v.to_string(), "must be greater than or equal to 0".into()));
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
                causes.push(Cause::unsupported(format!("{path}.imagePullPolicy"), p, &["Always", "IfNotPresent", "Never"]));
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
                    causes.push(Cause::unsupported(format!("{path}.ports[{j}].protocol"), proto, &["SCTP", "TCP", "UDP"]));
                }
            }
        }
        validate_probes(c, &path, &mut causes);
        for (j, env) in c.env.iter().flatten().enumerate() {
            if env.name.is_empty() {
                causes.push(Cause::required(format!("{path}.env[{j}].name")));
            }
        }
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !matches!(p, "Always" | "OnFailure" | "Never") {
            causes.push(Cause::unsupported("spec.restartPolicy", p, &["Always", "OnFailure", "Never"]));
        }
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        causes.push(Cause::invalid("spec.terminationGracePeriodSeconds", "", "must be greater than or equal to 0".into()));
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
        let causes: Vec<String> = validate(&serde_json::from_value(bad).unwrap()).iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
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
