//! A container's environment as kubelet builds it: `envFrom`, `env` with `valueFrom`, `$(VAR)`.
//!
//! Pure: the worker fetches the ConfigMaps and Secrets [`references`] names and passes them in
//! ([`Lookups`]); [`resolve`] returns the variables in order or kubelet's error
//! (`CreateContainerConfigError`). Rules, after `kubelet_pods.go` `makeEnvironmentVariables`:
//! `envFrom` sources first, in order (`prefix` prepended; keys that are not valid variable
//! names skipped), then `env` entries, each expanded against the variables defined before it;
//! a later definition replaces an earlier one in place. `command` and `args` are expanded
//! against the whole result ([`expand`]). Values of Secrets are never logged nor put in errors.
//!
//! Not done: `resourceFieldRef` (limits and requests as variables), service link variables
//! (`<SVC>_SERVICE_HOST`, `enableServiceLinks`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::objects::{config, meta};

/// Why a container's environment cannot be built; the `Display` text is kubelet's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey { key: String, namespace: String, name: String },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey { key: String, namespace: String, name: String },
    #[error("unsupported fieldRef {0:?}; supported are metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP")]
    FieldRef(String),
    #[error("env {0:?}: resourceFieldRef is not supported by skerry")]
    ResourceFieldRef(String),
}

/// The ConfigMaps and Secrets of the pod's namespace a container refers to (`None`: missing).
#[derive(Debug, Default, Clone)]
pub struct Lookups {
    pub config_maps: BTreeMap<String, Option<Value>>,
    pub secrets: BTreeMap<String, Option<Value>>,
}

/// What `fieldRef` can name beyond the pod object itself.
#[derive(Debug, Default, Clone)]
pub struct PodFacts {
    pub node_name: String,
    pub pod_ip: String,
    pub host_ip: String,
}

/// The ConfigMap and Secret names a container's `env` and `envFrom` refer to.
pub fn references(c: &Value) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for e in list(&c["envFrom"]) {
        if let Some(n) = e.pointer("/configMapRef/name").and_then(Value::as_str) {
            cms.push(n.to_string());
        }
        if let Some(n) = e.pointer("/secretRef/name").and_then(Value::as_str) {
            secrets.push(n.to_string());
        }
    }
    for e in list(&c["env"]) {
        if let Some(n) = e.pointer("/valueFrom/configMapKeyRef/name").and_then(Value::as_str) {
            cms.push(n.to_string());
        }
        if let Some(n) = e.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str) {
            secrets.push(n.to_string());
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn optional(v: &Value) -> bool {
    v["optional"].as_bool().unwrap_or(false)
}

/// A ConfigMap's `data` and `binaryData` (decoded; not UTF-8 is replaced lossily, as a variable).
pub fn config_map_data(cm: &Value) -> BTreeMap<String, Vec<u8>> {
    use base64::Engine;
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm["binaryData"].as_object().into_iter().flatten() {
        if let Some(b) = v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()) {
            out.insert(k.clone(), b);
        }
    }
    for (k, v) in cm["data"].as_object().into_iter().flatten() {
        out.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
    }
    out
}

/// Kubernetes' rule for variable names (relaxed since 1.30): printable ASCII without `=`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

fn set(out: &mut Vec<(String, String)>, name: String, value: String) {
    match out.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => out.push((name, value)),
    }
}

/// The container's variables in definition order, or the first error kubelet would report.
pub fn resolve(pod: &Value, c: &Value, facts: &PodFacts, lookups: &Lookups) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = meta::namespace(pod).to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    for from in list(&c["envFrom"]) {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let data = if let Some(r) = from.get("configMapRef").filter(|r| r.is_object()) {
            let name = r["name"].as_str().unwrap_or("");
            match lookups.config_maps.get(name).cloned().flatten() {
                Some(cm) => config_map_data(&cm),
                None if optional(r) => continue,
                None => return Err(EnvError::ConfigMapNotFound(name.into())),
            }
        } else if let Some(r) = from.get("secretRef").filter(|r| r.is_object()) {
            let name = r["name"].as_str().unwrap_or("");
            match lookups.secrets.get(name).cloned().flatten() {
                Some(s) => config::secret_data(&s),
                None if optional(r) => continue,
                None => return Err(EnvError::SecretNotFound(name.into())),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            // kubelet skips invalid names (with an event); the values stay out of any message.
            if valid_name(&name) {
                set(&mut out, name, String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for e in list(&c["env"]) {
        let Some(name) = e["name"].as_str() else { continue };
        let value = if let Some(from) = e.get("valueFrom").filter(|v| v.is_object()) {
            match value_from(pod, from, name, &namespace, facts, lookups)? {
                Some(v) => v,
                None => continue,
            }
        } else {
            let raw = e["value"].as_str().unwrap_or("");
            expand(raw, &out)
        };
        set(&mut out, name.to_string(), value);
    }
    Ok(out)
}

/// One `valueFrom`; `None` when an optional source or key is missing (the variable is unset).
fn value_from(
    pod: &Value,
    from: &Value,
    env: &str,
    namespace: &str,
    facts: &PodFacts,
    lookups: &Lookups,
) -> Result<Option<String>, EnvError> {
    if let Some(r) = from.get("configMapKeyRef").filter(|r| r.is_object()) {
        let (name, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
        let Some(cm) = lookups.config_maps.get(name).cloned().flatten() else {
            return if optional(r) { Ok(None) } else { Err(EnvError::ConfigMapNotFound(name.into())) };
        };
        return match config_map_data(&cm).remove(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if optional(r) => Ok(None),
            None => Err(EnvError::ConfigMapKey { key: key.into(), namespace: namespace.into(), name: name.into() }),
        };
    }
    if let Some(r) = from.get("secretKeyRef").filter(|r| r.is_object()) {
        let (name, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
        let Some(s) = lookups.secrets.get(name).cloned().flatten() else {
            return if optional(r) { Ok(None) } else { Err(EnvError::SecretNotFound(name.into())) };
        };
        return match config::secret_data(&s).remove(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if optional(r) => Ok(None),
            None => Err(EnvError::SecretKey { key: key.into(), namespace: namespace.into(), name: name.into() }),
        };
    }
    if let Some(r) = from.get("fieldRef").filter(|r| r.is_object()) {
        let path = r["fieldPath"].as_str().unwrap_or("");
        return field(pod, path, facts).map(Some).ok_or_else(|| EnvError::FieldRef(path.into()));
    }
    if from.get("resourceFieldRef").is_some_and(Value::is_object) {
        return Err(EnvError::ResourceFieldRef(env.into()));
    }
    Ok(Some(String::new()))
}

/// A `fieldRef` path's value (the downward API's fields for variables).
pub fn field(pod: &Value, path: &str, facts: &PodFacts) -> Option<String> {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let subscript = |path: &str, prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(rest.to_string())
    };
    Some(match path {
        "metadata.name" => meta::name(pod).to_string(),
        "metadata.namespace" => meta::namespace(pod).to_string(),
        "metadata.uid" => meta::uid(pod).to_string(),
        "spec.nodeName" => {
            let n = text("/spec/nodeName");
            if n.is_empty() {
                facts.node_name.clone()
            } else {
                n
            }
        }
        "spec.serviceAccountName" => {
            let n = text("/spec/serviceAccountName");
            if n.is_empty() {
                "default".into()
            } else {
                n
            }
        }
        "status.podIP" => facts.pod_ip.clone(),
        "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" => facts.host_ip.clone(),
        "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(k) = subscript(path, "metadata.labels['") {
                meta::labels(pod).get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = subscript(path, "metadata.annotations['") {
                meta::string_map(pod, "annotations").get(&k).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// Kubernetes' `$(VAR)` expansion (`third_party/forked/golang/expansion`): a defined `$(VAR)`
/// becomes its value, an undefined one stays as written, `$$` is a literal `$`, and any other
/// `$` is kept.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// [`expand`] over a list (`command`, `args`).
pub fn expand_all(items: &[String], vars: &[(String, String)]) -> Vec<String> {
    items.iter().map(|s| expand(s, vars)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "w"}, "annotations": {"a": "b"}},
               "spec": {"nodeName": "n1"}})
    }

    fn lookups() -> Lookups {
        let cm = json!({"metadata": {"name": "cfg", "resourceVersion": "3"}, "data": {"mode": "fast", "bad=key": "x", "level": "2"}});
        let secret = json!({"metadata": {"name": "db"}, "data": {"password": "czNjcjN0", "user": "YWRtaW4="}});
        Lookups {
            config_maps: BTreeMap::from([("cfg".into(), Some(cm)), ("gone".into(), None)]),
            secrets: BTreeMap::from([("db".into(), Some(secret)), ("nosecret".into(), None)]),
        }
    }

    fn facts() -> PodFacts {
        PodFacts { node_name: "node".into(), pod_ip: "10.42.0.7".into(), host_ip: "192.168.1.2".into() }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let v = vars(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &v), "1-two");
        assert_eq!(expand("$(C)", &v), "$(C)", "undefined stays");
        assert_eq!(expand("$$(A)", &v), "$(A)", "escaped");
        assert_eq!(expand("$$", &v), "$");
        assert_eq!(expand("a$b", &v), "a$b");
        assert_eq!(expand("end$", &v), "end$");
        assert_eq!(expand("$(A", &v), "$(A", "unterminated");
        assert_eq!(expand("ü$é$(A)", &v), "ü$é1");
        assert_eq!(expand("$()", &v), "$()");
    }

    #[test]
    fn env_resolution_order_prefix_and_refs() {
        let c = json!({
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "db"}},
                        {"configMapRef": {"name": "gone", "optional": true}}],
            "env": [
                {"name": "user", "value": "override"},
                {"name": "GREETING", "value": "hi $(user) at $(CFG_mode) $(MISSING)"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey", "optional": true}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
            ]
        });
        let got = resolve(&pod(), &c, &facts(), &lookups()).unwrap();
        assert_eq!(
            got,
            vars(&[
                ("CFG_level", "2"),
                ("CFG_mode", "fast"),
                ("password", "s3cr3t"),
                ("user", "override"),
                ("GREETING", "hi override at fast $(MISSING)"),
                ("PW", "s3cr3t"),
                ("LEVEL", "2"),
                ("POD", "web"),
                ("NS", "shop"),
                ("UID", "u-1"),
                ("IP", "10.42.0.7"),
                ("HOST", "192.168.1.2"),
                ("NODE", "n1"),
                ("SA", "default"),
                ("APP", "w"),
            ]),
            "the invalid key `bad=key` is skipped; the optional missing key is unset"
        );
        assert_eq!(expand_all(&["echo $(GREETING)".to_string()], &got), ["echo hi override at fast $(MISSING)"]);
    }

    #[test]
    fn errors_use_kubelets_wording() {
        let err = |c: Value| resolve(&pod(), &c, &facts(), &lookups()).unwrap_err().to_string();
        assert_eq!(err(json!({"envFrom": [{"configMapRef": {"name": "gone"}}]})), "configmap \"gone\" not found");
        assert_eq!(err(json!({"envFrom": [{"secretRef": {"name": "nosecret"}}]})), "secret \"nosecret\" not found");
        assert_eq!(
            err(json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "y"}}}]})),
            "couldn't find key y in ConfigMap shop/cfg"
        );
        assert_eq!(
            err(json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "token"}}}]})),
            "couldn't find key token in Secret shop/db"
        );
        assert_eq!(
            err(json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "y"}}}]})),
            "configmap \"gone\" not found"
        );
        assert!(err(json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}))
            .contains("unsupported fieldRef"));
        // An optional missing source leaves the variable unset.
        let c = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nosecret", "key": "y", "optional": true}}}]});
        assert!(resolve(&pod(), &c, &facts(), &lookups()).unwrap().is_empty());
    }

    #[test]
    fn errors_never_carry_secret_values() {
        let c = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}]});
        let msg = resolve(&pod(), &c, &facts(), &lookups()).unwrap_err().to_string();
        assert!(!msg.contains("s3cr3t") && !msg.contains("admin"), "{msg}");
    }

    #[test]
    fn references_are_collected_once() {
        let c = json!({"envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s"}}],
                       "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "a", "key": "k"}}},
                               {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}]});
        assert_eq!(references(&c), (vec!["a".to_string()], vec!["s".to_string(), "t".to_string()]));
    }
}
