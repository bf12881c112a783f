//! Typed resources, validation, defaulting and label selectors.
//!
//! Owns the rules an object must satisfy before it may be stored: names (DNS-1123), labels,
//! per-kind field rules and Kubernetes' defaults. Objects travel through the daemon as JSON
//! (`serde_json::Value`) so that fields Skerry does not know are kept; each kind is also parsed
//! into its `k8s-openapi` type to validate it and to name the fields Skerry would not act on.
//!
//! Invariant: pure — no IO, no async, no clock except where a caller passes time in.
//! Boundary: `api` calls [`admit`] and [`admit_update`]; everyone may use [`meta`], [`selector`]
//! and [`resource`].

pub mod config;
pub mod meta;
pub mod node;
pub mod patch;
pub mod pod;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod service;
pub mod validation;
pub mod volume;
pub mod workload;

#[cfg(test)]
mod proptests;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

pub use resource::ResourceType;

/// One reason an object is invalid, with the field path Kubernetes would name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn new(field: impl Into<String>, message: String) -> Cause {
        Cause { field: field.into(), message }
    }
    pub fn required(field: impl Into<String>) -> Cause {
        Cause::new(field, "Required value".into())
    }
    pub fn invalid(field: impl Into<String>, value: &str, why: String) -> Cause {
        Cause::new(field, format!("Invalid value: {value:?}: {why}"))
    }
    pub fn unsupported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Cause {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Cause::new(field, format!("Unsupported value: {value:?}: supported values: {}", allowed.join(", ")))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    /// The object breaks a rule; maps to 422 Invalid. `group` is the API group, empty for the
    /// core group; the message names `Kind.group` as the API server's does.
    #[error("{} {name:?} is invalid: {}", group_kind(.kind, .group), causes_text(.causes))]
    Invalid { kind: String, group: String, name: String, causes: Vec<Cause> },
    /// The request itself is malformed; maps to 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
}

/// Kubernetes' `GroupKind` string: `Pod`, `Deployment.apps`.
pub fn group_kind(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

fn causes_text(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    format!("[{}]", parts.join(", "))
}

/// An object that passed validation, with defaults filled in, and warnings for the client.
#[derive(Debug)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Validates and defaults a new object of type `rt`, keeping unknown fields (with a warning).
pub fn admit(rt: &ResourceType, mut obj: Value) -> Result<Admitted, ObjectError> {
    let converted = workload::upgrade(&mut obj);
    check_type(rt, &obj)?;
    let name = meta::name(&obj).to_string();
    let mut causes = validate_metadata(rt, &obj);
    let typed = match rt.kind {
        "Pod" => typed_step::<k8s_openapi::api::core::v1::Pod>(&obj, pod::default, pod::validate),
        "Namespace" => typed_step::<k8s_openapi::api::core::v1::Namespace>(&obj, default_namespace, |_| vec![]),
        "Node" => typed_step(&obj, node::default, node::validate),
        "Event" => typed_step::<k8s_openapi::api::core::v1::Event>(&obj, |_| {}, |_| vec![]),
        "Service" => typed_step::<k8s_openapi::api::core::v1::Service>(&obj, service::default, service::validate),
        "Endpoints" => typed_step::<k8s_openapi::api::core::v1::Endpoints>(&obj, |_| {}, |_| vec![]),
        "Deployment" => typed_step(&obj, workload::default_deployment, workload::validate_deployment),
        "ReplicaSet" => typed_step(&obj, workload::default_replica_set, workload::validate_replica_set),
        "ReplicationController" => {
            typed_step(&obj, workload::default_replication_controller, workload::validate_replication_controller)
        }
        "ConfigMap" => {
            typed_step(&obj, |_: &mut k8s_openapi::api::core::v1::ConfigMap| {}, config::validate_config_map)
        }
        "Secret" => typed_step(&obj, config::default_secret, config::validate_secret),
        "StorageClass" => typed_step(&obj, config::default_storage_class, config::validate_storage_class),
        "PersistentVolume" => typed_step::<k8s_openapi::api::core::v1::PersistentVolume>(&obj, default_pv, |_| vec![]),
        "PersistentVolumeClaim" => {
            typed_step::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&obj, default_pvc, |_| vec![])
        }
        other => return Err(ObjectError::BadRequest(format!("kind {other} cannot be created here"))),
    };
    let (typed, more_causes) = typed.map_err(|cause| invalid(rt, &name, vec![cause]))?;
    causes.extend(more_causes);
    if !causes.is_empty() {
        return Err(invalid(rt, &name, causes));
    }
    let mut unknown = Vec::new();
    unknown_fields(&obj, &typed.before_defaults, "", &mut unknown);
    merge_known(&mut obj, &typed.after_defaults);
    if rt.kind == "Secret" {
        // Folded into `data` by the defaults; never stored.
        obj.as_object_mut().map(|m| m.remove("stringData"));
    }
    let mut warnings: Vec<String> = converted.into_iter().collect();
    if !unknown.is_empty() {
        warnings.push(format!("unknown field(s) kept but not acted on by skerry: {}", unknown.join(", ")));
    }
    Ok(Admitted { object: obj, warnings })
}

/// Validates an update: the new object must be valid and may change only what the kind allows.
pub fn admit_update(rt: &ResourceType, old: &Value, new: Value) -> Result<Admitted, ObjectError> {
    let admitted = admit(rt, new)?;
    if rt.kind == "Pod" {
        let parse = |v: &Value| serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(v.clone()).ok();
        if let (Some(o), Some(n)) = (parse(old), parse(&admitted.object)) {
            let causes = pod::validate_update(&o, &n);
            if !causes.is_empty() {
                return Err(invalid(rt, meta::name(old), causes));
            }
        }
    }
    if rt.kind == "Node" {
        let parse = |v: &Value| serde_json::from_value::<k8s_openapi::api::core::v1::Node>(v.clone()).ok();
        if let (Some(o), Some(n)) = (parse(old), parse(&admitted.object)) {
            let causes = node::validate_update(&o, &n);
            if !causes.is_empty() {
                return Err(invalid(rt, meta::name(old), causes));
            }
        }
    }
    let causes = workload::validate_update(rt.kind, old, &admitted.object);
    if !causes.is_empty() {
        return Err(invalid(rt, meta::name(old), causes));
    }
    Ok(admitted)
}

fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> ObjectError {
    ObjectError::Invalid { kind: rt.kind.to_string(), group: rt.group.to_string(), name: name.to_string(), causes }
}

fn default_namespace(ns: &mut k8s_openapi::api::core::v1::Namespace) {
    let status = ns.status.get_or_insert_with(Default::default);
    status.phase.get_or_insert_with(|| "Active".into());
}

fn default_pv(pv: &mut k8s_openapi::api::core::v1::PersistentVolume) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    spec.persistent_volume_reclaim_policy.get_or_insert_with(|| "Retain".into());
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    pv.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Available".into());
}

fn default_pvc(pvc: &mut k8s_openapi::api::core::v1::PersistentVolumeClaim) {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    pvc.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Pending".into());
}

fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ObjectError> {
    if !obj.is_object() {
        return Err(ObjectError::BadRequest("the body must be a JSON object".into()));
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ObjectError::BadRequest(format!(
            "the object is apiVersion {api_version:?} kind {kind:?}, but this endpoint takes {} {}",
            rt.api_version(),
            rt.kind
        )));
    }
    Ok(())
}

fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta::name(obj);
    let check = if rt.kind == "Namespace" { validation::dns1123_label } else { validation::dns1123_subdomain };
    if name.is_empty() {
        causes.push(Cause::new("metadata.name", "Required value: name or generateName is required".into()));
    } else if let Err(e) = check(name) {
        causes.push(Cause::invalid("metadata.name", name, e));
    }
    for (k, v) in meta::labels(obj) {
        if let Err(e) = validation::qualified_name(&k) {
            causes.push(Cause::invalid("metadata.labels", &k, e));
        }
        if let Err(e) = validation::label_value(&v) {
            causes.push(Cause::invalid("metadata.labels", &v, e));
        }
    }
    for k in meta::string_map(obj, "annotations").keys() {
        if let Err(e) = validation::qualified_name(k) {
            causes.push(Cause::invalid("metadata.annotations", k, e));
        }
    }
    let total: usize = meta::string_map(obj, "annotations").iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 256 * 1024 {
        causes.push(Cause::new("metadata.annotations", "Too long: must have at most 262144 bytes".into()));
    }
    causes
}

struct Typed {
    before_defaults: Value,
    after_defaults: Value,
}

/// Parses `obj` as `T` (naming the failing field), validates and defaults it.
fn typed_step<T: DeserializeOwned + Serialize>(
    obj: &Value,
    default: impl FnOnce(&mut T),
    validate: impl FnOnce(&T) -> Vec<Cause>,
) -> Result<(Typed, Vec<Cause>), Cause> {
    let mut typed: T = serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        Cause::new(if path == "." { String::new() } else { path }, e.into_inner().to_string())
    })?;
    let before_defaults = serde_json::to_value(&typed).expect("typed objects serialize");
    let causes = validate(&typed);
    default(&mut typed);
    let after_defaults = serde_json::to_value(&typed).expect("typed objects serialize");
    Ok((Typed { before_defaults, after_defaults }, causes))
}

/// Lists the paths present in `original` but absent from its typed round trip.
fn unknown_fields(original: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, value) in o {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match k.get(key) {
                    Some(kv) => unknown_fields(value, kv, &child, out),
                    None if value.is_null() => {}
                    None if is_known_empty(value) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                unknown_fields(ov, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Empty maps and lists of known fields may vanish in the typed form; they carry nothing.
fn is_known_empty(value: &Value) -> bool {
    matches!(value, Value::Object(m) if m.is_empty()) || matches!(value, Value::Array(a) if a.is_empty())
}

/// Writes every field of `known` into `obj`, keeping the fields only `obj` has.
fn merge_known(obj: &mut Value, known: &Value) {
    match (obj, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, kv) in k {
                match o.get_mut(key) {
                    Some(ov) => merge_known(ov, kv),
                    None => {
                        o.insert(key.clone(), kv.clone());
                    }
                }
            }
        }
        (Value::Array(o), Value::Array(k)) if o.len() == k.len() => {
            for (ov, kv) in o.iter_mut().zip(k) {
                merge_known(ov, kv);
            }
        }
        (o, k) => *o = k.clone(),
    }
}

/// Removes `null` members recursively (JSON merge patch semantics leave none behind).
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: Value) -> Value {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "webapp", "labels": {"app": "webapp", "release": "0"}},
            "spec": {"containers": [{"name": "webapp", "image": "richardchesterwood/k8s-fleetman-webapp-angular:release0"}]}
        });
        merge_patch(&mut p, &extra);
        p
    }

    #[test]
    fn pod_gets_kubernetes_defaults() {
        let a = admit(&resource::PODS, pod(json!({}))).unwrap();
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        let o = &a.object;
        assert_eq!(o["spec"]["restartPolicy"], "Always");
        assert_eq!(o["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(o["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(o["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(o["spec"]["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(o["status"]["phase"], "Pending");
    }

    #[test]
    fn unknown_fields_are_kept_and_named() {
        let a = admit(&resource::PODS, pod(json!({"spec": {"containers": [{"name": "webapp", "image": "x:1", "colour": "red"}], "frobnicate": true}}))).unwrap();
        assert_eq!(a.object["spec"]["frobnicate"], true);
        assert_eq!(a.object["spec"]["containers"][0]["colour"], "red");
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].contains("spec.containers[0].colour"), "{}", a.warnings[0]);
        assert!(a.warnings[0].contains("spec.frobnicate"), "{}", a.warnings[0]);
    }

    #[test]
    fn bad_pods_are_invalid_with_paths() {
        let e = admit(&resource::PODS, pod(json!({"metadata": {"name": "Web_App"}}))).unwrap_err();
        assert!(e.to_string().contains("metadata.name"), "{e}");
        let e = admit(
            &resource::PODS,
            pod(json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": "eighty"}]}]}})),
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.containers[0].ports[0].containerPort"), "{e}");
        let e = admit(&resource::PODS, pod(json!({"spec": {"containers": []}}))).unwrap_err();
        assert!(e.to_string().contains("spec.containers: Required value"), "{e}");
        let e = admit(&resource::PODS, pod(json!({"spec": {"containers": [{"name": "a", "image": ""}]}}))).unwrap_err();
        assert!(e.to_string().contains("spec.containers[0].image: Required value"), "{e}");
        let e = admit(&resource::PODS, pod(json!({"metadata": {"labels": {"bad key": "x"}}}))).unwrap_err();
        assert!(e.to_string().contains("metadata.labels"), "{e}");
        let e = admit(&resource::PODS, pod(json!({"kind": "Service"}))).unwrap_err();
        assert!(matches!(e, ObjectError::BadRequest(_)));
    }

    #[test]
    fn pod_spec_is_immutable() {
        let old = admit(&resource::PODS, pod(json!({}))).unwrap().object;
        let same = admit_update(&resource::PODS, &old, pod(json!({"metadata": {"labels": {"x": "y"}}})));
        assert!(same.is_ok());
        let changed = admit_update(&resource::PODS, &old, pod(json!({"spec": {"restartPolicy": "Never"}})));
        assert!(changed.is_err());
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}

/// The annotation holding the manifest last applied with `apply` (as kubectl keeps it).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Server-side apply's three-way merge: fields in `applied` win, fields that were in the
/// previous `last` manifest but are no longer in `applied` are removed from `live`, and
/// everything else in `live` (status, system metadata, other writers' fields) is kept.
/// Lists are replaced whole.
pub fn apply_merge(live: &Value, last: &Value, applied: &Value) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, av) in a {
                let lv = l.get(k).unwrap_or(&Value::Null);
                let prev = last.get(k).unwrap_or(&Value::Null);
                out.insert(k.clone(), apply_merge(lv, prev, av));
            }
            if let Value::Object(prev) = last {
                for k in prev.keys() {
                    if !a.contains_key(k) {
                        out.remove(k);
                    }
                }
            }
            Value::Object(out)
        }
        _ => applied.clone(),
    }
}

#[cfg(test)]
mod apply_tests {
    use super::apply_merge;
    use serde_json::json;

    #[test]
    fn three_way_merge_removes_what_the_manifest_dropped() {
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2", "other": "kept"}}, "spec": {"s": 1}, "status": {"phase": "Running"}});
        let last = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": {"s": 1}});
        let applied = json!({"metadata": {"name": "a", "labels": {"x": "3"}}, "spec": {"s": 2}});
        let merged = apply_merge(&live, &last, &applied);
        assert_eq!(
            merged,
            json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "3", "other": "kept"}}, "spec": {"s": 2}, "status": {"phase": "Running"}})
        );
    }
}
