//! Pod volumes: planned from the pod spec, set up on the node before containers start, bound
//! into containers, and removed with the pod.
//!
//! Layout, as kubelet's: `<pod dir>/volumes/<kind>/<name>` for the volumes the pod owns
//! (`kubernetes.io~empty-dir`, `kubernetes.io~configmap`, `kubernetes.io~secret`); `hostPath`
//! and `persistentVolumeClaim` volumes are bound from where they are on the host.
//!
//! - `emptyDir`: a directory; `medium: Memory` is a tmpfs (`size=` from `sizeLimit`).
//! - `hostPath`: checked (or created) per `type` ([`check_host_path`], kubelet's messages).
//! - `configMap`/`secret`: files per key or per `items`, with `defaultMode`/`mode`, written by
//!   the [`AtomicWriter`] (kubelet's layout: `..data` → `..<timestamp>`, one symlink per
//!   top-level name) so a changed object reaches running pods at once; a Secret's files live on
//!   a tmpfs (never on disk) below a 0700 directory. `optional` and missing: an empty volume.
//! - `persistentVolumeClaim`: the claim must be `Bound`; its volume's `hostPath` (or `local`)
//!   path is bound, read-only when the source says so.
//!
//! Not done: `projected`, `downwardAPI` and every network or cloud volume (the pod waits with
//! a `FailedMount` event naming the type), `fsGroup` ownership, `mountPropagation`.
//!
//! Invariant: [`plan`], [`project`], [`claim_path`], [`check_sub_path`] and [`volume_dir`] are
//! pure; the IO is in [`set_up`], [`AtomicWriter`], [`check_host_path`], [`container_mounts`]
//! (subPath creation) and [`tear_down`]; [`PodVolumes`] reads the store and drives both.
//! Secret contents are never logged nor put in events or errors.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::env;
use crate::objects::{config, meta, quantity, resource};
use crate::runtime::BindMount;
use crate::store::Store;

pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const SECRET: &str = "kubernetes.io~secret";

/// A volume that cannot be set up (yet); the `Display` text is the `FailedMount` event's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp { volume: String, message: String },
    #[error("Unable to attach or mount volumes: unmounted volumes=[{volume}], unattached volumes=[{volume}]: error processing PVC {namespace}/{claim}: {message}")]
    Claim { volume: String, namespace: String, claim: String, message: String },
}

/// A `hostPath` `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    Unchecked,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    pub fn parse(s: &str) -> Result<HostPathType, String> {
        Ok(match s {
            "" => HostPathType::Unchecked,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            other => return Err(format!("invalid HostPathType {other:?}")),
        })
    }
}

/// One key of a ConfigMap or Secret projected to a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

/// A `configMap` or `secret` volume source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub name: String,
    pub items: Option<Vec<Item>>,
    pub default_mode: u32,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    EmptyDir { memory: bool, size_limit: Option<u64> },
    HostPath { path: PathBuf, kind: HostPathType },
    ConfigMap(Projection),
    Secret(Projection),
    Claim { claim: String, read_only: bool },
}

/// A planned pod volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub source: Source,
}

impl Volume {
    /// The directory the pod owns for this volume, if it owns one.
    pub fn dir(&self, pod_dir: &Path) -> Option<PathBuf> {
        let kind = match self.source {
            Source::EmptyDir { .. } => EMPTY_DIR,
            Source::ConfigMap(_) => CONFIG_MAP,
            Source::Secret(_) => SECRET,
            _ => return None,
        };
        Some(volume_dir(pod_dir, kind, &self.name))
    }
}

/// `<pod dir>/volumes/<kind>/<name>`.
pub fn volume_dir(pod_dir: &Path, kind: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(kind).join(name)
}

fn mode_of(v: &Value) -> Option<u32> {
    v.as_u64().map(|m| (m & 0o7777) as u32)
}

fn projection(src: &Value, name_field: &str) -> Projection {
    let items = src["items"].as_array().map(|items| {
        items
            .iter()
            .map(|i| Item {
                key: i["key"].as_str().unwrap_or("").to_string(),
                path: i["path"].as_str().unwrap_or("").to_string(),
                mode: mode_of(&i["mode"]),
            })
            .collect()
    });
    Projection {
        name: src[name_field].as_str().unwrap_or("").to_string(),
        items,
        default_mode: mode_of(&src["defaultMode"]).unwrap_or(0o644),
        optional: src["optional"].as_bool().unwrap_or(false),
    }
}

/// The pod's volumes, or the first one Skerry cannot set up.
pub fn plan(pod: &Value) -> Result<Vec<Volume>, VolumeError> {
    let mut out = Vec::new();
    for v in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("").to_string();
        let fail = |message: String| VolumeError::SetUp { volume: name.clone(), message };
        let source = if let Some(e) = v.get("emptyDir").filter(|e| e.is_object()) {
            let size_limit = match e["sizeLimit"].as_str() {
                Some(q) => Some(quantity::parse_bytes(q).map_err(|e| fail(format!("sizeLimit: {e}")))?),
                None => e["sizeLimit"].as_u64(),
            };
            Source::EmptyDir { memory: e["medium"].as_str() == Some("Memory"), size_limit }
        } else if let Some(h) = v.get("hostPath").filter(|e| e.is_object()) {
            let kind = HostPathType::parse(h["type"].as_str().unwrap_or("")).map_err(fail)?;
            Source::HostPath { path: PathBuf::from(h["path"].as_str().unwrap_or("")), kind }
        } else if let Some(c) = v.get("configMap").filter(|e| e.is_object()) {
            Source::ConfigMap(projection(c, "name"))
        } else if let Some(s) = v.get("secret").filter(|e| e.is_object()) {
            Source::Secret(projection(s, "secretName"))
        } else if let Some(c) = v.get("persistentVolumeClaim").filter(|e| e.is_object()) {
            Source::Claim {
                claim: c["claimName"].as_str().unwrap_or("").to_string(),
                read_only: c["readOnly"].as_bool().unwrap_or(false),
            }
        } else {
            let kind =
                v.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()).unwrap_or_else(|| "(none)".into());
            return Err(fail(format!("volume type {kind:?} is not supported by skerry (supported: emptyDir, hostPath, configMap, secret, persistentVolumeClaim)")));
        };
        out.push(Volume { name, source });
    }
    Ok(out)
}

/// A relative path inside a volume: no absolute path, no `..` component.
pub fn check_sub_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("{path:?} must be a relative path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

/// One file of a projected volume: its content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The files of a `configMap`/`secret` volume (`data` is `None` when the object is missing).
/// `what` is `configmap` or `secret`, for kubelet's messages.
pub fn project(
    what: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    p: &Projection,
) -> Result<BTreeMap<String, FileSpec>, String> {
    let Some(data) = data else {
        return if p.optional { Ok(BTreeMap::new()) } else { Err(format!("{what} {:?} not found", p.name)) };
    };
    let mut out = BTreeMap::new();
    match &p.items {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), FileSpec { data: v.clone(), mode: p.default_mode });
            }
        }
        Some(items) => {
            for i in items {
                check_sub_path(&i.path).map_err(|e| format!("item path {e}"))?;
                if i.path.is_empty() || i.path.starts_with("..") {
                    return Err(format!("item path {:?} must be a relative path not starting with '..'", i.path));
                }
                match data.get(&i.key) {
                    Some(v) => {
                        out.insert(
                            i.path.clone(),
                            FileSpec { data: v.clone(), mode: i.mode.unwrap_or(p.default_mode) },
                        );
                    }
                    None if p.optional => {}
                    None if what == "secret" => return Err(format!("references non-existent secret key: {}", i.key)),
                    None => return Err(format!("configmap references non-existent config key: {}", i.key)),
                }
            }
        }
    }
    Ok(out)
}

/// The host path a bound claim's volume provides, with its `hostPath` type.
pub fn claim_path(
    namespace: &str,
    claim_name: &str,
    claim: Option<&Value>,
    pv: Option<&Value>,
) -> Result<(PathBuf, HostPathType), String> {
    let Some(claim) = claim else {
        return Err(format!("failed to fetch PVC from API server: persistentvolumeclaims {claim_name:?} not found"));
    };
    let volume = claim.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("");
    if claim.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") || volume.is_empty() {
        return Err("PVC is not bound".into());
    }
    let Some(pv) = pv else {
        return Err(format!("failed to fetch PV {volume:?} from API server: persistentvolumes {volume:?} not found"));
    };
    let bound_to = (
        pv.pointer("/spec/claimRef/namespace").and_then(Value::as_str),
        pv.pointer("/spec/claimRef/name").and_then(Value::as_str),
    );
    if bound_to != (Some(namespace), Some(claim_name)) {
        return Err(format!("PV {volume:?} is not bound to claim {namespace}/{claim_name}"));
    }
    if let Some(path) = pv.pointer("/spec/hostPath/path").and_then(Value::as_str) {
        let kind = HostPathType::parse(pv.pointer("/spec/hostPath/type").and_then(Value::as_str).unwrap_or(""))?;
        return Ok((PathBuf::from(path), kind));
    }
    if let Some(path) = pv.pointer("/spec/local/path").and_then(Value::as_str) {
        return Ok((PathBuf::from(path), HostPathType::Directory));
    }
    Err(format!("PV {volume:?} has no hostPath or local path; skerry mounts only those"))
}

// ---------------------------------------------------------------------------------------------
// IO.

/// kubelet's hostPath type check (creating for the `…OrCreate` types).
pub fn check_host_path(path: &Path, kind: HostPathType) -> Result<(), String> {
    let shown = path.display();
    let failed = |what: &str| format!("hostPath type check failed: {shown} is not {what}");
    let meta = std::fs::metadata(path);
    match kind {
        HostPathType::Unchecked => Ok(()),
        HostPathType::DirectoryOrCreate => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(failed("a directory")),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(|e| format!("creating {shown}: {e}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("chmod {shown}: {e}"))
            }
        },
        HostPathType::Directory => meta.ok().filter(|m| m.is_dir()).map(|_| ()).ok_or_else(|| failed("a directory")),
        HostPathType::FileOrCreate => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(failed("a file")),
            Err(_) => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("creating {shown}: {e}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| format!("chmod {shown}: {e}"))
            }
        },
        HostPathType::File => meta.ok().filter(|m| m.is_file()).map(|_| ()).ok_or_else(|| failed("a file")),
        HostPathType::Socket => {
            meta.ok().filter(|m| m.file_type().is_socket()).map(|_| ()).ok_or_else(|| failed("a socket file"))
        }
        HostPathType::CharDevice => {
            meta.ok().filter(|m| m.file_type().is_char_device()).map(|_| ()).ok_or_else(|| failed("a character device"))
        }
        HostPathType::BlockDevice => {
            meta.ok().filter(|m| m.file_type().is_block_device()).map(|_| ()).ok_or_else(|| failed("a block device"))
        }
    }
}

/// Mount points at or below `dir` (from `/proc/self/mountinfo`), deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mount_point(dir: &Path) -> bool {
    mounts_below(dir).iter().any(|m| m == dir)
}

fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let mut data = String::from("mode=0755");
    if let Some(s) = size {
        data.push_str(&format!(",size={s}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", dir.display()))
}

/// Unmounts every tmpfs of the pod's volumes; true when nothing is left mounted below them
/// (only then may the pod's directory be removed).
pub fn tear_down(pod_dir: &Path) -> bool {
    let root = pod_dir.join("volumes");
    for m in mounts_below(&root) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %m.display(), error = %e, "unmounting a pod volume failed");
        }
    }
    mounts_below(&root).is_empty()
}

/// Writes a projected volume as kubelet's atomic writer does: the files in a fresh
/// `..<timestamp>` directory, `..data` swapped to it by a rename, one symlink per top-level
/// name (`key` → `..data/key`), then the old directory removed. Readers see the old or the new
/// set, never a mix.
pub struct AtomicWriter {
    pub dir: PathBuf,
}

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

impl AtomicWriter {
    /// The files as they are now (through `..data`), for change detection.
    pub fn current(&self) -> Option<BTreeMap<String, FileSpec>> {
        let data = self.dir.join(DATA);
        let target = std::fs::canonicalize(&data).ok()?;
        let mut out = BTreeMap::new();
        read_tree(&target, &target, &mut out).ok()?;
        Some(out)
    }

    /// Writes `files` unless they are what is already there; true when something changed.
    pub fn write(&self, files: &BTreeMap<String, FileSpec>) -> std::io::Result<bool> {
        if self.current().as_ref() == Some(files) {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir)?;
        let stamp = format!("..{}", jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f"));
        let new = self.dir.join(&stamp);
        if new.exists() {
            std::fs::remove_dir_all(&new)?;
        }
        std::fs::create_dir(&new)?;
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755))?;
        for (path, f) in files {
            let file = new.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, &f.data)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(f.mode))?;
        }
        let old = std::fs::read_link(self.dir.join(DATA)).ok();
        let tmp = self.dir.join(DATA_TMP);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp)?;
        std::fs::rename(&tmp, self.dir.join(DATA))?;
        // Top-level names: add the new ones, drop the ones no longer projected.
        let top: std::collections::BTreeSet<String> = files
            .keys()
            .filter_map(|p| Path::new(p).components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        for name in &top {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
            }
        }
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !top.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        Ok(true)
    }
}

fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, FileSpec>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            read_tree(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.insert(rel, FileSpec { data: std::fs::read(&path)?, mode: meta.permissions().mode() & 0o7777 });
        }
    }
    Ok(())
}

/// What a volume needs from the store, fetched before [`set_up`].
#[derive(Debug, Clone)]
pub enum Input {
    None,
    /// A ConfigMap's or Secret's decoded data (`None`: missing) and its resourceVersion.
    Data(Option<BTreeMap<String, Vec<u8>>>, String),
    /// A claim's host path.
    Claim(Result<(PathBuf, HostPathType), String>),
}

/// Where a set-up volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub path: PathBuf,
    pub read_only: bool,
    /// The resourceVersion a projected volume was rendered from.
    pub version: Option<String>,
}

/// Sets up one volume (idempotent); the error is the `FailedMount` message.
pub fn set_up(pod_dir: &Path, namespace: &str, v: &Volume, input: Input) -> Result<Ready, VolumeError> {
    let fail = |message: String| VolumeError::SetUp { volume: v.name.clone(), message };
    match (&v.source, input) {
        (Source::EmptyDir { memory, size_limit }, _) => {
            let dir = v.dir(pod_dir).expect("owned");
            std::fs::create_dir_all(&dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
            // Writable by any user of the pod, as kubelet's (0777).
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(|e| fail(e.to_string()))?;
            if *memory {
                mount_tmpfs(&dir, *size_limit).map_err(fail)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| fail(e.to_string()))?;
            }
            Ok(Ready { path: dir, read_only: false, version: None })
        }
        (Source::HostPath { path, kind }, _) => {
            check_host_path(path, *kind).map_err(fail)?;
            Ok(Ready { path: path.clone(), read_only: false, version: None })
        }
        (Source::Claim { claim, read_only }, Input::Claim(found)) => {
            let claim_err = |message: String| VolumeError::Claim {
                volume: v.name.clone(),
                namespace: namespace.into(),
                claim: claim.clone(),
                message,
            };
            let (path, kind) = found.map_err(claim_err)?;
            let kind = if kind == HostPathType::Unchecked { HostPathType::Directory } else { kind };
            check_host_path(&path, kind).map_err(fail)?;
            Ok(Ready { path, read_only: *read_only, version: None })
        }
        (Source::ConfigMap(p), Input::Data(data, version)) => {
            let files = project("configmap", data.as_ref(), p).map_err(fail)?;
            let dir = v.dir(pod_dir).expect("owned");
            AtomicWriter { dir: dir.clone() }
                .write(&files)
                .map_err(|e| fail(format!("writing {}: {e}", dir.display())))?;
            Ok(Ready { path: dir, read_only: true, version: Some(version) })
        }
        (Source::Secret(p), Input::Data(data, version)) => {
            let files = project("secret", data.as_ref(), p).map_err(fail)?;
            let dir = v.dir(pod_dir).expect("owned");
            let parent = dir.parent().expect("parent");
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| fail(e.to_string()))?;
            std::fs::create_dir_all(&dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
            mount_tmpfs(&dir, None).map_err(fail)?;
            AtomicWriter { dir: dir.clone() }
                .write(&files)
                .map_err(|e| fail(format!("writing the secret volume: {}", e.kind())))?;
            Ok(Ready { path: dir, read_only: true, version: Some(version) })
        }
        (_, _) => Err(fail("internal error: the volume's inputs were not fetched".into())),
    }
}

/// The bind mounts of one container's `volumeMounts`; `vars` (the container's environment)
/// expand `subPathExpr`. Missing subPath directories are created; a subPath that leaves its
/// volume (through `..` or a symlink) is refused. Errors are `CreateContainerConfigError`
/// messages.
pub fn container_mounts(
    c: &Value,
    ready: &HashMap<String, Ready>,
    vars: &[(String, String)],
) -> Result<Vec<BindMount>, String> {
    let container = c["name"].as_str().unwrap_or("");
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let destination = m["mountPath"].as_str().unwrap_or("").to_string();
        let Some(r) = ready.get(name) else {
            return Err(format!("volumeMount {name:?} of container {container:?} names no volume of the pod"));
        };
        let sub = match (m["subPath"].as_str(), m["subPathExpr"].as_str()) {
            (Some(s), _) if !s.is_empty() => s.to_string(),
            (_, Some(e)) if !e.is_empty() => env::expand(e, vars),
            _ => String::new(),
        };
        let source = if sub.is_empty() {
            r.path.clone()
        } else {
            check_sub_path(&sub).map_err(|e| {
                format!("failed to prepare subPath for volumeMount {name:?} of container {container:?}: subPath {e}")
            })?;
            let p = r.path.join(&sub);
            if std::fs::symlink_metadata(&p).is_err() {
                std::fs::create_dir_all(&p).map_err(|e| {
                    format!(
                        "failed to create subPath directory for volumeMount {name:?} of container {container:?}: {e}"
                    )
                })?;
            }
            let root = std::fs::canonicalize(&r.path).map_err(|e| format!("volume {name:?}: {e}"))?;
            let resolved =
                std::fs::canonicalize(&p).map_err(|e| format!("subPath {sub:?} of volumeMount {name:?}: {e}"))?;
            if !resolved.starts_with(&root) {
                return Err(format!("failed to prepare subPath for volumeMount {name:?} of container {container:?}: subPath {sub:?} resolves outside the volume"));
            }
            resolved
        };
        out.push(BindMount { source, destination, readonly: r.read_only || m["readOnly"].as_bool().unwrap_or(false) });
    }
    // Outer paths first, so nested mount paths work (containerd's CRI sorts the same way).
    out.sort_by_key(|m| Path::new(&m.destination).components().count());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// A pod's volumes as a worker keeps them: set up once (all before any container starts),
/// then the projected ones re-rendered when their object's resourceVersion changes.
#[derive(Debug, Default)]
pub struct PodVolumes {
    pub ready: HashMap<String, Ready>,
    /// Every volume is set up.
    pub complete: bool,
}

impl PodVolumes {
    /// Sets up what is missing and refreshes projected volumes; returns the volumes that are
    /// not ready (empty: every container may start).
    pub async fn ensure(&mut self, store: &Store, pod: &Value, pod_dir: &Path) -> Vec<VolumeError> {
        let plan = match plan(pod) {
            Ok(p) => p,
            Err(e) => return vec![e],
        };
        let namespace = meta::namespace(pod).to_string();
        let mut errors = Vec::new();
        for v in plan {
            let projected = matches!(v.source, Source::ConfigMap(_) | Source::Secret(_));
            if self.ready.contains_key(&v.name) && !projected {
                continue;
            }
            let input = match fetch(store, &namespace, &v).await {
                Ok(i) => i,
                Err(_) if self.ready.contains_key(&v.name) => continue,
                Err(e) => {
                    errors.push(VolumeError::SetUp { volume: v.name.clone(), message: e });
                    continue;
                }
            };
            if let (Some(r), Input::Data(_, version)) = (self.ready.get(&v.name), &input) {
                if r.version.as_deref() == Some(version.as_str()) {
                    continue;
                }
            }
            let (dir, ns, name) = (pod_dir.to_path_buf(), namespace.clone(), v.name.clone());
            let result = tokio::task::spawn_blocking(move || set_up(&dir, &ns, &v, input))
                .await
                .unwrap_or_else(|e| Err(VolumeError::SetUp { volume: name.clone(), message: e.to_string() }));
            match result {
                Ok(r) => {
                    self.ready.insert(name, r);
                }
                // A volume once set up keeps its content when an update cannot be rendered
                // (the object was deleted, say), as kubelet does.
                Err(e) if self.ready.contains_key(&name) => {
                    tracing::debug!(volume = name, error = %e, "keeping the volume's previous content");
                }
                Err(e) => errors.push(e),
            }
        }
        self.complete = errors.is_empty();
        errors
    }
}

async fn fetch(store: &Store, namespace: &str, v: &Volume) -> Result<Input, String> {
    let err = |e: crate::store::StoreError| e.to_string();
    Ok(match &v.source {
        Source::ConfigMap(p) => {
            let cm = store.get(&resource::CONFIG_MAPS.key(), namespace, &p.name).await.map_err(err)?;
            let version = cm.as_ref().map(|o| meta::resource_version(o).to_string()).unwrap_or_default();
            Input::Data(cm.as_ref().map(env::config_map_data), version)
        }
        Source::Secret(p) => {
            let s = store.get(&resource::SECRETS.key(), namespace, &p.name).await.map_err(err)?;
            let version = s.as_ref().map(|o| meta::resource_version(o).to_string()).unwrap_or_default();
            Input::Data(s.as_ref().map(config::secret_data), version)
        }
        Source::Claim { claim, .. } => {
            let pvc = store.get(&resource::PERSISTENT_VOLUME_CLAIMS.key(), namespace, claim).await.map_err(err)?;
            let volume = pvc
                .as_ref()
                .and_then(|c| c.pointer("/spec/volumeName"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let pv = if volume.is_empty() {
                None
            } else {
                store.get(&resource::PERSISTENT_VOLUMES.key(), "", &volume).await.map_err(err)?
            };
            Input::Claim(claim_path(namespace, claim, pvc.as_ref(), pv.as_ref()))
        }
        _ => Input::None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(volumes: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "uid": "u"}, "spec": {"volumes": volumes}})
    }

    #[test]
    fn planning_reads_every_supported_source() {
        let p = pod(json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "host", "hostPath": {"path": "/mnt/some new/dir/", "type": "DirectoryOrCreate"}},
            {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o400, "items": [{"key": "a", "path": "x/a.conf", "mode": 0o600}]}},
            {"name": "sec", "secret": {"secretName": "db", "optional": true}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "c", "readOnly": true}}
        ]));
        let plan = plan(&p).unwrap();
        assert_eq!(plan[0].source, Source::EmptyDir { memory: false, size_limit: None });
        assert_eq!(plan[1].source, Source::EmptyDir { memory: true, size_limit: Some(64 << 20) });
        assert_eq!(
            plan[2].source,
            Source::HostPath { path: "/mnt/some new/dir/".into(), kind: HostPathType::DirectoryOrCreate }
        );
        assert_eq!(
            plan[3].source,
            Source::ConfigMap(Projection {
                name: "app".into(),
                items: Some(vec![Item { key: "a".into(), path: "x/a.conf".into(), mode: Some(0o600) }]),
                default_mode: 0o400,
                optional: false
            })
        );
        assert_eq!(
            plan[4].source,
            Source::Secret(Projection { name: "db".into(), items: None, default_mode: 0o644, optional: true })
        );
        assert_eq!(plan[5].source, Source::Claim { claim: "c".into(), read_only: true });
        let root = Path::new("/var/lib/skerry/pods/u");
        assert_eq!(
            plan[0].dir(root).unwrap(),
            Path::new("/var/lib/skerry/pods/u/volumes/kubernetes.io~empty-dir/scratch")
        );
        assert_eq!(plan[3].dir(root).unwrap(), Path::new("/var/lib/skerry/pods/u/volumes/kubernetes.io~configmap/cfg"));
        assert_eq!(plan[4].dir(root).unwrap(), Path::new("/var/lib/skerry/pods/u/volumes/kubernetes.io~secret/sec"));
        assert_eq!(plan[2].dir(root), None);
    }

    #[test]
    fn unsupported_types_and_bad_fields_are_failed_mounts() {
        let e = plan(&pod(json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}]))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("MountVolume.SetUp failed for volume \"n\" : volume type \"nfs\" is not supported"),
            "{e}"
        );
        let e = plan(&pod(json!([{"name": "h", "hostPath": {"path": "/x", "type": "Dir"}}]))).unwrap_err();
        assert!(e.to_string().contains("invalid HostPathType \"Dir\""), "{e}");
    }

    #[test]
    fn projection_keys_items_modes_and_optional() {
        let data: BTreeMap<String, Vec<u8>> =
            [("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())].into();
        let all = Projection { name: "c".into(), items: None, default_mode: 0o644, optional: false };
        let files = project("configmap", Some(&data), &all).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["a"], FileSpec { data: b"1".to_vec(), mode: 0o644 });
        let items = Projection {
            items: Some(vec![
                Item { key: "b".into(), path: "dir/b.txt".into(), mode: Some(0o600) },
                Item { key: "a".into(), path: "a".into(), mode: None },
            ]),
            default_mode: 0o440,
            ..all.clone()
        };
        let files = project("configmap", Some(&data), &items).unwrap();
        assert_eq!(files["dir/b.txt"].mode, 0o600);
        assert_eq!(files["a"].mode, 0o440);
        assert_eq!(project("configmap", None, &all).unwrap_err(), "configmap \"c\" not found");
        assert_eq!(project("secret", None, &all).unwrap_err(), "secret \"c\" not found");
        assert!(project("configmap", None, &Projection { optional: true, ..all.clone() }).unwrap().is_empty());
        let missing =
            Projection { items: Some(vec![Item { key: "z".into(), path: "z".into(), mode: None }]), ..all.clone() };
        assert_eq!(
            project("configmap", Some(&data), &missing).unwrap_err(),
            "configmap references non-existent config key: z"
        );
        assert_eq!(project("secret", Some(&data), &missing).unwrap_err(), "references non-existent secret key: z");
        let escape = Projection { items: Some(vec![Item { key: "a".into(), path: "../a".into(), mode: None }]), ..all };
        assert!(project("configmap", Some(&data), &escape).unwrap_err().contains("'..'"));
    }

    #[test]
    fn sub_paths_stay_inside() {
        assert!(check_sub_path("a/b").is_ok());
        assert!(check_sub_path("a/./b").is_ok());
        assert!(check_sub_path("../x").unwrap_err().contains("must not contain '..'"));
        assert!(check_sub_path("a/../../x").is_err());
        assert!(check_sub_path("/etc").unwrap_err().contains("relative"));
    }

    #[test]
    fn claims_resolve_to_their_volume_path() {
        let pvc = json!({"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}});
        let pv = json!({"spec": {"claimRef": {"namespace": "default", "name": "c"}, "hostPath": {"path": "/mnt/x", "type": "DirectoryOrCreate"}}});
        assert_eq!(
            claim_path("default", "c", Some(&pvc), Some(&pv)).unwrap(),
            (PathBuf::from("/mnt/x"), HostPathType::DirectoryOrCreate)
        );
        let pending = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(claim_path("default", "c", Some(&pending), None).unwrap_err(), "PVC is not bound");
        assert!(claim_path("default", "c", None, None).unwrap_err().contains("persistentvolumeclaims \"c\" not found"));
        assert!(claim_path("other", "c", Some(&pvc), Some(&pv)).unwrap_err().contains("not bound to claim other/c"));
        let e = VolumeError::Claim {
            volume: "data".into(),
            namespace: "default".into(),
            claim: "c".into(),
            message: "PVC is not bound".into(),
        };
        assert_eq!(
            e.to_string(),
            "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[data]: error processing PVC default/c: PVC is not bound"
        );
    }

    #[test]
    fn host_path_types_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("with space/dir");
        let file = tmp.path().join("f");
        assert_eq!(
            check_host_path(&dir, HostPathType::Directory).unwrap_err(),
            format!("hostPath type check failed: {} is not a directory", dir.display())
        );
        check_host_path(&dir, HostPathType::Unchecked).unwrap();
        check_host_path(&dir, HostPathType::DirectoryOrCreate).unwrap();
        assert!(dir.is_dir());
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o755);
        check_host_path(&dir, HostPathType::Directory).unwrap();
        assert!(check_host_path(&file, HostPathType::File).unwrap_err().ends_with("is not a file"));
        check_host_path(&file, HostPathType::FileOrCreate).unwrap();
        assert!(file.is_file());
        check_host_path(&file, HostPathType::File).unwrap();
        assert!(check_host_path(&file, HostPathType::Directory).unwrap_err().ends_with("is not a directory"));
        assert!(check_host_path(&dir, HostPathType::FileOrCreate).unwrap_err().ends_with("is not a file"));
        assert!(check_host_path(&file, HostPathType::Socket).unwrap_err().ends_with("is not a socket file"));
        let sock = tmp.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        check_host_path(&sock, HostPathType::Socket).unwrap();
        check_host_path(Path::new("/dev/null"), HostPathType::CharDevice).unwrap();
        assert!(check_host_path(Path::new("/dev/null"), HostPathType::BlockDevice)
            .unwrap_err()
            .ends_with("is not a block device"));
        assert!(check_host_path(&file, HostPathType::CharDevice).unwrap_err().ends_with("is not a character device"));
    }

    fn files(v: &[(&str, &str, u32)]) -> BTreeMap<String, FileSpec> {
        v.iter().map(|(p, d, m)| (p.to_string(), FileSpec { data: d.as_bytes().to_vec(), mode: *m })).collect()
    }

    #[test]
    fn atomic_writer_swaps_data() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter { dir: tmp.path().join("vol") };
        assert!(w.write(&files(&[("a", "1", 0o644), ("sub/b", "2", 0o600)])).unwrap());
        let first = std::fs::read_link(w.dir.join("..data")).unwrap();
        assert!(first.to_string_lossy().starts_with(".."), "{first:?}");
        assert_eq!(std::fs::read_link(w.dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(std::fs::read_to_string(w.dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(w.dir.join("sub/b")).unwrap(), "2");
        assert_eq!(std::fs::metadata(w.dir.join("sub/b")).unwrap().permissions().mode() & 0o777, 0o600);
        // Unchanged: nothing happens.
        assert!(!w.write(&files(&[("a", "1", 0o644), ("sub/b", "2", 0o600)])).unwrap());
        assert_eq!(std::fs::read_link(w.dir.join("..data")).unwrap(), first);
        // An update swaps ..data, drops names no longer projected and the old directory.
        assert!(w.write(&files(&[("a", "new", 0o644), ("c", "3", 0o400)])).unwrap());
        let second = std::fs::read_link(w.dir.join("..data")).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read_to_string(w.dir.join("a")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(w.dir.join("c")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(w.dir.join("sub")).is_err());
        assert!(!w.dir.join(&first).exists());
        let mut names: Vec<String> = std::fs::read_dir(&w.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = vec!["..data".to_string(), second.to_string_lossy().into_owned(), "a".into(), "c".into()];
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn container_mounts_handle_sub_paths_and_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("evil")).unwrap();
        let ready = HashMap::from([
            ("v".to_string(), Ready { path: vol.clone(), read_only: false, version: None }),
            ("ro".to_string(), Ready { path: vol.clone(), read_only: true, version: None }),
        ]);
        let vars = vec![("POD".to_string(), "p1".to_string())];
        let c = json!({"name": "c", "volumeMounts": [
            {"name": "v", "mountPath": "/data"},
            {"name": "v", "mountPath": "/sub", "subPath": "a/b", "readOnly": true},
            {"name": "v", "mountPath": "/expr", "subPathExpr": "logs/$(POD)"},
            {"name": "ro", "mountPath": "/ro"}
        ]});
        let m = container_mounts(&c, &ready, &vars).unwrap();
        assert_eq!(m[0], BindMount { source: vol.clone(), destination: "/data".into(), readonly: false });
        let canon = std::fs::canonicalize(&vol).unwrap();
        assert_eq!(m[1], BindMount { source: canon.join("a/b"), destination: "/sub".into(), readonly: true });
        assert!(vol.join("a/b").is_dir(), "a missing subPath is created");
        assert_eq!(m[2].source, canon.join("logs/p1"));
        assert!(m[3].readonly);
        let bad = |sub: &str| {
            container_mounts(
                &json!({"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": sub}]}),
                &ready,
                &vars,
            )
            .unwrap_err()
        };
        assert!(bad("../../etc").contains("must not contain '..'"), "{}", bad("../../etc"));
        assert!(bad("evil").contains("resolves outside the volume"), "{}", bad("evil"));
        let e = container_mounts(
            &json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}),
            &ready,
            &vars,
        )
        .unwrap_err();
        assert!(e.contains("names no volume"), "{e}");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/mnt/some\\040new"), "/mnt/some new");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
