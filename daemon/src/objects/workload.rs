//! Deployments, ReplicaSets and ReplicationControllers: Kubernetes' defaults and rules, the
//! conversion of older `apiVersion`s, and the rolling-update arithmetic the controllers share.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::selector::Selector;
use super::{pod, resource, Cause};

/// The label a Deployment puts on its ReplicaSets and their pods, naming the template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The annotation on a Deployment and its ReplicaSets holding the rollout revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The annotation a user (or `kubectl annotate`) sets to say why a rollout happened.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The annotation `rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Converts an object written against an older `apiVersion` of its kind to the served version,
/// filling the defaults that version had. Returns the deprecation warning, or `None` when the
/// object was already current.
pub fn upgrade(obj: &mut Value) -> Option<String> {
    let api_version = obj.get("apiVersion")?.as_str()?.to_string();
    let kind = obj.get("kind")?.as_str()?.to_string();
    let rt = resource::legacy_kind(&api_version, &kind)?;
    obj["apiVersion"] = json!(rt.api_version());
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        // Before apps/v1 the selector defaulted to the template's labels.
        if spec.get("selector").is_none_or(Value::is_null) {
            if let Some(labels) = spec.get("template").and_then(|t| t.pointer("/metadata/labels")).cloned() {
                spec.insert("selector".into(), json!({"matchLabels": labels}));
            }
        }
        if kind == "Deployment" {
            let (history, deadline, step) = match api_version.as_str() {
                "extensions/v1beta1" => (json!(i32::MAX), json!(i32::MAX), json!(1)),
                "apps/v1beta1" => (json!(2), json!(600), json!("25%")),
                _ => (json!(10), json!(600), json!("25%")),
            };
            spec.entry("revisionHistoryLimit").or_insert(history);
            spec.entry("progressDeadlineSeconds").or_insert(deadline);
            if spec.get("strategy").is_none_or(Value::is_null) {
                spec.insert(
                    "strategy".into(),
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": step, "maxSurge": step}}),
                );
            }
        }
    }
    Some(format!(
        "{api_version} {kind} is deprecated (removed in Kubernetes 1.16); stored as {} {kind}",
        rt.api_version()
    ))
}

/// Defaults and checks a pod template as the API server does, with field paths under `path`.
fn template(template: &mut Option<PodTemplateSpec>, path: &str, causes: &mut Vec<Cause>) {
    let Some(t) = template.as_mut() else {
        causes.push(Cause::required(path));
        return;
    };
    let mut pod = Pod { metadata: t.metadata.clone().unwrap_or_default(), spec: t.spec.clone(), status: None };
    for c in pod::validate(&pod) {
        causes.push(Cause::new(format!("{path}.{}", c.field), c.message));
    }
    if let Some(policy) = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        if policy != "Always" {
            causes.push(Cause::unsupported(format!("{path}.spec.restartPolicy"), policy, &["Always"]));
        }
    }
    pod::default(&mut pod);
    t.spec = pod.spec;
}

fn template_labels(t: &Option<PodTemplateSpec>) -> BTreeMap<String, String> {
    t.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default()
}

/// Checks a label selector and that the template's labels match it.
fn selector(sel: &Option<LabelSelector>, tmpl: &Option<PodTemplateSpec>, causes: &mut Vec<Cause>) {
    let Some(sel) = sel else {
        causes.push(Cause::required("spec.selector"));
        return;
    };
    let s = match Selector::from_label_selector(&serde_json::to_value(sel).expect("json")) {
        Ok(s) => s,
        Err(e) => {
            causes.push(Cause::new("spec.selector", format!("Invalid value: {e}")));
            return;
        }
    };
    if s.is_empty() {
        causes.push(Cause::invalid("spec.selector", "{}", "empty selector is invalid for deployment".into()));
        return;
    }
    let labels = template_labels(tmpl);
    if !s.matches(&labels) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &format!("{labels:?}"),
            "`selector` does not match template `labels`".into(),
        ));
    }
}

fn replicas(r: Option<i32>, causes: &mut Vec<Cause>) {
    if let Some(n) = r.filter(|n| *n < 0) {
        causes.push(Cause::invalid("spec.replicas", &n.to_string(), "must be greater than or equal to 0".into()));
    }
}

/// Resolves `maxSurge`/`maxUnavailable` against `replicas`: a number, or a percentage rounded
/// up (surge) or down (unavailable), as Kubernetes does.
pub fn scaled(value: Option<&Value>, replicas: i64, round_up: bool, default: &str) -> Result<i64, String> {
    let default = json!(default);
    let value = value.filter(|v| !v.is_null()).unwrap_or(&default);
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    let s = value.as_str().ok_or_else(|| format!("{value} must be an integer or a percentage"))?;
    let pct: i64 = s
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .or_else(|| s.parse().ok().filter(|_| false))
        .ok_or_else(|| format!("{s:?} must be an integer or a percentage (e.g. '25%')"))?;
    let scaled = pct * replicas;
    Ok(if round_up { (scaled + 99) / 100 } else { scaled / 100 })
}

fn int_or_string(v: &Option<IntOrString>) -> Option<Value> {
    v.as_ref().map(|v| match v {
        IntOrString::Int(n) => json!(n),
        IntOrString::String(s) => json!(s),
    })
}

pub fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into()).clone();
    if kind == "RollingUpdate" {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.max_surge.get_or_insert(IntOrString::String("25%".into()));
        ru.max_unavailable.get_or_insert(IntOrString::String("25%".into()));
    }
    let mut t = Some(std::mem::take(&mut spec.template));
    template(&mut t, "spec.template", &mut Vec::new());
    spec.template = t.unwrap_or_default();
}

pub fn validate_deployment(d: &Deployment) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = &d.spec else { return vec![Cause::required("spec")] };
    replicas(spec.replicas, &mut causes);
    let mut tmpl = Some(spec.template.clone());
    selector(&Some(spec.selector.clone()), &tmpl, &mut causes);
    template(&mut tmpl, "spec.template", &mut causes);
    if let Some(strategy) = &spec.strategy {
        let kind = strategy.type_.as_deref().unwrap_or("RollingUpdate");
        match kind {
            "Recreate" if strategy.rolling_update.is_some() => causes.push(Cause::new(
                "spec.strategy.rollingUpdate",
                "Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
            )),
            "Recreate" => {}
            "RollingUpdate" => {
                let ru = strategy.rolling_update.clone().unwrap_or_default();
                let surge = int_or_string(&ru.max_surge);
                let unavailable = int_or_string(&ru.max_unavailable);
                let s = scaled(surge.as_ref(), 100, true, "25%");
                let u = scaled(unavailable.as_ref(), 100, false, "25%");
                match (&s, &u) {
                    (Err(e), _) => {
                        causes.push(Cause::new("spec.strategy.rollingUpdate.maxSurge", format!("Invalid value: {e}")))
                    }
                    (_, Err(e)) => causes
                        .push(Cause::new("spec.strategy.rollingUpdate.maxUnavailable", format!("Invalid value: {e}"))),
                    (Ok(s), Ok(u)) => {
                        if *s < 0 {
                            causes.push(Cause::invalid(
                                "spec.strategy.rollingUpdate.maxSurge",
                                &s.to_string(),
                                "must be greater than or equal to 0".into(),
                            ));
                        }
                        if *u < 0 {
                            causes.push(Cause::invalid(
                                "spec.strategy.rollingUpdate.maxUnavailable",
                                &u.to_string(),
                                "must be greater than or equal to 0".into(),
                            ));
                        }
                        if unavailable.as_ref().and_then(Value::as_str).is_some() && *u > 100 {
                            causes.push(Cause::invalid(
                                "spec.strategy.rollingUpdate.maxUnavailable",
                                &format!("{u}%"),
                                "must not be greater than 100%".into(),
                            ));
                        }
                        let zero = |v: &Option<Value>| v.as_ref().is_some_and(|v| v == &json!(0) || v == &json!("0%"));
                        if zero(&surge) && zero(&unavailable) {
                            causes.push(Cause::invalid(
                                "spec.strategy.rollingUpdate.maxUnavailable",
                                "0",
                                "may not be 0 when `maxSurge` is 0".into(),
                            ));
                        }
                    }
                }
            }
            other => causes.push(Cause::unsupported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])),
        }
    }
    for (field, v) in [
        ("spec.minReadySeconds", spec.min_ready_seconds),
        ("spec.revisionHistoryLimit", spec.revision_history_limit),
        ("spec.progressDeadlineSeconds", spec.progress_deadline_seconds),
    ] {
        if let Some(n) = v.filter(|n| *n < 0) {
            causes.push(Cause::invalid(field, &n.to_string(), "must be greater than or equal to 0".into()));
        }
    }
    if let (Some(deadline), Some(min_ready)) = (spec.progress_deadline_seconds, spec.min_ready_seconds) {
        if deadline <= min_ready {
            causes.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                &deadline.to_string(),
                "must be greater than minReadySeconds".into(),
            ));
        }
    }
    causes
}

pub fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    template(&mut spec.template, "spec.template", &mut Vec::new());
}

pub fn validate_replica_set(rs: &ReplicaSet) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = &rs.spec else { return vec![Cause::required("spec")] };
    replicas(spec.replicas, &mut causes);
    selector(&Some(spec.selector.clone()), &spec.template, &mut causes);
    template(&mut spec.template.clone(), "spec.template", &mut causes);
    causes
}

/// A ReplicationController's selector defaults to its template's labels, and so do its own labels.
pub fn default_replication_controller(rc: &mut ReplicationController) {
    let labels = rc.spec.as_ref().map(|s| template_labels(&s.template)).unwrap_or_default();
    let spec = rc.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
        spec.selector = Some(labels.clone());
    }
    if rc.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) && !labels.is_empty() {
        rc.metadata.labels = Some(labels);
    }
    template(&mut spec.template, "spec.template", &mut Vec::new());
}

pub fn validate_replication_controller(rc: &ReplicationController) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = &rc.spec else { return vec![Cause::required("spec")] };
    replicas(spec.replicas, &mut causes);
    let labels = template_labels(&spec.template);
    let selector = spec.selector.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| labels.clone());
    if selector.is_empty() {
        causes.push(Cause::required("spec.selector"));
    } else if !Selector::from_map(&selector).matches(&labels) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &format!("{labels:?}"),
            "`selector` does not match template `labels`".into(),
        ));
    }
    template(&mut spec.template.clone(), "spec.template", &mut causes);
    causes
}

/// What an update of a workload may not change: the selector of a Deployment or ReplicaSet.
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    if matches!(kind, "Deployment" | "ReplicaSet") && old.pointer("/spec/selector") != new.pointer("/spec/selector") {
        let value = new.pointer("/spec/selector").map(Value::to_string).unwrap_or_default();
        return vec![Cause::invalid("spec.selector", &value, "field is immutable".into())];
    }
    Vec::new()
}

/// Whether two pod templates are equal apart from the `pod-template-hash` label.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        t
    };
    strip(a) == strip(b)
}

/// A stable hash of a pod template (the `pod-template-hash` value): FNV-1a over its canonical
/// JSON (serde_json maps are ordered), written in the alphabet Kubernetes uses for it.
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut t = template.clone();
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let text = serde_json::to_string(&t).expect("json");
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes().chain(collision_count.to_string().bytes().filter(|_| collision_count > 0)) {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h as u64;
    let mut out = Vec::new();
    while out.len() < 10 && (n > 0 || out.is_empty()) {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize]);
        n /= ALPHABET.len() as u64;
    }
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{admit, admit_update, resource};

    fn deployment(extra: Value) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "webapp"},
            "spec": {"selector": {"matchLabels": {"app": "webapp"}}, "replicas": 2,
                     "template": {"metadata": {"labels": {"app": "webapp"}},
                                  "spec": {"containers": [{"name": "webapp", "image": "webapp:release0-5"}]}}}
        });
        crate::objects::merge_patch(&mut d, &extra);
        d
    }

    #[test]
    fn deployment_gets_kubernetes_defaults() {
        let a = admit(&resource::DEPLOYMENTS, deployment(json!({}))).unwrap();
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        let s = &a.object["spec"];
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(s["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert!(s["template"].get("status").is_none());
        let a = admit(
            &resource::DEPLOYMENTS,
            deployment(json!({"spec": {"replicas": null, "strategy": {"type": "Recreate"}}})),
        )
        .unwrap();
        assert_eq!(a.object["spec"]["replicas"], 1);
        assert_eq!(a.object["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn bad_deployments_name_the_field() {
        let cases = [
            (json!({"spec": {"selector": {"matchLabels": {"app": "other"}}}}), "spec.template.metadata.labels"),
            (json!({"spec": {"replicas": -1}}), "spec.replicas"),
            (
                json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}}),
                "spec.strategy.rollingUpdate: Forbidden",
            ),
            (json!({"spec": {"strategy": {"type": "Sideways"}}}), "spec.strategy.type: Unsupported value"),
            (
                json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}),
                "may not be 0 when `maxSurge` is 0",
            ),
            (
                json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": "lots"}}}}),
                "spec.strategy.rollingUpdate.maxSurge",
            ),
            (json!({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}), "spec.template.spec.restartPolicy"),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "webapp", "image": ""}]}}}}),
                "spec.template.spec.containers[0].image",
            ),
        ];
        for (patch, want) in cases {
            let e = admit(&resource::DEPLOYMENTS, deployment(patch.clone())).unwrap_err();
            assert!(e.to_string().contains(want), "{patch}: {e}");
        }
        let e = admit(&resource::DEPLOYMENTS, deployment(json!({"spec": {"selector": null}}))).unwrap_err();
        assert!(e.to_string().contains("spec.selector"), "{e}");
    }

    #[test]
    fn selector_is_immutable() {
        let old = admit(&resource::DEPLOYMENTS, deployment(json!({}))).unwrap().object;
        let new = deployment(
            json!({"spec": {"selector": {"matchLabels": {"app": "webapp", "v": "2"}}, "template": {"metadata": {"labels": {"v": "2"}}}}}),
        );
        let e = admit_update(&resource::DEPLOYMENTS, &old, new).unwrap_err();
        assert!(e.to_string().contains("field is immutable"), "{e}");
        assert!(admit_update(&resource::DEPLOYMENTS, &old, deployment(json!({"spec": {"replicas": 5}}))).is_ok());
    }

    #[test]
    fn legacy_versions_convert_with_a_warning() {
        let mut d = deployment(json!({"apiVersion": "extensions/v1beta1", "spec": {"selector": null}}));
        d["spec"].as_object_mut().unwrap().remove("selector");
        let a = admit(&resource::DEPLOYMENTS, d).unwrap();
        assert_eq!(a.object["apiVersion"], "apps/v1");
        assert_eq!(a.object["spec"]["selector"], json!({"matchLabels": {"app": "webapp"}}));
        assert_eq!(a.object["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
        assert!(
            a.warnings.iter().any(|w| w.contains("extensions/v1beta1 Deployment is deprecated")),
            "{:?}",
            a.warnings
        );
        let a = admit(&resource::DEPLOYMENTS, deployment(json!({"apiVersion": "apps/v1beta1"}))).unwrap();
        assert_eq!(a.object["spec"]["revisionHistoryLimit"], 2);
    }

    #[test]
    fn replication_controller_defaults_from_the_template() {
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "redis"},
            "spec": {"template": {"metadata": {"labels": {"app": "redis"}}, "spec": {"containers": [{"name": "redis", "image": "redis:6"}]}}}});
        let a = admit(&resource::REPLICATION_CONTROLLERS, rc.clone()).unwrap();
        assert_eq!(a.object["spec"]["selector"], json!({"app": "redis"}));
        assert_eq!(a.object["metadata"]["labels"], json!({"app": "redis"}));
        assert_eq!(a.object["spec"]["replicas"], 1);
        let mut bad = rc;
        bad["spec"]["selector"] = json!({"app": "other"});
        assert!(admit(&resource::REPLICATION_CONTROLLERS, bad).is_err());
    }

    #[test]
    fn surge_and_unavailable_arithmetic() {
        assert_eq!(scaled(Some(&json!("25%")), 10, true, "25%"), Ok(3));
        assert_eq!(scaled(Some(&json!("25%")), 10, false, "25%"), Ok(2));
        assert_eq!(scaled(None, 4, false, "25%"), Ok(1));
        assert_eq!(scaled(Some(&json!(2)), 10, true, "25%"), Ok(2));
        assert_eq!(scaled(Some(&json!("0%")), 10, true, "25%"), Ok(0));
        assert!(scaled(Some(&json!("x")), 10, true, "25%").is_err());
    }

    #[test]
    fn template_hash_is_stable_and_ignores_its_own_label() {
        let t = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a", "image": "a:1"}]}});
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][POD_TEMPLATE_HASH] = json!("x");
        assert_eq!(template_hash(&t, 0), template_hash(&labelled, 0));
        let mut other = t.clone();
        other["spec"]["containers"][0]["image"] = json!("a:2");
        assert_ne!(template_hash(&t, 0), template_hash(&other, 0));
        assert_ne!(template_hash(&t, 0), template_hash(&t, 1));
        assert!(template_hash(&t, 0).chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
