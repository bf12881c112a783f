//! ConfigMaps, Secrets and StorageClasses: Kubernetes' defaults and rules.
//!
//! A Secret's `stringData` is folded into `data` (base64) on admission and never stored, as the
//! API server does.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::ByteString;
use serde_json::Value;

use super::Cause;

/// The most data a ConfigMap or Secret may hold (Kubernetes: 1 MiB).
pub const MAX_SIZE: usize = 1024 * 1024;

/// The annotation marking the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// A data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name')".into()
        );
    }
    if key == "." || key == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into());
    }
    Ok(())
}

fn keys<'a>(field: &str, keys: impl Iterator<Item = &'a String>, causes: &mut Vec<Cause>) {
    for k in keys {
        if let Err(e) = check_key(k) {
            causes.push(Cause::invalid(format!("{field}[{k}]"), k, e));
        }
    }
}

pub fn validate_config_map(cm: &ConfigMap) -> Vec<Cause> {
    let mut causes = Vec::new();
    let data = cm.data.clone().unwrap_or_default();
    let binary = cm.binary_data.clone().unwrap_or_default();
    keys("data", data.keys(), &mut causes);
    keys("binaryData", binary.keys(), &mut causes);
    for k in data.keys().filter(|k| binary.contains_key(*k)) {
        causes.push(Cause::invalid(format!("data[{k}]"), k, "duplicate of key present in binaryData".into()));
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + binary.iter().map(|(k, v)| k.len() + v.0.len()).sum::<usize>();
    if size > MAX_SIZE {
        causes.push(Cause::new("", format!("Too long: must have at most {MAX_SIZE} bytes")));
    }
    causes
}

/// Secret types and the keys each requires.
const REQUIRED_KEYS: &[(&str, &[&str])] = &[
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
];

/// Folds `stringData` into `data` and defaults the type to `Opaque`.
pub fn default_secret(s: &mut Secret) {
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    s.type_.get_or_insert_with(|| "Opaque".into());
}

pub fn validate_secret(s: &Secret) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut all: BTreeMap<String, usize> = s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.len())).collect();
    for (k, v) in s.string_data.iter().flatten() {
        all.insert(k.clone(), v.len());
    }
    keys("data", all.keys(), &mut causes);
    if all.iter().map(|(k, n)| k.len() + n).sum::<usize>() > MAX_SIZE {
        causes.push(Cause::new("data", format!("Too long: must have at most {MAX_SIZE} bytes")));
    }
    let kind = s.type_.as_deref().unwrap_or("Opaque");
    if let Some((_, required)) = REQUIRED_KEYS.iter().find(|(t, _)| *t == kind) {
        for key in *required {
            if !all.contains_key(*key) {
                causes.push(Cause::required(format!("data[{key}]")));
            }
        }
    }
    if kind == "kubernetes.io/basic-auth" && !all.contains_key("username") && !all.contains_key("password") {
        causes.push(Cause::required("data[username]"));
    }
    causes
}

pub fn default_storage_class(sc: &mut StorageClass) {
    sc.reclaim_policy.get_or_insert_with(|| "Delete".into());
    sc.volume_binding_mode.get_or_insert_with(|| "Immediate".into());
}

pub fn validate_storage_class(sc: &StorageClass) -> Vec<Cause> {
    let mut causes = Vec::new();
    if sc.provisioner.is_empty() {
        causes.push(Cause::required("provisioner"));
    }
    if let Some(p) = sc.reclaim_policy.as_deref().filter(|p| !matches!(*p, "Delete" | "Retain")) {
        causes.push(Cause::unsupported("reclaimPolicy", p, &["Delete", "Retain"]));
    }
    if let Some(m) = sc.volume_binding_mode.as_deref().filter(|m| !matches!(*m, "Immediate" | "WaitForFirstConsumer")) {
        causes.push(Cause::unsupported("volumeBindingMode", m, &["Immediate", "WaitForFirstConsumer"]));
    }
    causes
}

/// Whether a StorageClass object is marked as the default.
pub fn is_default_class(sc: &Value) -> bool {
    sc.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_CLASS)).and_then(Value::as_str) == Some("true")
}

/// A Secret's data decoded (`data` is base64 in JSON).
pub fn secret_data(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::objects::{admit, resource};

    #[test]
    fn secret_string_data_becomes_data() {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "data": {"user": "YWRtaW4="}, "stringData": {"password": "s3cr3t"}});
        let a = admit(&resource::SECRETS, s).unwrap();
        assert_eq!(a.object["type"], "Opaque");
        assert_eq!(a.object["data"]["password"], "czNjcjN0");
        assert!(a.object.get("stringData").is_none(), "stringData is never stored: {}", a.object);
        let data = super::secret_data(&a.object);
        assert_eq!(data["user"], b"admin");
    }

    #[test]
    fn bad_config_is_invalid() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"bad key": "x"}});
        let e = admit(&resource::CONFIG_MAPS, cm).unwrap_err();
        assert!(e.to_string().contains("data[bad key]"), "{e}");
        let tls = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}});
        let e = admit(&resource::SECRETS, tls).unwrap_err();
        assert!(e.to_string().contains("data[tls.key]: Required value"), "{e}");
        let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}, "provisioner": "x", "reclaimPolicy": "Keep"});
        let e = admit(&resource::STORAGE_CLASSES, sc).unwrap_err();
        assert!(e.to_string().contains("reclaimPolicy: Unsupported value"), "{e}");
    }

    #[test]
    fn storage_class_defaults() {
        let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}, "provisioner": "skerry.io/local-path"});
        let a = admit(&resource::STORAGE_CLASSES, sc).unwrap();
        assert_eq!(a.object["reclaimPolicy"], "Delete");
        assert_eq!(a.object["volumeBindingMode"], "Immediate");
    }
}
