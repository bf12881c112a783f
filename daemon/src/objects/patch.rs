//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902, through `json-patch`),
//! and the strategic merge patch kubectl sends by default, which merges lists of named things
//! (containers, ports, env, volumes...) by their key instead of replacing them.

use serde_json::{Map, Value};

/// The key that identifies elements of a list field in a strategic merge, as Kubernetes' API
/// types declare it (`patchMergeKey`); `None` for lists that are replaced whole.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" => {
            Some(if sample.is_some_and(|s| s.get("containerPort").is_some()) { "containerPort" } else { "port" })
        }
        _ => None,
    }
}

/// Applies a strategic merge patch (the common subset: maps merge, `null` deletes, keyed lists
/// merge by key, `$patch: delete` removes a keyed element, `$patch: replace` replaces).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let sample = items.first().or_else(|| t.get(k).and_then(|a| a.as_array()).and_then(|a| a.first()));
                match (merge_key(k, sample), t.get_mut(k)) {
                    (Some(key), Some(Value::Array(existing))) => merge_list(existing, items, key),
                    _ => {
                        let kept: Vec<Value> = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
                        t.insert(k.clone(), Value::Array(kept));
                    }
                }
            }
            _ => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key).cloned();
        let position = id.as_ref().and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => existing.push(item.clone()),
        }
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("the JSON patch is malformed: {e}"))?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_keyed_lists() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 81}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "c:1"}
            ]}}),
        );
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 81}]},
                {"name": "c", "image": "c:1"}
            ]}})
        );
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "web", "release": "0-5"}}});
        strategic_merge(
            &mut svc,
            &json!({"spec": {"type": "LoadBalancer", "externalIPs": ["192.0.2.1"], "selector": {"release": "0"}}}),
        );
        assert_eq!(
            svc,
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "web", "release": "0"}, "externalIPs": ["192.0.2.1"]}})
        );
        let mut m = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        strategic_merge(&mut m, &json!({"metadata": {"labels": {"a": null}}}));
        assert_eq!(m, json!({"metadata": {"labels": {"b": "2"}}}));
    }

    #[test]
    fn json_patches() {
        let mut v = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        json_patch(&mut v, &json!([{"op": "replace", "path": "/spec/type", "value": "NodePort"}, {"op": "add", "path": "/spec/ports/-", "value": {"port": 81}}])).unwrap();
        assert_eq!(v, json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}}));
        assert!(json_patch(&mut v, &json!([{"op": "test", "path": "/spec/type", "value": "X"}])).is_err());
        assert!(json_patch(&mut v, &json!({"op": "nonsense"})).is_err());
    }
}
