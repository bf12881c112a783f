//! Read and write the `metadata` of an object held as JSON, without parsing the rest.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("")
}

pub fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

pub fn resource_version(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("")
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// A string-to-string map under `metadata` (`labels`, `annotations`).
pub fn string_map(obj: &Value, field: &str) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj, "labels")
}

/// The `metadata` object, created when missing.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

pub fn set(obj: &mut Value, field: &str, value: impl Into<Value>) {
    metadata_mut(obj).insert(field.to_string(), value.into());
}

/// Formats a timestamp the way Kubernetes does (RFC 3339, seconds precision, `Z`).
pub fn timestamp(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// Parses a timestamp written by [`timestamp`] or any RFC 3339 form.
pub fn parse_time(value: Option<&Value>) -> Option<jiff::Timestamp> {
    value?.as_str()?.parse().ok()
}

/// The ownerReference a controller puts on what it controls.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": name(owner), "uid": uid(owner),
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// The ownerReference with `controller: true`, if any.
pub fn controller_of(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")?.as_array()?.iter().find(|r| r["controller"] == true)
}

/// Whether `obj` names the owner with `owner_uid` among its ownerReferences.
pub fn is_owned_by(obj: &Value, owner_uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(owner_uid)))
}

/// `obj` with `owner`'s controller reference added.
pub fn with_controller_ref(obj: &Value, owner: &Value) -> Value {
    let mut new = obj.clone();
    let mut refs = new.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    refs.retain(|r| r["uid"].as_str() != Some(uid(owner)));
    refs.push(controller_ref(owner));
    set(&mut new, "ownerReferences", refs);
    new
}

/// `obj` without any reference to the owner with `owner_uid`.
pub fn without_owner(obj: &Value, owner_uid: &str) -> Value {
    let mut new = obj.clone();
    let mut refs = new.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
    let m = metadata_mut(&mut new);
    if refs.is_empty() {
        m.remove("ownerReferences");
    } else {
        m.insert("ownerReferences".into(), json!(refs));
    }
    new
}
