//! PersistentVolumes and claims: the default `local-path` class, binding, provisioning, release and reclaim.
//!
//! After kube-controller-manager's PV controller, simplified for one node. A pass lists the
//! StorageClasses, volumes and claims once, then moves each volume ([`step_volume`]) and each
//! claim ([`step_claim`]) one step at a time until it needs nothing more, keeping its own copy
//! of the volumes up to date so two claims never get the same volume in one pass.
//!
//! - A claim without `storageClassName` gets the default class (the DefaultStorageClass
//!   admission plugin's job, done here at binding time; `""` means "no class" and stays).
//! - Binding: the volume pre-bound to the claim (the claim's `spec.volumeName` or the volume's
//!   `claimRef`), else the smallest Available volume of the same class with every requested
//!   access mode, the same `volumeMode`, enough capacity and the claim's selector. Both sides
//!   are written: the volume's `claimRef` and `Bound` phase, then the claim's `volumeName`,
//!   `bind-completed` annotation, capacity, access modes and `Bound` phase.
//! - Provisioning: a claim of a class whose provisioner is [`PROVISIONER`] that nothing
//!   matches gets `pvc-<claim uid>`, a `hostPath` directory under `<data-dir>/volumes`.
//! - Release: a volume whose claim is gone becomes `Released`; `Retain` keeps it, `Delete`
//!   removes a local-path volume's directory and then the volume. Skerry never deletes data it
//!   did not create: any other volume with `Delete` becomes `Failed` with a message.
//!
//! Not done: the `kubernetes.io/pvc-protection` and `pv-protection` finalizers (the API
//! deletes claims and volumes at once, so a claim a running pod uses can be deleted), volume
//! expansion, `Recycle`, node affinity on provisioned volumes (one node).
//!
//! Invariant: the decisions ([`best_match`], [`step_claim`], [`step_volume`], [`bound_volume`],
//! [`bound_claim`], [`provisioned_volume`]) are pure; only [`Controller`] writes, through store
//! commands with the read `resourceVersion`, and touches the disk (only under
//! `<data-dir>/volumes`).

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder};
use crate::objects::config::{is_default_class, DEFAULT_CLASS};
use crate::objects::{meta, quantity, resource, selector::Selector};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

/// The built-in default StorageClass.
pub const LOCAL_PATH: &str = "local-path";
/// The provisioner Skerry implements: a directory per volume under `<data-dir>/volumes`.
pub const PROVISIONER: &str = "skerry.io/local-path";
/// Set on a claim once the controller has bound it (Kubernetes' name).
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on whichever side the controller (not the user) pointed at the other.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Names the provisioner of a dynamically provisioned volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The class annotation that preceded `storageClassName` (still honoured by Kubernetes).
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The component events are recorded as.
const COMPONENT: &str = "persistentvolume-controller";
/// Where provisioned volumes live, below the data dir.
pub const VOLUMES_DIR: &str = "volumes";

// ---------------------------------------------------------------------------------------------
// The default class.

/// Creates the `local-path` StorageClass when it is missing. It is marked default unless
/// another class already is (two defaults would make the choice depend on creation times).
pub async fn ensure_default_class(store: &Store, proposer: &Proposer) -> Result<(), StoreError> {
    let key = resource::STORAGE_CLASSES.key();
    if store.get(&key, "", LOCAL_PATH).await?.is_some() {
        return Ok(());
    }
    let (classes, _) = store.list(&key, None).await?;
    let mut sc = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::now()},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    });
    if !classes.iter().any(is_default_class) {
        sc["metadata"]["annotations"] = json!({DEFAULT_CLASS: "true"});
    }
    match proposer.propose(Command::Create { resource: key, object: sc }).await {
        Ok(_) | Err(StoreError::Rejected(Rejection::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The default class: the newest of those marked default, as Kubernetes picks.
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    classes.iter().filter(|c| is_default_class(c) && !meta::is_deleting(c)).max_by_key(|c| (created(c), meta::name(c)))
}

fn created(obj: &Value) -> Option<jiff::Timestamp> {
    meta::parse_time(obj.pointer("/metadata/creationTimestamp"))
}

// ---------------------------------------------------------------------------------------------
// Matching (pure).

fn text<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// A claim's class: `None` when absent (the default class applies), `Some("")` for "no class".
pub fn claim_class(claim: &Value) -> Option<&str> {
    annotation(claim, BETA_CLASS).or_else(|| text(claim, "/spec/storageClassName"))
}

/// A volume's class; `""` (absent) matches only claims asking for no class.
pub fn volume_class(pv: &Value) -> &str {
    annotation(pv, BETA_CLASS).or_else(|| text(pv, "/spec/storageClassName")).unwrap_or("")
}

fn access_modes<'a>(obj: &'a Value, pointer: &str) -> Vec<&'a str> {
    obj.pointer(pointer).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

fn volume_mode(obj: &Value) -> &str {
    text(obj, "/spec/volumeMode").unwrap_or("Filesystem")
}

fn phase(obj: &Value) -> &str {
    text(obj, "/status/phase").unwrap_or("")
}

/// The storage a claim requests (`None` when absent or not a quantity).
fn request(claim: &Value) -> Option<u64> {
    quantity::parse_bytes(text(claim, "/spec/resources/requests/storage")?).ok()
}

fn capacity(pv: &Value) -> Option<u64> {
    quantity::parse_bytes(text(pv, "/spec/capacity/storage")?).ok()
}

fn volume_name(claim: &Value) -> &str {
    text(claim, "/spec/volumeName").unwrap_or("")
}

/// Whether the volume's `claimRef` names this claim (a `claimRef` without uid is a user's
/// pre-binding by name and matches any claim of that name).
fn claim_ref_is(pv: &Value, claim: &Value) -> bool {
    let Some(r) = pv.pointer("/spec/claimRef").filter(|r| r.is_object()) else { return false };
    r["namespace"].as_str().unwrap_or("default") == meta::namespace(claim)
        && r["name"].as_str() == Some(meta::name(claim))
        && r["uid"].as_str().is_none_or(|u| u.is_empty() || u == meta::uid(claim))
}

fn has_claim_ref(pv: &Value) -> bool {
    pv.pointer("/spec/claimRef").is_some_and(Value::is_object)
}

/// Why `pv` cannot hold `claim`, Kubernetes' `checkVolumeSatisfyClaim`: class, access modes,
/// volume mode and size (not the selector, which an explicit binding ignores).
pub fn satisfies(pv: &Value, claim: &Value) -> Result<(), &'static str> {
    if volume_class(pv) != claim_class(claim).unwrap_or("") {
        return Err("storageClassName does not match");
    }
    let offered = access_modes(pv, "/spec/accessModes");
    if !access_modes(claim, "/spec/accessModes").iter().all(|m| offered.contains(m)) {
        return Err("incompatible accessMode");
    }
    if volume_mode(pv) != volume_mode(claim) {
        return Err("incompatible volumeMode");
    }
    match (capacity(pv), request(claim).unwrap_or(0)) {
        (Some(have), want) if have >= want => Ok(()),
        _ => Err("requested PV is too small"),
    }
}

fn selector_matches(pv: &Value, claim: &Value) -> bool {
    match claim.pointer("/spec/selector").filter(|s| !s.is_null()) {
        None => true,
        Some(s) => Selector::from_label_selector(s).is_ok_and(|sel| sel.matches(&meta::labels(pv))),
    }
}

/// The volume an unbound claim should get: one pre-bound to it by its `claimRef`, else the
/// smallest Available, unclaimed volume that satisfies it and its selector (ties: by name).
pub fn best_match<'a>(claim: &Value, pvs: &'a [Value]) -> Option<&'a Value> {
    let fits = || pvs.iter().filter(|pv| !meta::is_deleting(pv) && satisfies(pv, claim).is_ok());
    if let Some(pv) = fits().find(|pv| claim_ref_is(pv, claim)) {
        return Some(pv);
    }
    fits()
        .filter(|pv| !has_claim_ref(pv) && phase(pv) == "Available" && selector_matches(pv, claim))
        .min_by(|a, b| (capacity(a), meta::name(a)).cmp(&(capacity(b), meta::name(b))))
}

// ---------------------------------------------------------------------------------------------
// Claims (pure).

/// An event to record about the object being stepped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: EventType,
    pub reason: &'static str,
    pub message: String,
}

fn note(kind: EventType, reason: &'static str, message: impl Into<String>) -> Note {
    Note { kind, reason, message: message.into() }
}

/// What a claim needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// Nothing (terminating, or bound and consistent).
    Done,
    /// Give the claim (no `storageClassName`) the default class.
    SetClass(String),
    /// Bind, or finish binding, the claim and this volume.
    Bind(String),
    /// Create a local-path volume for the claim; it binds on the next step.
    Provision { class: String, reclaim: String },
    /// Pending, with the reason when there is one to tell.
    Pending(Option<Note>),
    /// Bound once, but its volume is gone or bound to another claim.
    Lost(Note),
}

/// The next step for `claim` given the volumes, the classes and whether a pod uses it.
pub fn step_claim(claim: &Value, pvs: &[Value], classes: &[Value], has_consumer: bool) -> ClaimStep {
    if meta::is_deleting(claim) || meta::uid(claim).is_empty() {
        return ClaimStep::Done;
    }
    let bound_before = annotation(claim, BIND_COMPLETED).is_some();
    let wanted = volume_name(claim);
    if !wanted.is_empty() {
        return step_pre_bound(claim, wanted, pvs, bound_before);
    }
    if claim_class(claim).is_none() {
        if let Some(default) = default_class(classes) {
            return ClaimStep::SetClass(meta::name(default).to_string());
        }
    }
    let class_name = claim_class(claim).unwrap_or("");
    let class = classes.iter().find(|c| meta::name(c) == class_name && !class_name.is_empty());
    let wait = class.is_some_and(|c| c["volumeBindingMode"] == "WaitForFirstConsumer") && !has_consumer;
    if let Some(pv) = best_match(claim, pvs).filter(|pv| !wait || claim_ref_is(pv, claim)) {
        return ClaimStep::Bind(meta::name(pv).to_string());
    }
    if wait {
        return ClaimStep::Pending(Some(note(
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )));
    }
    if class_name.is_empty() {
        return ClaimStep::Pending(Some(note(
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )));
    }
    let Some(class) = class else {
        return ClaimStep::Pending(Some(note(
            EventType::Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        )));
    };
    let provisioner = class["provisioner"].as_str().unwrap_or("");
    if provisioner != PROVISIONER {
        return ClaimStep::Pending(Some(note(
            EventType::Normal,
            "ExternalProvisioning",
            format!(
                "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
            ),
        )));
    }
    if claim.pointer("/spec/selector").is_some_and(|s| !s.is_null()) {
        return ClaimStep::Pending(Some(note(
            EventType::Warning,
            "ProvisioningFailed",
            "claim.Spec.Selector is not supported for dynamic provisioning",
        )));
    }
    if request(claim).is_none() {
        return ClaimStep::Pending(Some(note(
            EventType::Warning,
            "ProvisioningFailed",
            "the claim requests no valid storage size; set spec.resources.requests.storage, like 1Gi",
        )));
    }
    ClaimStep::Provision {
        class: class_name.to_string(),
        reclaim: class["reclaimPolicy"].as_str().unwrap_or("Delete").to_string(),
    }
}

/// A claim naming its volume (`spec.volumeName`): by the user, or bound by us.
fn step_pre_bound(claim: &Value, wanted: &str, pvs: &[Value], bound_before: bool) -> ClaimStep {
    let Some(pv) = pvs.iter().find(|pv| meta::name(pv) == wanted) else {
        if bound_before {
            return ClaimStep::Lost(note(
                EventType::Warning,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            ));
        }
        // The user asked for a volume that does not exist yet: wait for it, as Kubernetes does.
        return ClaimStep::Pending(None);
    };
    if claim_ref_is(pv, claim) || (bound_before && !has_claim_ref(pv)) {
        return ClaimStep::Bind(wanted.to_string());
    }
    if has_claim_ref(pv) {
        if bound_before {
            return ClaimStep::Lost(note(
                EventType::Warning,
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            ));
        }
        return ClaimStep::Pending(Some(note(
            EventType::Warning,
            "FailedBinding",
            format!("volume {wanted:?} already bound to a different claim"),
        )));
    }
    match satisfies(pv, claim) {
        Ok(()) if !meta::is_deleting(pv) => ClaimStep::Bind(wanted.to_string()),
        Ok(()) => ClaimStep::Pending(None),
        Err(why) => ClaimStep::Pending(Some(note(
            EventType::Warning,
            "FailedBinding",
            format!("Cannot bind to requested volume {wanted:?}: {why}"),
        ))),
    }
}

/// The volume, bound to `claim`.
pub fn bound_volume(pv: &Value, claim: &Value) -> Value {
    let mut new = pv.clone();
    let already =
        claim_ref_is(pv, claim) && pv.pointer("/spec/claimRef/uid").and_then(Value::as_str) == Some(meta::uid(claim));
    if !already {
        if !has_claim_ref(pv) {
            new["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
        }
        new["spec"]["claimRef"] = json!({
            "kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": meta::namespace(claim), "name": meta::name(claim), "uid": meta::uid(claim),
            "resourceVersion": meta::resource_version(claim),
        });
    }
    new["status"] = json!({"phase": "Bound"});
    new
}

/// The claim, bound to `pv`.
pub fn bound_claim(claim: &Value, pv: &Value) -> Value {
    let mut new = claim.clone();
    if volume_name(claim) != meta::name(pv) {
        new["spec"]["volumeName"] = json!(meta::name(pv));
        new["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
    }
    new["metadata"]["annotations"][BIND_COMPLETED] = json!("yes");
    let mut new = with_phase(&new, "Bound");
    new["status"]["accessModes"] = pv.pointer("/spec/accessModes").cloned().unwrap_or(json!([]));
    new["status"]["capacity"] = pv.pointer("/spec/capacity").cloned().unwrap_or(json!({}));
    new
}

/// The claim with `phase` (and nothing else of its status changed).
fn with_phase(obj: &Value, phase: &str) -> Value {
    let mut new = obj.clone();
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    new["status"]["phase"] = json!(phase);
    new
}

/// The local-path volume for `claim` at `path`, pre-bound to it.
pub fn provisioned_volume(claim: &Value, class: &str, reclaim: &str, path: &Path) -> Value {
    let name = format!("pvc-{}", meta::uid(claim));
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::now(),
            "annotations": {PROVISIONED_BY: PROVISIONER, BOUND_BY_CONTROLLER: "yes"},
        },
        "spec": {
            "capacity": {"storage": claim.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("0"))},
            "accessModes": claim.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": class,
            "volumeMode": volume_mode(claim),
            "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
            "claimRef": {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": meta::namespace(claim), "name": meta::name(claim), "uid": meta::uid(claim),
                "resourceVersion": meta::resource_version(claim),
            },
        },
        "status": {"phase": "Bound"},
    })
}

// ---------------------------------------------------------------------------------------------
// Volumes (pure).

/// What a volume needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeStep {
    /// Nothing (in use, waiting for its claim's binding, retained or failed).
    Done,
    /// Set `status.phase` (and the message; `None` clears it).
    Phase(&'static str, Option<String>),
    /// Its claim is bound to another volume: free it.
    Unbind,
    /// Released with `Delete`, provisioned here: remove this directory, then the volume.
    DeleteLocal(PathBuf),
    /// Released with a policy Skerry cannot carry out here.
    Fail(Note),
}

/// The next step for `pv` given the claims; `volumes_dir` is where local-path volumes live.
pub fn step_volume(pv: &Value, claims: &[Value], volumes_dir: &Path) -> VolumeStep {
    if meta::is_deleting(pv) {
        return VolumeStep::Done;
    }
    let set = |want: &'static str| {
        let message = pv.pointer("/status/message").is_some_and(|m| !m.is_null());
        if phase(pv) == want && !message {
            VolumeStep::Done
        } else {
            VolumeStep::Phase(want, None)
        }
    };
    let uid = pv.pointer("/spec/claimRef/uid").and_then(Value::as_str).unwrap_or("");
    if !has_claim_ref(pv) || uid.is_empty() {
        return set("Available");
    }
    let claim = claims.iter().find(|c| claim_ref_is(pv, c) && meta::uid(c) == uid);
    if let Some(claim) = claim {
        return match volume_name(claim) {
            "" => VolumeStep::Done,
            n if n == meta::name(pv) => set("Bound"),
            _ => VolumeStep::Unbind,
        };
    }
    // The claim is gone (or replaced by a namesake): released, then reclaimed.
    match phase(pv) {
        "Failed" => return VolumeStep::Done,
        "Released" => {}
        _ => return VolumeStep::Phase("Released", None),
    }
    let name = meta::name(pv);
    match text(pv, "/spec/persistentVolumeReclaimPolicy").unwrap_or("Retain") {
        "Retain" => VolumeStep::Done,
        "Delete" => {
            match local_path(pv, volumes_dir) {
                Some(path) => VolumeStep::DeleteLocal(path),
                None => {
                    let what = match text(pv, "/spec/hostPath/path") {
                    Some(p) => format!("the data at {p} is kept: remove it yourself if you no longer need it, then delete the volume"),
                    None => "delete the storage behind it yourself, then delete the volume".into(),
                };
                    VolumeStep::Fail(note(
                        EventType::Warning,
                        "VolumeFailedDelete",
                        format!("skerry deletes only the volumes it provisioned, and {name:?} was not; {what}"),
                    ))
                }
            }
        }
        policy => VolumeStep::Fail(note(
            EventType::Warning,
            "VolumeFailedRecycle",
            format!(
                "reclaim policy {policy:?} is not supported; set persistentVolumeReclaimPolicy to Retain or Delete"
            ),
        )),
    }
}

/// A local-path volume's directory: provisioned by us and exactly where we put it — a volume
/// that merely claims to be ours never gets another directory removed.
fn local_path(pv: &Value, volumes_dir: &Path) -> Option<PathBuf> {
    let name = meta::name(pv);
    let expected = volumes_dir.join(name);
    (annotation(pv, PROVISIONED_BY) == Some(PROVISIONER)
        && name.starts_with("pvc-")
        && !name.contains('/')
        && text(pv, "/spec/hostPath/path").map(Path::new) == Some(expected.as_path()))
    .then_some(expected)
}

/// The volume freed from a claim that is bound elsewhere: a binding we made is undone; a
/// user's pre-binding by name is kept without the uid, as Kubernetes does.
fn unbound_volume(pv: &Value) -> Value {
    let mut new = pv.clone();
    if annotation(pv, BOUND_BY_CONTROLLER).is_some() {
        new["spec"].as_object_mut().map(|s| s.remove("claimRef"));
        new["metadata"]["annotations"].as_object_mut().map(|a| a.remove(BOUND_BY_CONTROLLER));
    } else if let Some(r) = new["spec"]["claimRef"].as_object_mut() {
        r.remove("uid");
        r.remove("resourceVersion");
    }
    new["status"] = json!({"phase": "Available"});
    new
}

// ---------------------------------------------------------------------------------------------
// The controller.

/// Carries out the steps: store writes, events and the local-path directories.
pub struct Controller {
    store: Store,
    proposer: Proposer,
    recorder: Recorder,
    volumes_dir: PathBuf,
}

/// How many steps one object takes in a pass (class, provision, bind is the longest chain).
const MAX_STEPS: usize = 4;

impl Controller {
    /// A controller whose local-path volumes live in `<data_dir>/volumes` (starts the event
    /// writer: call from within the runtime).
    pub fn new(store: Store, proposer: Proposer, data_dir: &Path) -> Controller {
        let recorder = Recorder::new(store.clone(), proposer.clone(), COMPONENT, String::new());
        Controller { store, proposer, recorder, volumes_dir: data_dir.join(VOLUMES_DIR) }
    }

    /// One pass over every volume and claim.
    pub async fn reconcile(&self) -> Result<(), StoreError> {
        let (classes, _) = self.store.list(&resource::STORAGE_CLASSES.key(), None).await?;
        let (volumes, _) = self.store.list(&resource::PERSISTENT_VOLUMES.key(), None).await?;
        let (claims, _) = self.store.list(&resource::PERSISTENT_VOLUME_CLAIMS.key(), None).await?;
        // Volumes first: a released volume is not offered to claims.
        let mut pvs = Vec::with_capacity(volumes.len());
        for pv in volumes {
            let name = meta::name(&pv).to_string();
            match self.sync_volume(pv.clone(), &claims).await {
                Ok(Some(pv)) => pvs.push(pv),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, volume = name, "persistent volume step failed; will retry");
                    pvs.push(pv);
                }
            }
        }
        let mut consumers = None;
        for claim in claims {
            if let Err(e) = self.sync_claim(claim.clone(), &mut pvs, &classes, &mut consumers).await {
                tracing::warn!(error = %e, claim = meta::name(&claim), namespace = meta::namespace(&claim), "claim step failed; will retry");
            }
        }
        Ok(())
    }

    /// Steps one volume until it is done; returns it as it now is (`None`: deleted).
    async fn sync_volume(&self, mut pv: Value, claims: &[Value]) -> Result<Option<Value>, StoreError> {
        let key = resource::PERSISTENT_VOLUMES.key();
        for _ in 0..MAX_STEPS {
            let new = match step_volume(&pv, claims, &self.volumes_dir) {
                VolumeStep::Done => break,
                VolumeStep::Phase(p, message) => {
                    let mut new = pv.clone();
                    new["status"] = json!({"phase": p});
                    if let Some(m) = message {
                        new["status"]["message"] = json!(m);
                    }
                    new
                }
                VolumeStep::Unbind => unbound_volume(&pv),
                VolumeStep::Fail(n) => {
                    self.recorder.record(&pv, n.kind, n.reason, &n.message).await;
                    let mut new = pv.clone();
                    new["status"] = json!({"phase": "Failed", "message": n.message});
                    new
                }
                VolumeStep::DeleteLocal(path) => return self.delete_local(pv, &path).await,
            };
            pv = self.proposer.propose(Command::Update { resource: key.clone(), object: new }).await?.object;
        }
        Ok(Some(pv))
    }

    /// Removes a released local-path volume: its directory, then the object.
    async fn delete_local(&self, pv: Value, path: &Path) -> Result<Option<Value>, StoreError> {
        // Data goes for good: check again, from the store, that the claim is gone.
        let (ns, name) =
            (text(&pv, "/spec/claimRef/namespace").unwrap_or(""), text(&pv, "/spec/claimRef/name").unwrap_or(""));
        let claim = self.store.get(&resource::PERSISTENT_VOLUME_CLAIMS.key(), ns, name).await?;
        if claim.is_some_and(|c| Some(meta::uid(&c)) == text(&pv, "/spec/claimRef/uid")) {
            return Ok(Some(pv));
        }
        match tokio::fs::remove_dir_all(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let message = format!("removing {}: {e}; skerry will retry", path.display());
                self.recorder.record(&pv, EventType::Warning, "VolumeFailedDelete", &message).await;
                return Ok(Some(pv));
            }
        }
        let delete = Command::delete_of(resource::PERSISTENT_VOLUMES.key(), &pv);
        match self.proposer.propose(delete).await {
            Ok(_) | Err(StoreError::Rejected(Rejection::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Steps one claim until it is done, keeping `pvs` up to date.
    async fn sync_claim(
        &self,
        mut claim: Value,
        pvs: &mut Vec<Value>,
        classes: &[Value],
        consumers: &mut Option<HashSet<(String, String)>>,
    ) -> Result<(), StoreError> {
        let key = resource::PERSISTENT_VOLUME_CLAIMS.key();
        let wait_possible = |claim: &Value| {
            volume_name(claim).is_empty()
                && classes.iter().any(|c| {
                    Some(meta::name(c)) == claim_class(claim) && c["volumeBindingMode"] == "WaitForFirstConsumer"
                })
        };
        for _ in 0..MAX_STEPS {
            let has_consumer = if wait_possible(&claim) {
                if consumers.is_none() {
                    *consumers = Some(self.consumers().await?);
                }
                let id = (meta::namespace(&claim).to_string(), meta::name(&claim).to_string());
                consumers.as_ref().is_some_and(|c| c.contains(&id))
            } else {
                false
            };
            match step_claim(&claim, pvs, classes, has_consumer) {
                ClaimStep::Done => return Ok(()),
                ClaimStep::SetClass(class) => {
                    let mut new = claim.clone();
                    new["spec"]["storageClassName"] = json!(class);
                    claim = self.proposer.propose(Command::Update { resource: key.clone(), object: new }).await?.object;
                }
                ClaimStep::Bind(name) => return self.bind(&claim, &name, pvs).await,
                ClaimStep::Provision { class, reclaim } => {
                    if !self.provision(&claim, &class, &reclaim, pvs).await? {
                        return Ok(());
                    }
                }
                ClaimStep::Pending(n) => {
                    if let Some(n) = n {
                        self.recorder.record(&claim, n.kind, n.reason, &n.message).await;
                    }
                    if phase(&claim) != "Pending" {
                        self.proposer
                            .propose(Command::Update { resource: key.clone(), object: with_phase(&claim, "Pending") })
                            .await?;
                    }
                    return Ok(());
                }
                ClaimStep::Lost(n) => {
                    self.recorder.record(&claim, n.kind, n.reason, &n.message).await;
                    if phase(&claim) != "Lost" {
                        self.proposer
                            .propose(Command::Update { resource: key.clone(), object: with_phase(&claim, "Lost") })
                            .await?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Writes both sides of a binding (volume first, as Kubernetes: a volume pointing at a
    /// claim is what a later pass completes from), each only when it changes.
    async fn bind(&self, claim: &Value, volume: &str, pvs: &mut [Value]) -> Result<(), StoreError> {
        let Some(slot) = pvs.iter_mut().find(|pv| meta::name(pv) == volume) else { return Ok(()) };
        let new = bound_volume(slot, claim);
        if new != *slot {
            *slot = self
                .proposer
                .propose(Command::Update { resource: resource::PERSISTENT_VOLUMES.key(), object: new })
                .await?
                .object;
        }
        let new = bound_claim(claim, slot);
        if new != *claim {
            self.proposer
                .propose(Command::Update { resource: resource::PERSISTENT_VOLUME_CLAIMS.key(), object: new })
                .await?;
        }
        Ok(())
    }

    /// Creates the claim's directory and volume; `false` when that failed (event recorded).
    async fn provision(
        &self,
        claim: &Value,
        class: &str,
        reclaim: &str,
        pvs: &mut Vec<Value>,
    ) -> Result<bool, StoreError> {
        let name = format!("pvc-{}", meta::uid(claim));
        let path = self.volumes_dir.join(&name);
        if let Err(e) = make_volume_dir(&path).await {
            let message =
                format!("creating {}: {e}; check that the data dir is writable and has space", path.display());
            self.recorder.record(claim, EventType::Warning, "ProvisioningFailed", &message).await;
            return Ok(false);
        }
        let pv = provisioned_volume(claim, class, reclaim, &path);
        let created = match self
            .proposer
            .propose(Command::Create { resource: resource::PERSISTENT_VOLUMES.key(), object: pv })
            .await
        {
            Ok(applied) => applied.object,
            // Made by an earlier pass whose claim write did not land: the next pass binds it.
            Err(StoreError::Rejected(Rejection::AlreadyExists { .. })) => return Ok(false),
            Err(e) => return Err(e),
        };
        pvs.push(created);
        self.recorder
            .record(
                claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                &format!("Successfully provisioned volume {name}"),
            )
            .await;
        Ok(true)
    }

    /// The claims live pods use, as (namespace, claim name).
    async fn consumers(&self) -> Result<HashSet<(String, String)>, StoreError> {
        let (pods, _) = self.store.list(&resource::PODS.key(), None).await?;
        Ok(pods
            .iter()
            .filter(|p| !meta::is_deleting(p) && !matches!(phase(p), "Succeeded" | "Failed"))
            .flat_map(|p| {
                let ns = meta::namespace(p).to_string();
                p.pointer("/spec/volumes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str))
                    .map(move |c| (ns.clone(), c.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Waits until every event recorded so far is written (tests).
    pub async fn flush_events(&self) {
        self.recorder.flush().await;
    }
}

/// Creates a volume's directory, mode 0777 as rancher's local-path provisioner does: pods run
/// as any uid (no fsGroup handling here), and the 0700 data dir above keeps host users out —
/// a pod reaches the directory through its bind mount, never through the parents.
async fn make_volume_dir(path: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(path).await?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).await
}

/// Runs the controller until `shutdown`.
pub async fn run(store: Store, proposer: Proposer, data_dir: PathBuf, shutdown: CancellationToken) {
    let controller = Controller::new(store.clone(), proposer, &data_dir);
    let resources = [
        resource::PERSISTENT_VOLUMES.key(),
        resource::PERSISTENT_VOLUME_CLAIMS.key(),
        resource::STORAGE_CLASSES.key(),
        // WaitForFirstConsumer claims bind when a pod uses them.
        resource::PODS.key(),
    ];
    let resources: Vec<&str> = resources.iter().map(String::as_str).collect();
    crate::controllers::run_loop(store, &resources, shutdown, || async {
        if let Err(e) = controller.reconcile().await {
            tracing::warn!(error = %e, "volume pass failed; will retry");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{admit, ResourceType};

    fn pv(name: &str, class: Option<&str>, size: &str, modes: &[&str]) -> Value {
        let mut pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {"capacity": {"storage": size}, "accessModes": modes, "hostPath": {"path": format!("/srv/{name}")}}});
        if let Some(c) = class {
            pv["spec"]["storageClassName"] = json!(c);
        }
        admit(&resource::PERSISTENT_VOLUMES, pv).unwrap().object
    }

    fn pvc(name: &str, class: Option<&str>, size: &str, modes: &[&str]) -> Value {
        let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}});
        if let Some(c) = class {
            pvc["spec"]["storageClassName"] = json!(c);
        }
        admit(&resource::PERSISTENT_VOLUME_CLAIMS, pvc).unwrap().object
    }

    fn class(name: &str, provisioner: &str) -> Value {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name}, "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})
    }

    const RWO: &[&str] = &["ReadWriteOnce"];

    fn matched<'a>(claim: &Value, pvs: &'a [Value]) -> Option<&'a str> {
        best_match(claim, pvs).map(meta::name)
    }

    #[test]
    fn matching_rules() {
        let claim = pvc("c", Some("fast"), "1Gi", RWO);
        // Class: only the same class; an absent PV class matches only claims asking for "".
        assert_eq!(matched(&claim, &[pv("other", Some("slow"), "5Gi", RWO), pv("none", None, "5Gi", RWO)]), None);
        assert_eq!(
            matched(
                &pvc("c", Some(""), "1Gi", RWO),
                &[pv("fast", Some("fast"), "5Gi", RWO), pv("none", None, "5Gi", RWO)]
            ),
            Some("none")
        );
        // Access modes: every requested mode offered.
        let rwx = pvc("c", Some("fast"), "1Gi", &["ReadWriteOnce", "ReadWriteMany"]);
        assert_eq!(matched(&rwx, &[pv("a", Some("fast"), "5Gi", RWO)]), None);
        assert_eq!(
            matched(&rwx, &[pv("a", Some("fast"), "5Gi", &["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany"])]),
            Some("a")
        );
        // Capacity: enough, and the smallest that is enough (in bytes, whatever the unit).
        let pvs = [
            pv("big", Some("fast"), "10Gi", RWO),
            pv("small", Some("fast"), "1000Mi", RWO),
            pv("fit", Some("fast"), "1100M", RWO),
            pv("exact", Some("fast"), "1Gi", RWO),
        ];
        assert_eq!(matched(&claim, &pvs), Some("exact"));
        assert_eq!(matched(&claim, &pvs[..3]), Some("fit"), "1100M > 1Gi > 1000Mi");
        assert_eq!(matched(&pvc("c", Some("fast"), "20Gi", RWO), &pvs), None);
        // volumeMode must be equal.
        let mut block = pv("block", Some("fast"), "5Gi", RWO);
        block["spec"]["volumeMode"] = json!("Block");
        assert_eq!(matched(&claim, std::slice::from_ref(&block)), None);
        // Only Available volumes without a claimRef, unless the claimRef names this claim.
        let mut released = pv("released", Some("fast"), "1Gi", RWO);
        released["status"]["phase"] = json!("Released");
        let mut taken = pv("taken", Some("fast"), "1Gi", RWO);
        taken["spec"]["claimRef"] = json!({"namespace": "default", "name": "other", "uid": "x"});
        assert_eq!(matched(&claim, &[released, taken]), None);
        let mut mine = pv("mine", Some("fast"), "8Gi", RWO);
        mine["spec"]["claimRef"] = json!({"namespace": "default", "name": "c"});
        assert_eq!(
            matched(&claim, &[pvs[3].clone(), mine.clone()]),
            Some("mine"),
            "pre-bound by name wins over a better fit"
        );
        mine["spec"]["claimRef"]["uid"] = json!("another-claim-of-that-name");
        assert_eq!(matched(&claim, &[mine]), None);
        // Selector: matchLabels on the volume's labels.
        let mut sel = claim.clone();
        sel["spec"]["selector"] = json!({"matchLabels": {"disk": "ssd"}});
        let mut ssd = pv("ssd", Some("fast"), "9Gi", RWO);
        ssd["metadata"]["labels"] = json!({"disk": "ssd"});
        assert_eq!(matched(&sel, &[pvs[3].clone(), ssd.clone()]), Some("ssd"));
        assert_eq!(matched(&sel, &pvs), None);
    }

    #[test]
    fn claim_steps() {
        let local = {
            let mut c = class(LOCAL_PATH, PROVISIONER);
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS: "true"});
            c
        };
        let classes = [local, class("ext", "example.com/nfs")];
        // Default class: only when the field is absent.
        assert_eq!(
            step_claim(&pvc("c", None, "1Gi", RWO), &[], &classes, false),
            ClaimStep::SetClass(LOCAL_PATH.into())
        );
        let none = step_claim(&pvc("c", Some(""), "1Gi", RWO), &[], &classes, false);
        let ClaimStep::Pending(Some(n)) = none else { panic!("{none:?}") };
        assert_eq!((n.kind, n.reason), (EventType::Normal, "FailedBinding"));
        assert_eq!(n.message, "no persistent volumes available for this claim and no storage class is set");
        // Without a default class an absent class means "": it binds "" volumes.
        assert_eq!(
            step_claim(&pvc("c", None, "1Gi", RWO), &[pv("v", None, "1Gi", RWO)], &classes[1..], false),
            ClaimStep::Bind("v".into())
        );
        // An existing volume wins over provisioning; otherwise local-path provisions.
        let claim = pvc("c", Some(LOCAL_PATH), "1Gi", RWO);
        assert_eq!(
            step_claim(&claim, &[pv("v", Some(LOCAL_PATH), "2Gi", RWO)], &classes, false),
            ClaimStep::Bind("v".into())
        );
        assert_eq!(
            step_claim(&claim, &[], &classes, false),
            ClaimStep::Provision { class: LOCAL_PATH.into(), reclaim: "Delete".into() }
        );
        // Unknown class, external provisioner.
        let step = step_claim(&pvc("c", Some("nothing-here"), "1Gi", RWO), &[], &classes, false);
        assert_eq!(
            step,
            ClaimStep::Pending(Some(note(
                EventType::Warning,
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"nothing-here\" not found"
            )))
        );
        let step = step_claim(&pvc("c", Some("ext"), "1Gi", RWO), &[], &classes, false);
        assert!(
            matches!(&step, ClaimStep::Pending(Some(n)) if n.reason == "ExternalProvisioning" && n.message.contains("'example.com/nfs'")),
            "{step:?}"
        );
        // Pre-bound by volumeName: honoured over a better fit, checked, waited for.
        let mut named = pvc("c", Some("fast"), "1Gi", RWO);
        named["spec"]["volumeName"] = json!("big");
        let pvs = [pv("small", Some("fast"), "1Gi", RWO), pv("big", Some("fast"), "10Gi", RWO)];
        assert_eq!(step_claim(&named, &pvs, &classes, false), ClaimStep::Bind("big".into()));
        assert_eq!(step_claim(&named, &pvs[..1], &classes, false), ClaimStep::Pending(None));
        let step = step_claim(&named, &[pv("big", Some("slow"), "10Gi", RWO)], &classes, false);
        assert_eq!(
            step,
            ClaimStep::Pending(Some(note(
                EventType::Warning,
                "FailedBinding",
                "Cannot bind to requested volume \"big\": storageClassName does not match"
            )))
        );
        // WaitForFirstConsumer: nothing until a pod uses the claim.
        let mut wffc = class("late", PROVISIONER);
        wffc["volumeBindingMode"] = json!("WaitForFirstConsumer");
        let late = pvc("c", Some("late"), "1Gi", RWO);
        let free = [pv("v", Some("late"), "1Gi", RWO)];
        assert!(
            matches!(step_claim(&late, &free, std::slice::from_ref(&wffc), false), ClaimStep::Pending(Some(n)) if n.reason == "WaitForFirstConsumer")
        );
        assert_eq!(step_claim(&late, &free, std::slice::from_ref(&wffc), true), ClaimStep::Bind("v".into()));
        // Bound, then the volume goes: Lost.
        let mut bound = bound_claim(&claim, &free[0]);
        assert!(matches!(step_claim(&bound, &[], &classes, false), ClaimStep::Lost(n) if n.reason == "ClaimLost"));
        bound["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(step_claim(&bound, &[], &classes, false), ClaimStep::Done);
    }

    #[test]
    fn default_class_is_the_newest_default() {
        let mut a = class("a", PROVISIONER);
        let mut b = class("b", PROVISIONER);
        let c = class("c", PROVISIONER);
        for (sc, t) in [(&mut a, "2026-01-02T00:00:00Z"), (&mut b, "2026-01-01T00:00:00Z")] {
            sc["metadata"]["annotations"] = json!({DEFAULT_CLASS: "true"});
            sc["metadata"]["creationTimestamp"] = json!(t);
        }
        assert_eq!(default_class(&[b.clone(), a, c.clone()]).map(meta::name), Some("a"));
        assert_eq!(default_class(&[c]), None);
    }

    #[test]
    fn volume_steps() {
        let dir = Path::new("/var/lib/skerry/volumes");
        let claim = pvc("c", Some("s"), "1Gi", RWO);
        let free = pv("v", Some("s"), "1Gi", RWO);
        assert_eq!(step_volume(&free, &[], dir), VolumeStep::Done, "Available is already set");
        let bound = bound_volume(&free, &claim);
        assert_eq!(
            step_volume(&bound, std::slice::from_ref(&claim), dir),
            VolumeStep::Done,
            "claim not yet written: wait"
        );
        let bound_claim = bound_claim(&claim, &bound);
        assert_eq!(step_volume(&bound, std::slice::from_ref(&bound_claim), dir), VolumeStep::Done);
        // The claim is gone, or replaced by a namesake: Released, then the policy.
        let mut namesake = claim.clone();
        namesake["metadata"]["uid"] = json!("new");
        assert_eq!(step_volume(&bound, &[namesake], dir), VolumeStep::Phase("Released", None));
        let released = with_phase(&bound, "Released");
        assert_eq!(step_volume(&released, &[], dir), VolumeStep::Done, "Retain (the PV default)");
        let mut delete = released.clone();
        delete["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
        let step = step_volume(&delete, &[], dir);
        assert!(
            matches!(&step, VolumeStep::Fail(n) if n.reason == "VolumeFailedDelete" && n.message.contains("/srv/v is kept")),
            "{step:?}"
        );
        // Provisioned here: the directory goes; a volume that only says so keeps its data.
        let mut local = provisioned_volume(&claim, "s", "Delete", &dir.join("pvc-uid-c"));
        local["status"]["phase"] = json!("Released");
        assert_eq!(step_volume(&local, &[], dir), VolumeStep::DeleteLocal(dir.join("pvc-uid-c")));
        local["spec"]["hostPath"]["path"] = json!("/etc");
        assert!(matches!(step_volume(&local, &[], dir), VolumeStep::Fail(_)));
        // The claim is bound elsewhere: a binding we made is undone.
        let mut elsewhere = bound_claim.clone();
        elsewhere["spec"]["volumeName"] = json!("other");
        assert_eq!(step_volume(&bound, &[elsewhere], dir), VolumeStep::Unbind);
        let freed = unbound_volume(&bound);
        assert!(freed["spec"].get("claimRef").is_none() && freed["status"]["phase"] == "Available", "{freed}");
    }

    // ---- against the store

    async fn create(store: &Store, rt: &ResourceType, obj: Value) -> Value {
        let proposer = crate::store::Proposer::local(store);
        let mut obj = admit(rt, obj).unwrap().object;
        meta::set(&mut obj, "uid", uuid::Uuid::new_v4().to_string());
        meta::set(&mut obj, "creationTimestamp", meta::now());
        proposer.propose(Command::Create { resource: rt.key(), object: obj }).await.unwrap().object
    }

    async fn get(store: &Store, rt: &ResourceType, name: &str) -> Option<Value> {
        let ns = if rt.namespaced { "default" } else { "" };
        store.get(&rt.key(), ns, name).await.unwrap()
    }

    async fn delete(store: &Store, rt: &ResourceType, name: &str) {
        let proposer = crate::store::Proposer::local(store);
        let ns = if rt.namespaced { "default" } else { "" };
        proposer
            .propose(Command::Delete { resource: rt.key(), namespace: ns.into(), name: name.into(), uid: None })
            .await
            .unwrap();
    }

    async fn events_of(store: &Store, obj: &Value) -> Vec<Value> {
        let (events, _) = store.list(&resource::EVENTS.key(), None).await.unwrap();
        events.into_iter().filter(|e| e["involvedObject"]["uid"] == meta::uid(obj)).collect()
    }

    async fn setup() -> (Store, Proposer, tempfile::TempDir) {
        let (store, proposer) = crate::store::test_store().await;
        (store, proposer, tempfile::tempdir().unwrap())
    }

    #[tokio::test]
    async fn binds_both_sides() {
        let (store, proposer, dir) = setup().await;
        let c = Controller::new(store.clone(), proposer.clone(), dir.path());
        let claim =
            create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("mongo-pvc", Some("mylocalstorage"), "20Gi", RWO))
                .await;
        c.reconcile().await.unwrap();
        c.flush_events().await;
        let events = events_of(&store, &claim).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["message"], "storageclass.storage.k8s.io \"mylocalstorage\" not found");
        // The volume arrives after the claim (storage.yml's order).
        create(&store, &resource::PERSISTENT_VOLUMES, pv("small", Some("mylocalstorage"), "10Gi", RWO)).await;
        create(&store, &resource::PERSISTENT_VOLUMES, pv("local-storage", Some("mylocalstorage"), "20Gi", RWO)).await;
        c.reconcile().await.unwrap();
        let pv = get(&store, &resource::PERSISTENT_VOLUMES, "local-storage").await.unwrap();
        assert_eq!(pv["status"]["phase"], "Bound");
        let r = &pv["spec"]["claimRef"];
        assert_eq!((r["kind"].as_str(), r["apiVersion"].as_str()), (Some("PersistentVolumeClaim"), Some("v1")));
        assert_eq!(
            (r["namespace"].as_str(), r["name"].as_str(), r["uid"].as_str()),
            (Some("default"), Some("mongo-pvc"), Some(meta::uid(&claim)))
        );
        assert!(r["resourceVersion"].is_string());
        let claim = get(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "mongo-pvc").await.unwrap();
        assert_eq!(claim["spec"]["volumeName"], "local-storage");
        assert_eq!(
            claim["status"],
            json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "20Gi"}})
        );
        assert_eq!(annotation(&claim, BIND_COMPLETED), Some("yes"));
        assert_eq!(get(&store, &resource::PERSISTENT_VOLUMES, "small").await.unwrap()["status"]["phase"], "Available");
        // A second pass changes nothing.
        let rev = store.revision().await.unwrap();
        c.reconcile().await.unwrap();
        assert_eq!(store.revision().await.unwrap(), rev, "a settled pass writes nothing");
    }

    #[tokio::test]
    async fn two_claims_never_share_a_volume() {
        let (store, proposer, dir) = setup().await;
        let c = Controller::new(store.clone(), proposer.clone(), dir.path());
        create(&store, &resource::PERSISTENT_VOLUMES, pv("only", Some("s"), "1Gi", RWO)).await;
        create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("a", Some("s"), "1Gi", RWO)).await;
        create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("b", Some("s"), "1Gi", RWO)).await;
        c.reconcile().await.unwrap();
        let phases = [
            get(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "a").await.unwrap(),
            get(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "b").await.unwrap(),
        ]
        .map(|c| c["status"]["phase"].as_str().unwrap().to_string());
        assert_eq!(phases, ["Bound", "Pending"]);
    }

    #[tokio::test]
    async fn provisions_from_the_default_class_and_deletes_on_release() {
        let (store, proposer, dir) = setup().await;
        ensure_default_class(&store, &proposer).await.unwrap();
        ensure_default_class(&store, &proposer).await.unwrap();
        let sc = get(&store, &resource::STORAGE_CLASSES, LOCAL_PATH).await.unwrap();
        assert!(is_default_class(&sc));
        assert_eq!(
            (sc["provisioner"].as_str(), sc["reclaimPolicy"].as_str(), sc["volumeBindingMode"].as_str()),
            (Some(PROVISIONER), Some("Delete"), Some("Immediate"))
        );
        let c = Controller::new(store.clone(), proposer.clone(), dir.path());
        let claim = create(
            &store,
            &resource::PERSISTENT_VOLUME_CLAIMS,
            pvc("data", None, "1Gi", &["ReadWriteOnce", "ReadWriteOncePod"]),
        )
        .await;
        c.reconcile().await.unwrap();
        let name = format!("pvc-{}", meta::uid(&claim));
        let path = dir.path().join("volumes").join(&name);
        let mode = std::fs::metadata(&path).expect("the volume's directory exists").permissions().mode();
        assert_eq!(mode & 0o7777, 0o777);
        let pv = get(&store, &resource::PERSISTENT_VOLUMES, &name).await.unwrap();
        assert_eq!(pv["spec"]["hostPath"]["path"], path.display().to_string());
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteOnce", "ReadWriteOncePod"]));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(pv["spec"]["storageClassName"], LOCAL_PATH);
        assert_eq!(annotation(&pv, PROVISIONED_BY), Some(PROVISIONER));
        assert_eq!(pv["spec"]["claimRef"]["uid"], meta::uid(&claim));
        assert_eq!(pv["status"]["phase"], "Bound");
        admit(&resource::PERSISTENT_VOLUMES, pv.clone()).expect("the provisioned volume is a valid PersistentVolume");
        let claim = get(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "data").await.unwrap();
        assert_eq!(claim["spec"]["storageClassName"], LOCAL_PATH, "the default class is assigned");
        assert_eq!(claim["spec"]["volumeName"], name.as_str());
        assert_eq!(claim["status"]["phase"], "Bound");
        c.flush_events().await;
        let events = events_of(&store, &claim).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0]["reason"].as_str(), events[0]["message"].as_str()),
            (Some("ProvisioningSucceeded"), Some(format!("Successfully provisioned volume {name}").as_str()))
        );
        std::fs::write(path.join("file"), "data").unwrap();

        delete(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "data").await;
        c.reconcile().await.unwrap();
        assert!(get(&store, &resource::PERSISTENT_VOLUMES, &name).await.is_none(), "Delete: the volume goes");
        assert!(!path.exists(), "and its directory with it");
    }

    #[tokio::test]
    async fn release_keeps_user_data() {
        let (store, proposer, dir) = setup().await;
        let c = Controller::new(store.clone(), proposer.clone(), dir.path());
        let data = dir.path().join("user-data");
        std::fs::create_dir(&data).unwrap();
        let mut retained = pv("retained", Some("s"), "1Gi", RWO);
        retained["spec"]["hostPath"]["path"] = json!(data.display().to_string());
        let mut deleted = pv("deleted", Some("t"), "1Gi", RWO);
        deleted["spec"]["hostPath"]["path"] = json!(data.display().to_string());
        deleted["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
        create(&store, &resource::PERSISTENT_VOLUMES, retained).await;
        create(&store, &resource::PERSISTENT_VOLUMES, deleted).await;
        create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("a", Some("s"), "1Gi", RWO)).await;
        create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("b", Some("t"), "1Gi", RWO)).await;
        c.reconcile().await.unwrap();
        delete(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "a").await;
        delete(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "b").await;
        c.reconcile().await.unwrap();
        let retained = get(&store, &resource::PERSISTENT_VOLUMES, "retained").await.unwrap();
        assert_eq!(retained["status"]["phase"], "Released");
        assert_eq!(retained["spec"]["claimRef"]["name"], "a", "the claimRef is kept");
        let deleted = get(&store, &resource::PERSISTENT_VOLUMES, "deleted").await.unwrap();
        assert_eq!(deleted["status"]["phase"], "Failed");
        assert!(deleted["status"]["message"].as_str().unwrap().contains("is kept"), "{deleted}");
        assert!(data.exists(), "a user's hostPath is never removed");
        // A new claim of the same name does not get the released volume.
        create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("a", Some("s"), "1Gi", RWO)).await;
        c.reconcile().await.unwrap();
        assert_eq!(get(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "a").await.unwrap()["status"]["phase"], "Pending");
        c.flush_events().await;
        assert!(events_of(&store, &deleted).await.iter().any(|e| e["reason"] == "VolumeFailedDelete"));
    }

    #[tokio::test]
    async fn unbindable_claim_stays_pending_with_one_folded_event() {
        let (store, proposer, dir) = setup().await;
        ensure_default_class(&store, &proposer).await.unwrap();
        let c = Controller::new(store.clone(), proposer.clone(), dir.path());
        let claim =
            create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("lost", Some("nothing-here"), "1Gi", RWO)).await;
        let none = create(&store, &resource::PERSISTENT_VOLUME_CLAIMS, pvc("none", Some(""), "1Gi", RWO)).await;
        c.reconcile().await.unwrap();
        c.reconcile().await.unwrap();
        c.flush_events().await;
        assert_eq!(
            get(&store, &resource::PERSISTENT_VOLUME_CLAIMS, "lost").await.unwrap()["status"]["phase"],
            "Pending"
        );
        let events = events_of(&store, &claim).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0]["type"].as_str(), events[0]["reason"].as_str(), events[0]["count"].as_i64()),
            (Some("Warning"), Some("ProvisioningFailed"), Some(2))
        );
        let events = events_of(&store, &none).await;
        assert_eq!(events[0]["reason"], "FailedBinding");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing provisioned");
        assert!(store.list(&resource::PERSISTENT_VOLUMES.key(), None).await.unwrap().0.is_empty());
    }
}
