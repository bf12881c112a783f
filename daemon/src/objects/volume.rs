//! Pod volumes and volume mounts: the API server's path and reference rules, with its messages
//! and field paths (`ValidateVolumes`, `ValidateVolumeMounts` and their helpers in Kubernetes'
//! `pkg/apis/core/validation`), so that a path that would leave its volume is refused at
//! admission, for pods and for the pod templates of workloads alike.
//!
//! Kubernetes' quirks are kept on purpose, since clients match on them: `subPath`,
//! `subPathExpr`, `mountPropagation` and `recursiveReadOnly` errors name the list
//! (`volumeMounts.subPath`), not the item; a `downwardAPI` item's errors name
//! `downwardAPI.path`; projected duplicates name the volume's `projected` field.
//!
//! Not checked (Skerry mounts none of these): `volumeDevices`, the fields of network and cloud
//! volume sources, `fieldRef` paths.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, PodSpec, Volume};

use super::validation::dns1123_label;
use super::Cause;

const FILE_MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const ONE_TYPE: &str = "Forbidden: may not specify more than 1 volume type";

/// The API server's defaulting (`SetDefaults_Volume`): a volume without a source is an
/// `emptyDir`.
pub fn default(spec: &mut PodSpec) {
    for v in spec.volumes.iter_mut().flatten() {
        if sources(v).is_empty() {
            v.empty_dir = Some(Default::default());
        }
    }
}

/// Checks `spec.volumes` (`ValidateVolumes`); returns the names of the valid volumes, which
/// mounts may name.
pub fn validate_volumes(spec: &PodSpec, causes: &mut Vec<Cause>) -> HashSet<String> {
    let mut valid = HashSet::new();
    let mut seen = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let at = format!("spec.volumes[{i}]");
        let mut errs = Vec::new();
        validate_source(v, &at, &mut errs);
        if v.name.is_empty() {
            errs.push(Cause::required(format!("{at}.name")));
        } else if let Err(e) = dns1123_label(&v.name) {
            errs.push(Cause::invalid(format!("{at}.name"), &v.name, e));
        }
        if seen.contains(&v.name) {
            errs.push(Cause::new(format!("{at}.name"), format!("Duplicate value: {:?}", v.name)));
        }
        if errs.is_empty() {
            seen.insert(v.name.clone());
            valid.insert(v.name.clone());
        }
        causes.extend(errs);
    }
    valid
}

/// Checks one container's `volumeMounts` (`ValidateVolumeMounts`); `path` is the container's
/// field path, e.g. `spec.containers[0]`.
pub fn validate_mounts(c: &Container, path: &str, volumes: &HashSet<String>, causes: &mut Vec<Cause>) {
    let list = format!("{path}.volumeMounts");
    let mut mount_points = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let at = format!("{list}[{j}]");
        if m.name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        if !volumes.contains(&m.name) {
            causes.push(Cause::new(format!("{at}.name"), format!("Not found: {:?}", m.name)));
        }
        if m.mount_path.is_empty() {
            causes.push(Cause::required(format!("{at}.mountPath")));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            causes.push(Cause::invalid(format!("{at}.mountPath"), &m.mount_path, "must be unique".into()));
        }
        let sub_path = m.sub_path.as_deref().unwrap_or("");
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &format!("{list}.subPath"), causes);
        }
        if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            if !sub_path.is_empty() {
                causes.push(Cause::invalid(
                    format!("{at}.subPathExpr"),
                    expr,
                    "subPathExpr and subPath are mutually exclusive".into(),
                ));
            }
            local_descending_path(expr, &format!("{list}.subPathExpr"), causes);
        }
        if let Some(p) = m.mount_propagation.as_deref() {
            let field = format!("{list}.mountPropagation");
            if !matches!(p, "Bidirectional" | "HostToContainer" | "None") {
                causes.push(Cause::unsupported(field.clone(), p, &["Bidirectional", "HostToContainer", "None"]));
            }
            let privileged = c.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
            if p == "Bidirectional" && !privileged {
                causes.push(Cause::new(
                    field,
                    "Forbidden: Bidirectional mount propagation is available only to privileged containers".into(),
                ));
            }
        }
        if let Some(rro) = m.recursive_read_only.as_deref() {
            let field = format!("{list}.recursiveReadOnly");
            match rro {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if m.read_only != Some(true) {
                        causes.push(Cause::new(
                            field.clone(),
                            "Forbidden: may only be specified when readOnly is true".into(),
                        ));
                    }
                    if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                        causes.push(Cause::new(
                            field,
                            "Forbidden: may only be specified when mountPropagation is None or not specified".into(),
                        ));
                    }
                }
                other => causes.push(Cause::unsupported(field, other, &["Disabled", "Enabled", "IfPossible"])),
            }
        }
    }
}

/// The fields of the volume's sources that are set, in the order Kubernetes checks them.
fn sources(v: &Volume) -> Vec<&'static str> {
    let set = [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephFS", v.cephfs.is_some()),
        ("quobyte", v.quobyte.is_some()),
        // Sic: Kubernetes names this field `downwarAPI` in its "more than 1" error.
        ("downwarAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("configMap", v.config_map.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("storageos", v.storageos.is_some()),
        ("projected", v.projected.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ];
    set.into_iter().filter(|(_, s)| *s).map(|(f, _)| f).collect()
}

/// `validateVolumeSource`: one source, and the path rules of the sources Skerry can mount or
/// that carry paths.
fn validate_source(v: &Volume, at: &str, causes: &mut Vec<Cause>) {
    let set = sources(v);
    for extra in set.iter().skip(1) {
        causes.push(Cause::new(format!("{at}.{extra}"), ONE_TYPE.into()));
    }
    match set.first().copied() {
        Some("hostPath") => {
            let h = v.host_path.as_ref().expect("set");
            let field = format!("{at}.hostPath");
            if h.path.is_empty() {
                causes.push(Cause::required(format!("{field}.path")));
                return;
            }
            no_backsteps(&h.path, &format!("{field}.path"), causes);
            if let Some(t) = h.type_.as_deref() {
                let supported = [
                    "",
                    "BlockDevice",
                    "CharDevice",
                    "Directory",
                    "DirectoryOrCreate",
                    "File",
                    "FileOrCreate",
                    "Socket",
                ];
                if !supported.contains(&t) {
                    causes.push(Cause::unsupported(format!("{field}.type"), t, &supported));
                }
            }
        }
        Some("gitRepo") => {
            let g = v.git_repo.as_ref().expect("set");
            if g.repository.is_empty() {
                causes.push(Cause::required(format!("{at}.gitRepo.repository")));
            }
            local_descending_path(g.directory.as_deref().unwrap_or(""), &format!("{at}.gitRepo.directory"), causes);
        }
        Some("secret") => {
            let s = v.secret.as_ref().expect("set");
            let field = format!("{at}.secret");
            if s.secret_name.as_deref().unwrap_or("").is_empty() {
                causes.push(Cause::required(format!("{field}.secretName")));
            }
            file_mode(s.default_mode, &format!("{field}.defaultMode"), causes);
            for (k, item) in s.items.iter().flatten().enumerate() {
                key_to_path(item, &format!("{field}.items[{k}]"), causes);
            }
        }
        Some("persistentVolumeClaim") if v.persistent_volume_claim.as_ref().expect("set").claim_name.is_empty() => {
            causes.push(Cause::required(format!("{at}.persistentVolumeClaim.claimName")));
        }
        Some("downwarAPI") => {
            let d = v.downward_api.as_ref().expect("set");
            let field = format!("{at}.downwardAPI");
            file_mode(d.default_mode, &format!("{field}.defaultMode"), causes);
            for file in d.items.iter().flatten() {
                downward_api_file(file, &field, causes);
            }
        }
        Some("configMap") => {
            let c = v.config_map.as_ref().expect("set");
            let field = format!("{at}.configMap");
            if c.name.is_empty() {
                causes.push(Cause::required(format!("{field}.name")));
            }
            file_mode(c.default_mode, &format!("{field}.defaultMode"), causes);
            for (k, item) in c.items.iter().flatten().enumerate() {
                key_to_path(item, &format!("{field}.items[{k}]"), causes);
            }
        }
        Some("projected") => projected(v, &format!("{at}.projected"), causes),
        _ => {}
    }
}

/// `validateProjectedVolumeSource` and `validateProjectionSources`.
fn projected(v: &Volume, field: &str, causes: &mut Vec<Cause>) {
    let p = v.projected.as_ref().expect("set");
    file_mode(p.default_mode, &format!("{field}.defaultMode"), causes);
    let mut paths = HashSet::new();
    for (i, source) in p.sources.iter().flatten().enumerate() {
        let at = format!("{field}.sources[{i}]");
        let mut kinds = 0;
        let named = [
            ("secret", source.secret.as_ref().map(|s| (&s.name, &s.items))),
            ("configMap", source.config_map.as_ref().map(|c| (&c.name, &c.items))),
        ];
        for (kind, src) in named {
            let Some((name, items)) = src else { continue };
            kinds += 1;
            if name.is_empty() {
                causes.push(Cause::required(format!("{at}.{kind}.name")));
            }
            for (k, item) in items.iter().flatten().enumerate() {
                key_to_path(item, &format!("{at}.{kind}.items[{k}]"), causes);
                if !item.path.is_empty() && !paths.insert(item.path.clone()) {
                    causes.push(Cause::invalid(field, name, "conflicting duplicate paths".into()));
                }
            }
        }
        if let Some(d) = &source.downward_api {
            kinds += 1;
            for file in d.items.iter().flatten() {
                downward_api_file(file, &format!("{at}.downwardAPI"), causes);
                if !file.path.is_empty() && !paths.insert(file.path.clone()) {
                    causes.push(Cause::invalid(field, &file.path, "conflicting duplicate paths".into()));
                }
            }
        }
        if let Some(t) = &source.service_account_token {
            kinds += 1;
            let expiry = format!("{at}.serviceAccountToken.expirationSeconds");
            match t.expiration_seconds {
                Some(s) if s < 600 => causes.push(Cause::new(
                    expiry,
                    format!("Invalid value: {s}: may not specify a duration less than 10 minutes"),
                )),
                Some(s) if s > 1 << 32 => causes.push(Cause::new(
                    expiry,
                    format!("Invalid value: {s}: may not specify a duration larger than 2^32 seconds"),
                )),
                _ => {}
            }
            if t.path.is_empty() {
                causes.push(Cause::required(format!("{field}.path")));
            } else {
                local_non_reserved_path(&t.path, &format!("{field}.path"), causes);
            }
        }
        if source.cluster_trust_bundle.is_some() {
            kinds += 1;
        }
        if kinds > 1 {
            causes.push(Cause::new(at, ONE_TYPE.into()));
        }
    }
}

/// `validateKeyToPath`: an item of a ConfigMap or Secret volume or projection.
fn key_to_path(item: &KeyToPath, at: &str, causes: &mut Vec<Cause>) {
    if item.key.is_empty() {
        causes.push(Cause::required(format!("{at}.key")));
    }
    if item.path.is_empty() {
        causes.push(Cause::required(format!("{at}.path")));
    }
    local_non_reserved_path(&item.path, &format!("{at}.path"), causes);
    file_mode(item.mode, &format!("{at}.mode"), causes);
}

/// `validateDownwardAPIVolumeFile`; Kubernetes names the source (`at`), not the item.
fn downward_api_file(file: &DownwardAPIVolumeFile, at: &str, causes: &mut Vec<Cause>) {
    if file.path.is_empty() {
        causes.push(Cause::required(format!("{at}.path")));
    }
    local_non_reserved_path(&file.path, &format!("{at}.path"), causes);
    match (&file.field_ref, &file.resource_field_ref) {
        (Some(_), Some(_)) => causes.push(Cause::invalid(
            at,
            "resource",
            "fieldRef and resourceFieldRef can not be specified simultaneously".into(),
        )),
        (None, None) => {
            causes.push(Cause::new(at, "Required value: one of fieldRef and resourceFieldRef is required".into()))
        }
        _ => {}
    }
    file_mode(file.mode, &format!("{at}.mode"), causes);
}

fn file_mode(mode: Option<i32>, at: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
        // An integer: Kubernetes prints it unquoted.
        causes.push(Cause::new(at, format!("Invalid value: {m}: {FILE_MODE}")));
    }
}

/// `validateLocalDescendingPath`: relative, no `..` element.
fn local_descending_path(path: &str, at: &str, causes: &mut Vec<Cause>) {
    if path.starts_with('/') {
        causes.push(Cause::invalid(at, path, "must be a relative path".into()));
    }
    no_backsteps(path, at, causes);
}

/// `validatePathNoBacksteps`: no `..` element (one error however many there are).
fn no_backsteps(path: &str, at: &str, causes: &mut Vec<Cause>) {
    if path.split('/').any(|part| part == "..") {
        causes.push(Cause::invalid(at, path, "must not contain '..'".into()));
    }
}

/// `ValidateLocalNonReservedPath`: a local descending path that does not start with `..`
/// (kubelet's atomic writer keeps `..data` and `..<timestamp>` there).
fn local_non_reserved_path(path: &str, at: &str, causes: &mut Vec<Cause>) {
    local_descending_path(path, at, causes);
    if path.starts_with("..") && !path.starts_with("../") {
        causes.push(Cause::invalid(at, path, "must not start with '..'".into()));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{json, Value};

    use super::super::{admit, pod, resource};

    fn causes(spec: &Value) -> Vec<String> {
        let pod: Pod = serde_json::from_value(json!({ "spec": spec })).unwrap();
        pod::validate(&pod).iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    /// A pod with `volumes` and one container mounting `mounts`.
    fn spec(volumes: Value, mounts: Value) -> Value {
        json!({"volumes": volumes, "containers": [{"name": "c", "image": "i", "volumeMounts": mounts}]})
    }

    fn empty_dir(name: &str) -> Value {
        json!({"name": name, "emptyDir": {}})
    }

    fn mount(name: &str, at: &str, extra: Value) -> Value {
        let mut m = json!({"name": name, "mountPath": at});
        super::super::merge_patch(&mut m, &extra);
        m
    }

    #[test]
    fn mount_rules() {
        let v = || json!([empty_dir("v")]);
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            (
                "subPath climbing out",
                spec(v(), json!([mount("v", "/d", json!({"subPath": "../../../etc"}))])),
                vec![r#"spec.containers[0].volumeMounts.subPath: Invalid value: "../../../etc": must not contain '..'"#],
            ),
            (
                "subPath climbing out in the middle",
                spec(v(), json!([mount("v", "/d", json!({"subPath": "a/../../b"}))])),
                vec![r#"spec.containers[0].volumeMounts.subPath: Invalid value: "a/../../b": must not contain '..'"#],
            ),
            (
                "absolute subPath",
                spec(v(), json!([mount("v", "/d", json!({"subPath": "/etc"}))])),
                vec![r#"spec.containers[0].volumeMounts.subPath: Invalid value: "/etc": must be a relative path"#],
            ),
            (
                "names that merely contain dots are fine",
                spec(v(), json!([mount("v", "/d", json!({"subPath": "a/..b/c../..data"}))])),
                vec![],
            ),
            (
                "subPathExpr with subPath",
                spec(v(), json!([mount("v", "/d", json!({"subPath": "a", "subPathExpr": "$(POD)"}))])),
                vec![
                    r#"spec.containers[0].volumeMounts[0].subPathExpr: Invalid value: "$(POD)": subPathExpr and subPath are mutually exclusive"#,
                ],
            ),
            (
                "absolute subPathExpr",
                spec(v(), json!([mount("v", "/d", json!({"subPathExpr": "/$(POD)/.."}))])),
                vec![
                    r#"spec.containers[0].volumeMounts.subPathExpr: Invalid value: "/$(POD)/..": must be a relative path"#,
                    r#"spec.containers[0].volumeMounts.subPathExpr: Invalid value: "/$(POD)/..": must not contain '..'"#,
                ],
            ),
            (
                "empty mountPath",
                spec(v(), json!([mount("v", "", json!({}))])),
                vec!["spec.containers[0].volumeMounts[0].mountPath: Required value"],
            ),
            (
                "mountPath twice in a container",
                spec(json!([empty_dir("v"), empty_dir("w")]), json!([mount("v", "/d", json!({})), mount("w", "/d", json!({}))])),
                vec![r#"spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/d": must be unique"#],
            ),
            (
                "a volume the pod does not have",
                spec(v(), json!([mount("nope", "/d", json!({}))])),
                vec![r#"spec.containers[0].volumeMounts[0].name: Not found: "nope""#],
            ),
            (
                "no volume name",
                spec(v(), json!([mount("", "/d", json!({}))])),
                vec![
                    "spec.containers[0].volumeMounts[0].name: Required value",
                    r#"spec.containers[0].volumeMounts[0].name: Not found: """#,
                ],
            ),
            (
                "mount propagation",
                spec(
                    json!([empty_dir("v"), empty_dir("w")]),
                    json!([
                        mount("v", "/a", json!({"mountPropagation": "Sideways"})),
                        mount("w", "/b", json!({"mountPropagation": "Bidirectional"}))
                    ]),
                ),
                vec![
                    r#"spec.containers[0].volumeMounts.mountPropagation: Unsupported value: "Sideways": supported values: "Bidirectional", "HostToContainer", "None""#,
                    "spec.containers[0].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers",
                ],
            ),
            (
                "recursiveReadOnly needs readOnly",
                spec(v(), json!([mount("v", "/d", json!({"recursiveReadOnly": "Enabled"}))])),
                vec!["spec.containers[0].volumeMounts.recursiveReadOnly: Forbidden: may only be specified when readOnly is true"],
            ),
            (
                "init containers too",
                json!({"volumes": v(), "containers": [{"name": "c", "image": "i"}],
                       "initContainers": [{"name": "init", "image": "i", "volumeMounts": [mount("v", "/d", json!({"subPath": ".."}))]}]}),
                vec![r#"spec.initContainers[0].volumeMounts.subPath: Invalid value: "..": must not contain '..'"#],
            ),
        ];
        for (what, spec, want) in cases {
            assert_eq!(causes(&spec), want, "{what}");
        }
    }

    #[test]
    fn volume_rules() {
        let mounted = |volume: Value| spec(json!([volume]), json!([]));
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            (
                "configMap item climbing out",
                mounted(json!({"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../k"}]}})),
                vec![r#"spec.volumes[0].configMap.items[0].path: Invalid value: "../k": must not contain '..'"#],
            ),
            (
                "absolute configMap item",
                mounted(json!({"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": "/etc/k"}]}})),
                vec![r#"spec.volumes[0].configMap.items[0].path: Invalid value: "/etc/k": must be a relative path"#],
            ),
            (
                "item starting with .. (the atomic writer's names)",
                mounted(json!({"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": "..data"}]}})),
                vec![r#"spec.volumes[0].configMap.items[0].path: Invalid value: "..data": must not start with '..'"#],
            ),
            (
                "secret item without key or path, bad modes",
                mounted(json!({"name": "v", "secret": {"secretName": "s", "defaultMode": 1000, "items": [{"key": "", "path": "", "mode": -1}]}})),
                vec![
                    "spec.volumes[0].secret.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
                    "spec.volumes[0].secret.items[0].key: Required value",
                    "spec.volumes[0].secret.items[0].path: Required value",
                    "spec.volumes[0].secret.items[0].mode: Invalid value: -1: must be a number between 0 and 0777 (octal), both inclusive",
                ],
            ),
            (
                "secret and configMap names",
                spec(json!([{"name": "s", "secret": {}}, {"name": "c", "configMap": {}}]), json!([])),
                vec!["spec.volumes[0].secret.secretName: Required value", "spec.volumes[1].configMap.name: Required value"],
            ),
            (
                "downwardAPI items name the source, not the item",
                mounted(json!({"name": "v", "downwardAPI": {"items": [{"path": "../labels"}]}})),
                vec![
                    r#"spec.volumes[0].downwardAPI.path: Invalid value: "../labels": must not contain '..'"#,
                    "spec.volumes[0].downwardAPI: Required value: one of fieldRef and resourceFieldRef is required",
                ],
            ),
            (
                "projected sources",
                mounted(json!({"name": "v", "projected": {"sources": [
                    {"secret": {"name": "s", "items": [{"key": "a", "path": "..a"}, {"key": "b", "path": "b"}]}},
                    {"configMap": {"name": "cm", "items": [{"key": "b", "path": "b"}]}},
                    {"serviceAccountToken": {"path": "/token", "expirationSeconds": 60}},
                    {"downwardAPI": {"items": [{"path": "x/../../y", "fieldRef": {"fieldPath": "metadata.name"}}]}, "configMap": {"name": "two"}}
                ]}})),
                vec![
                    r#"spec.volumes[0].projected.sources[0].secret.items[0].path: Invalid value: "..a": must not start with '..'"#,
                    r#"spec.volumes[0].projected: Invalid value: "cm": conflicting duplicate paths"#,
                    "spec.volumes[0].projected.sources[2].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
                    r#"spec.volumes[0].projected.path: Invalid value: "/token": must be a relative path"#,
                    r#"spec.volumes[0].projected.sources[3].downwardAPI.path: Invalid value: "x/../../y": must not contain '..'"#,
                    "spec.volumes[0].projected.sources[3]: Forbidden: may not specify more than 1 volume type",
                ],
            ),
            (
                "hostPath",
                spec(
                    json!([{"name": "a", "hostPath": {"path": "/srv/../etc"}}, {"name": "b", "hostPath": {"path": "/srv", "type": "Dir"}}, {"name": "c", "hostPath": {"path": ""}}]),
                    json!([]),
                ),
                vec![
                    r#"spec.volumes[0].hostPath.path: Invalid value: "/srv/../etc": must not contain '..'"#,
                    r#"spec.volumes[1].hostPath.type: Unsupported value: "Dir": supported values: "", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket""#,
                    "spec.volumes[2].hostPath.path: Required value",
                ],
            ),
            (
                "gitRepo directory",
                mounted(json!({"name": "v", "gitRepo": {"repository": "r", "directory": "/abs"}})),
                vec![r#"spec.volumes[0].gitRepo.directory: Invalid value: "/abs": must be a relative path"#],
            ),
            (
                "claim name",
                mounted(json!({"name": "v", "persistentVolumeClaim": {"claimName": ""}})),
                vec!["spec.volumes[0].persistentVolumeClaim.claimName: Required value"],
            ),
            (
                "an invalid volume cannot be mounted",
                spec(
                    json!([{"name": "v", "emptyDir": {}, "hostPath": {"path": "/srv"}}, empty_dir("Bad_Name"), empty_dir("w"), empty_dir("w")]),
                    json!([mount("v", "/a", json!({})), mount("w", "/b", json!({}))]),
                ),
                vec![
                    "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
                    "spec.volumes[1].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc'); \"Bad_Name\" is not one",
                    r#"spec.volumes[3].name: Duplicate value: "w""#,
                    r#"spec.containers[0].volumeMounts[0].name: Not found: "v""#,
                ],
            ),
            (
                "every kind, valid",
                spec(
                    json!([
                        empty_dir("e"),
                        {"name": "h", "hostPath": {"path": "/srv/data", "type": "DirectoryOrCreate"}},
                        {"name": "c", "configMap": {"name": "cm", "defaultMode": 0o644, "items": [{"key": "k", "path": "conf/app.yaml", "mode": 0o400}]}},
                        {"name": "s", "secret": {"secretName": "s", "items": [{"key": "k", "path": "k"}]}},
                        {"name": "p", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                        {"name": "x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}, {"secret": {"name": "s"}}]}},
                        {"name": "n"}
                    ]),
                    json!([mount("e", "/e", json!({"subPath": "a/b"})), mount("n", "/n", json!({"subPathExpr": "$(POD_NAME)"}))]),
                ),
                vec![],
            ),
        ];
        for (what, spec, want) in cases {
            assert_eq!(causes(&spec), want, "{what}");
        }
    }

    #[test]
    fn a_volume_without_source_is_an_empty_dir() {
        let mut p: Pod = serde_json::from_value(json!({"spec": spec(json!([{"name": "n"}]), json!([]))})).unwrap();
        pod::default(&mut p);
        assert!(p.spec.unwrap().volumes.unwrap()[0].empty_dir.is_some());
    }

    #[test]
    fn templates_follow_the_same_rules() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": spec(json!([empty_dir("v")]), json!([mount("v", "/d", json!({"subPath": "../../../etc"}))]))
            }}
        });
        let e = admit(&resource::DEPLOYMENTS, d).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"Deployment.apps "web" is invalid: [spec.template.spec.containers[0].volumeMounts.subPath: Invalid value: "../../../etc": must not contain '..']"#
        );
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": spec(json!([empty_dir("v")]), json!([mount("v", "/d", json!({"subPath": "../../../etc"}))]))});
        assert!(admit(&resource::PODS, p).unwrap_err().to_string().contains("spec.containers[0].volumeMounts.subPath"));
    }
}
