//! Deployments: a ReplicaSet per pod template, rolled from the old ones to the new one.
//!
//! Follows kube-controller-manager's deployment controller step for step (`sync.go`,
//! `rolling.go`, `recreate.go`, `progress.go`, `util/deployment_util.go`), so that `rollout
//! status`, `rollout undo` and the events read as they do on Kubernetes. A pass lists the
//! Deployments and ReplicaSets once (pods only when a `Recreate` rollout must wait for old
//! pods); each Deployment claims its ReplicaSets, then either only scales (paused, or
//! `spec.replicas` changed) or takes one rollout step — scale the new ReplicaSet up within
//! `maxSurge`, or the old ones down within `maxUnavailable` — and writes its status. Every write
//! wakes the next pass, which takes the next step; the progress deadline is a timed wake-up.
//!
//! One deliberate difference: the old ReplicaSets are scaled down only when every ReplicaSet's
//! status is current (`observedGeneration` = `generation`). Kubernetes reads ReplicaSet status
//! from a cache that the replica set controller keeps close behind; here the two controllers
//! race, and a stale `availableReplicas` could scale down below `maxUnavailable`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::replicaset::{self as rs, earliest, spec_replicas, status_count};
use crate::events::{EventType, Recorder};
use crate::objects::workload::{equal_ignore_hash, scaled, template_hash, POD_TEMPLATE_HASH, REVISION};
use crate::objects::{self, meta, resource, selector::Selector};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

/// The replicas the Deployment wanted when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `replicas + maxSurge` when the Deployment last scaled this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Earlier revisions of a ReplicaSet that a rollback made current again.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `kubectl apply`'s record of the last applied manifest (never copied to ReplicaSets).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The longest `revision-history` annotation Kubernetes keeps.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

// ---------------------------------------------------------------------------------------------
// Pure helpers (deployment_util.go).

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

pub fn is_rolling(d: &Value) -> bool {
    d.pointer("/spec/strategy/type").and_then(Value::as_str) != Some("Recreate")
}

pub fn is_paused(d: &Value) -> bool {
    d.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false)
}

/// `maxSurge` and `maxUnavailable` resolved against `spec.replicas` (surge rounds up,
/// unavailable down); both zero would stall, so unavailable becomes 1.
pub fn fenceposts(d: &Value) -> (i64, i64) {
    let replicas = spec_replicas(d);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = scaled(ru.and_then(|r| r.get("maxSurge")), replicas, true, "25%").unwrap_or(0).max(0);
    let unavailable = scaled(ru.and_then(|r| r.get("maxUnavailable")), replicas, false, "25%").unwrap_or(0).max(0);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

pub fn max_surge(d: &Value) -> i64 {
    if is_rolling(d) {
        fenceposts(d).0
    } else {
        0
    }
}

pub fn max_unavailable(d: &Value) -> i64 {
    let replicas = spec_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let m = meta::metadata_mut(obj);
    if !m.get("annotations").is_some_and(Value::is_object) {
        m.insert("annotations".into(), json!({}));
    }
    m["annotations"][key] = json!(value);
}

/// A ReplicaSet's rollout revision (0 when it has none).
pub fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn created(obj: &Value) -> Option<Timestamp> {
    meta::parse_time(obj.pointer("/metadata/creationTimestamp"))
}

/// Oldest first; ties by name (Kubernetes' `ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &Value, b: &Value) -> Ordering {
    created(a).cmp(&created(b)).then_with(|| meta::name(a).cmp(meta::name(b)))
}

/// How many replicas the new ReplicaSet should have now: everything at once for `Recreate`;
/// for `RollingUpdate`, as many more as `replicas + maxSurge` leaves room for.
pub fn new_rs_new_replicas(d: &Value, all_replicas: i64, new_replicas: i64) -> i64 {
    let replicas = spec_replicas(d);
    if !is_rolling(d) {
        return replicas;
    }
    let max_total = replicas + max_surge(d);
    if all_replicas >= max_total {
        return new_replicas;
    }
    new_replicas + (max_total - all_replicas).min(replicas - new_replicas).max(0)
}

/// Sets the desired/max replica annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let mut changed = false;
    for (key, n) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = n.to_string();
        if annotation(rs, key) != Some(v.as_str()) {
            set_annotation(rs, key, &v);
            changed = true;
        }
    }
    changed
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | "deprecated.deployment.rollback.to"
    )
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copies the Deployment's annotations (those
/// kubectl copies), raises the revision to `new_revision` (keeping the old number in
/// `revision-history` — a rollback), and on creation sets the replica annotations.
pub fn set_new_rs_annotations(d: &Value, rs: &mut Value, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    if let Some(ann) = d.pointer("/metadata/annotations").and_then(Value::as_object) {
        for (k, v) in ann {
            let Some(v) = v.as_str() else { continue };
            if skip_copy(k) || annotation(rs, k) == Some(v) {
                continue;
            }
            set_annotation(rs, k, v);
            changed = true;
        }
    }
    let old = annotation(rs, REVISION).map(str::to_string);
    let old_n = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return changed,
    };
    if old_n < new_revision {
        set_annotation(rs, REVISION, &new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotation(rs, REVISION_HISTORY).unwrap_or("").to_string();
            if history.is_empty() {
                set_annotation(rs, REVISION_HISTORY, &old);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                while total > MAX_REVISION_HISTORY_CHARS && !revisions.is_empty() {
                    total -= revisions.remove(0).len() + 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    revisions.push(&old);
                    set_annotation(rs, REVISION_HISTORY, &revisions.join(","));
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, spec_replicas(d), spec_replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

pub fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status.get("conditions")?.as_array()?.iter().find(|c| c["type"] == kind)
}

pub fn new_condition(kind: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> Value {
    let at = meta::timestamp(now);
    json!({"type": kind, "status": status, "lastUpdateTime": at, "lastTransitionTime": at, "reason": reason, "message": message})
}

fn remove_condition(status: &mut Value, kind: &str) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c["type"] != kind);
        if list.is_empty() {
            status.as_object_mut().map(|s| s.remove("conditions"));
        }
    }
}

/// Kubernetes' `SetDeploymentCondition`: no change when status and reason are the same (so
/// `lastUpdateTime` stays); the transition time is kept while the status stays.
pub fn set_condition(status: &mut Value, mut cond: Value) {
    let kind = cond["type"].as_str().unwrap_or("").to_string();
    if let Some(current) = condition(status, &kind) {
        if current["status"] == cond["status"] && current["reason"] == cond["reason"] {
            return;
        }
        if current["status"] == cond["status"] {
            cond["lastTransitionTime"] = current["lastTransitionTime"].clone();
        }
    }
    remove_condition(status, &kind);
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    status["conditions"].as_array_mut().expect("array").push(cond);
}

pub fn has_progress_deadline(d: &Value) -> bool {
    int(d.pointer("/spec/progressDeadlineSeconds")).is_some_and(|s| s != i32::MAX as i64)
}

fn has_history_limit(d: &Value) -> Option<i64> {
    int(d.pointer("/spec/revisionHistoryLimit")).filter(|l| *l != i32::MAX as i64)
}

/// The Deployment status its ReplicaSets add up to (`calculateStatus`).
pub fn calculate_status(d: &Value, all: &[&Value], new: Option<&Value>, now: Timestamp) -> Value {
    let sum = |field: &str| all.iter().map(|r| status_count(r, field)).sum::<i64>();
    let available = sum("availableReplicas");
    let total: i64 = all.iter().map(|r| spec_replicas(r)).sum();
    let mut s = Map::new();
    let mut put = |k: &str, n: i64| {
        if n != 0 {
            s.insert(k.into(), json!(n));
        }
    };
    put("observedGeneration", int(d.pointer("/metadata/generation")).unwrap_or(0));
    put("replicas", sum("replicas"));
    put("updatedReplicas", new.map_or(0, |n| status_count(n, "replicas")));
    put("readyReplicas", sum("readyReplicas"));
    put("availableReplicas", available);
    put("unavailableReplicas", (total - available).max(0));
    if let Some(c) = d.pointer("/status/collisionCount") {
        s.insert("collisionCount".into(), c.clone());
    }
    if let Some(c) = d.pointer("/status/conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        s.insert("conditions".into(), c.clone());
    }
    let mut s = Value::Object(s);
    let cond = if available >= spec_replicas(d) - max_unavailable(d) {
        new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now)
    } else {
        new_condition(AVAILABLE, "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.", now)
    };
    set_condition(&mut s, cond);
    s
}

/// Every replica is updated and available, and the current generation was observed.
pub fn deployment_complete(d: &Value, status: &Value) -> bool {
    let want = spec_replicas(d);
    let n = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
    n("updatedReplicas") == want
        && n("replicas") == want
        && n("availableReplicas") == want
        && n("observedGeneration") >= int(d.pointer("/metadata/generation")).unwrap_or(0)
}

/// The rollout moved since the Deployment's recorded status (`DeploymentProgressing`).
pub fn deployment_progressing(d: &Value, new: &Value) -> bool {
    let empty = json!({});
    let old = d.get("status").unwrap_or(&empty);
    let n = |s: &Value, f: &str| s.get(f).and_then(Value::as_i64).unwrap_or(0);
    n(new, "updatedReplicas") > n(old, "updatedReplicas")
        || n(new, "replicas") - n(new, "updatedReplicas") < n(old, "replicas") - n(old, "updatedReplicas")
        || n(new, "readyReplicas") > n(old, "readyReplicas")
        || n(new, "availableReplicas") > n(old, "availableReplicas")
}

fn deadline(d: &Value) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(int(d.pointer("/spec/progressDeadlineSeconds")).unwrap_or(600))
}

/// The rollout made no progress for `progressDeadlineSeconds` (`DeploymentTimedOut`).
pub fn timed_out(d: &Value, status: &Value, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = condition(status, PROGRESSING) else { return false };
    match c["reason"].as_str() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => meta::parse_time(c.get("lastUpdateTime")).is_some_and(|from| from + deadline(d) < now),
    }
}

/// When to look again at a rollout that may time out (`requeueStuckDeployment`).
pub fn requeue_stuck(d: &Value, status: &Value, now: Timestamp) -> Option<Duration> {
    let c = condition(status, PROGRESSING)?;
    if !has_progress_deadline(d) || deployment_complete(d, status) || c["reason"] == TIMED_OUT {
        return None;
    }
    let from = meta::parse_time(c.get("lastUpdateTime"))?;
    let after = now.duration_until(from + deadline(d));
    // Timing out needs the deadline strictly in the past: wake a moment after it.
    Some(Duration::try_from(after).unwrap_or_default() + Duration::from_millis(5))
}

/// How much a ReplicaSet should grow or shrink when the Deployment's size changes mid-rollout
/// (`getReplicaSetFraction`): its share of the new size, by the size it was scaled for.
pub fn replica_set_fraction(rs: &Value, d: &Value) -> i64 {
    let replicas = spec_replicas(rs);
    if spec_replicas(d) == 0 {
        return -replicas;
    }
    let deployment_replicas = spec_replicas(d) + max_surge(d);
    let annotated =
        annotation(rs, MAX_REPLICAS).and_then(|a| a.parse::<i64>().ok()).unwrap_or_else(|| status_count(d, "replicas"));
    if annotated <= 0 {
        return 0;
    }
    ((replicas * deployment_replicas) as f64 / annotated as f64).round() as i64 - replicas
}

/// New sizes for the active ReplicaSets `active` (Kubernetes' proportional scaling), in the
/// order of `active`.
pub fn proportional_sizes(d: &Value, active: &[&Value]) -> Vec<i64> {
    let total: i64 = active.iter().map(|r| spec_replicas(r)).sum();
    let allowed = if spec_replicas(d) > 0 { spec_replicas(d) + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    let mut order: Vec<usize> = (0..active.len()).collect();
    // Larger first; on a tie newer first when growing, older first when shrinking.
    order.sort_by(|&a, &b| {
        let size = spec_replicas(active[b]).cmp(&spec_replicas(active[a]));
        size.then_with(
            || if to_add > 0 { by_creation(active[b], active[a]) } else { by_creation(active[a], active[b]) },
        )
    });
    let mut sizes: Vec<i64> = active.iter().map(|r| spec_replicas(r)).collect();
    if to_add == 0 {
        return sizes;
    }
    let mut added = 0;
    for &i in &order {
        let rs = active[i];
        if spec_replicas(rs) == 0 || to_add == added {
            continue;
        }
        let fraction = replica_set_fraction(rs, d);
        let allowed = to_add - added;
        let p = if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) };
        sizes[i] += p;
        added += p;
    }
    if added != to_add {
        if let Some(&first) = order.first() {
            sizes[first] = (sizes[first] + to_add - added).max(0);
        }
    }
    sizes
}

/// The ReplicaSet a Deployment creates for its current template.
pub fn new_replica_set(d: &Value, hash: &str, replicas: i64, now: Timestamp) -> Value {
    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut spec = json!({"replicas": replicas, "selector": selector, "template": template.clone()});
    if let Some(m) = int(d.pointer("/spec/minReadySeconds")).filter(|m| *m > 0) {
        spec["minReadySeconds"] = json!(m);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", meta::name(d)), "namespace": meta::namespace(d),
            "labels": template["metadata"]["labels"], "ownerReferences": [meta::controller_ref(d)],
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::timestamp(now), "generation": 1,
        },
        "spec": spec,
    })
}

fn bump_generation(obj: &mut Value) {
    let g = int(obj.pointer("/metadata/generation")).unwrap_or(0) + 1;
    meta::set(obj, "generation", g);
}

/// The ReplicaSet's status describes its current spec.
fn status_current(rs: &Value) -> bool {
    status_count(rs, "observedGeneration") >= int(rs.pointer("/metadata/generation")).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The controller.

/// Why a Deployment's sync stopped early.
#[derive(Debug)]
enum Stop {
    /// Someone else wrote first (or a name collided): the next pass starts from fresh state.
    Requeue,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        if rs::benign(&e) {
            Stop::Requeue
        } else {
            Stop::Store(e)
        }
    }
}

type Step<T> = Result<T, Stop>;

/// Pods by namespace, listed on first need.
type Pods = Option<BTreeMap<String, Vec<Value>>>;

pub struct Controller {
    store: Store,
    proposer: Proposer,
    events: Recorder,
}

impl Controller {
    pub fn new(store: Store, proposer: Proposer, node: &str) -> Controller {
        Controller {
            events: Recorder::new(store.clone(), proposer.clone(), "deployment-controller", node.to_string()),
            store,
            proposer,
        }
    }

    /// One pass over every Deployment; returns when to look again (a progress deadline).
    pub async fn reconcile(&self, now: Timestamp) -> Result<Option<Duration>, StoreError> {
        let (deployments, _) = self.store.list(&resource::DEPLOYMENTS.key(), None).await?;
        if deployments.is_empty() {
            return Ok(None);
        }
        let (sets, _) = self.store.list(&resource::REPLICA_SETS.key(), None).await?;
        let mut by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for s in sets {
            by_ns.entry(meta::namespace(&s).to_string()).or_default().push(s);
        }
        let mut pods: Pods = None;
        let mut wake = None;
        // Terminating Deployments are left to the garbage collector.
        for d in deployments.iter().filter(|d| !meta::is_deleting(d)) {
            let sets = by_ns.entry(meta::namespace(d).to_string()).or_default();
            match self.sync(d, sets, &mut pods, now).await {
                Ok(w) => wake = earliest(wake, w),
                Err(Stop::Requeue) => wake = earliest(wake, Some(Duration::from_millis(500))),
                Err(Stop::Store(e)) => {
                    tracing::warn!(error = %e, deployment = meta::name(d), "deployment sync failed; will retry");
                    wake = earliest(wake, Some(Duration::from_secs(1)));
                }
            }
        }
        Ok(wake)
    }

    async fn sync(&self, d: &Value, sets: &mut [Value], pods: &mut Pods, now: Timestamp) -> Step<Option<Duration>> {
        let Some(sel) =
            d.pointer("/spec/selector").and_then(|s| Selector::from_label_selector(s).ok()).filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        // Claim ReplicaSets as the replica set controller claims pods.
        let claim = rs::claim(d, &sel, sets);
        let mut owned: Vec<Value> = claim.owned.iter().map(|&i| sets[i].clone()).collect();
        for &i in &claim.adopt {
            let adopted = meta::with_controller_ref(&sets[i], d);
            if let Ok(applied) =
                self.proposer.propose(Command::Update { resource: resource::REPLICA_SETS.key(), object: adopted }).await
            {
                sets[i] = applied.object.clone();
                owned.push(applied.object);
            }
        }
        for &i in &claim.release {
            let released = meta::without_owner(&sets[i], meta::uid(d));
            if let Ok(applied) = self
                .proposer
                .propose(Command::Update { resource: resource::REPLICA_SETS.key(), object: released })
                .await
            {
                sets[i] = applied.object;
            }
        }
        let mut s = Sync { ctl: self, d: d.clone(), sets: owned, now };
        s.check_paused_conditions().await?;
        if is_paused(&s.d) || s.is_scaling_event().await? {
            return s.sync_scale_only().await;
        }
        if is_rolling(&s.d) {
            s.rollout_rolling().await
        } else {
            if pods.is_none() {
                let (all, _) = self.store.list(&resource::PODS.key(), None).await?;
                let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for p in all {
                    map.entry(meta::namespace(&p).to_string()).or_default().push(p);
                }
                *pods = Some(map);
            }
            let ns_pods = pods.as_ref().and_then(|m| m.get(meta::namespace(d))).map(Vec::as_slice).unwrap_or(&[]);
            s.rollout_recreate(ns_pods).await
        }
    }
}

/// One Deployment's sync: the Deployment and its ReplicaSets, refreshed after each write.
struct Sync<'a> {
    ctl: &'a Controller,
    d: Value,
    sets: Vec<Value>,
    now: Timestamp,
}

impl Sync<'_> {
    fn replicas(&self) -> i64 {
        spec_replicas(&self.d)
    }

    async fn write_deployment(&mut self) -> Step<()> {
        let applied = self
            .ctl
            .proposer
            .propose(Command::Update { resource: resource::DEPLOYMENTS.key(), object: self.d.clone() })
            .await?;
        self.d = applied.object;
        Ok(())
    }

    async fn write_set(&mut self, i: usize, new: Value) -> Step<()> {
        let applied =
            self.ctl.proposer.propose(Command::Update { resource: resource::REPLICA_SETS.key(), object: new }).await?;
        self.sets[i] = applied.object;
        Ok(())
    }

    fn sum_spec(&self, of: &[usize]) -> i64 {
        of.iter().map(|&i| spec_replicas(&self.sets[i])).sum()
    }

    fn by_creation(&self, mut of: Vec<usize>) -> Vec<usize> {
        of.sort_by(|&a, &b| by_creation(&self.sets[a], &self.sets[b]));
        of
    }

    /// Progressing Unknown `DeploymentPaused` / `DeploymentResumed` (`checkPausedConditions`).
    async fn check_paused_conditions(&mut self) -> Step<()> {
        if !has_progress_deadline(&self.d) {
            return Ok(());
        }
        let empty = json!({});
        let cond = condition(self.d.get("status").unwrap_or(&empty), PROGRESSING);
        if cond.is_some_and(|c| c["reason"] == TIMED_OUT) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c["reason"] == PAUSED);
        let new = match (is_paused(&self.d), paused_cond) {
            (true, false) => new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", self.now),
            (false, true) => new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", self.now),
            _ => return Ok(()),
        };
        if !self.d.get("status").is_some_and(Value::is_object) {
            self.d["status"] = json!({});
        }
        set_condition(&mut self.d["status"], new);
        self.write_deployment().await
    }

    /// The new ReplicaSet (template equal to the Deployment's) — the oldest such — and the rest.
    fn new_and_old(&self) -> (Option<usize>, Vec<usize>) {
        let template = self.d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        let all = self.by_creation((0..self.sets.len()).collect());
        let new = all
            .iter()
            .copied()
            .find(|&i| self.sets[i].pointer("/spec/template").is_some_and(|t| equal_ignore_hash(t, &template)));
        (new, all.into_iter().filter(|&i| Some(i) != new).collect())
    }

    /// `getAllReplicaSetsAndSyncRevision`: finds (or, when `create`, makes) the new ReplicaSet
    /// and brings the revision annotations of it and of the Deployment up to date.
    async fn new_and_old_synced(&mut self, create: bool) -> Step<(Option<usize>, Vec<usize>)> {
        let (new, old) = self.new_and_old();
        let new_revision = old.iter().map(|&i| revision(&self.sets[i])).max().unwrap_or(0) + 1;
        if let Some(i) = new {
            let mut set = self.sets[i].clone();
            let annotated = set_new_rs_annotations(&self.d, &mut set, new_revision, true);
            let min_ready = int(self.d.pointer("/spec/minReadySeconds")).unwrap_or(0);
            let min_ready_changed = rs::min_ready_seconds(&set) != min_ready;
            if min_ready_changed {
                set["spec"]["minReadySeconds"] = json!(min_ready);
                bump_generation(&mut set);
            }
            if annotated || min_ready_changed {
                self.write_set(i, set).await?;
            }
            let rev = annotation(&self.sets[i], REVISION).unwrap_or("").to_string();
            let mut needs_update = self.set_deployment_revision(&rev);
            if has_progress_deadline(&self.d) && self.d.get("status").and_then(|s| condition(s, PROGRESSING)).is_none()
            {
                let msg = format!("Found new replica set \"{}\"", meta::name(&self.sets[i]));
                self.set_status_condition(new_condition(PROGRESSING, "True", FOUND_NEW_RS, &msg, self.now));
                needs_update = true;
            }
            if needs_update {
                self.write_deployment().await?;
            }
            return Ok((Some(i), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collisions = int(self.d.pointer("/status/collisionCount")).unwrap_or(0);
        let hash = template_hash(self.d.pointer("/spec/template").unwrap_or(&Value::Null), collisions);
        let all_replicas = self.sum_spec(&old);
        let mut set = new_replica_set(&self.d, &hash, 0, self.now);
        let replicas = new_rs_new_replicas(&self.d, all_replicas, 0);
        set["spec"]["replicas"] = json!(replicas);
        set_new_rs_annotations(&self.d, &mut set, new_revision, false);
        let set = match objects::admit(&resource::REPLICA_SETS, set.clone()) {
            Ok(a) => a.object,
            Err(e) => {
                self.ctl
                    .events
                    .record(
                        &self.d,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Failed to create new replica set: {e}"),
                    )
                    .await;
                return Err(Stop::Requeue);
            }
        };
        let name = meta::name(&set).to_string();
        let mut already_exists = false;
        match self.ctl.proposer.propose(Command::Create { resource: resource::REPLICA_SETS.key(), object: set }).await {
            Ok(applied) => {
                self.sets.push(applied.object);
                if replicas > 0 {
                    let msg = format!("Scaled up replica set {name} from 0 to {replicas}");
                    self.ctl.events.record(&self.d, EventType::Normal, "ScalingReplicaSet", &msg).await;
                }
            }
            Err(StoreError::Rejected(Rejection::AlreadyExists { .. })) => {
                let existing = self
                    .ctl
                    .store
                    .get(&resource::REPLICA_SETS.key(), meta::namespace(&self.d), &name)
                    .await?
                    .ok_or(Stop::Requeue)?;
                let ours =
                    meta::controller_of(&existing).is_some_and(|r| r["uid"].as_str() == Some(meta::uid(&self.d)));
                let same = existing
                    .pointer("/spec/template")
                    .zip(self.d.pointer("/spec/template"))
                    .is_some_and(|(a, b)| equal_ignore_hash(a, b));
                if !(ours && same) {
                    // A hash collision: the next hash comes from a higher collision count.
                    self.d["status"]["collisionCount"] = json!(collisions + 1);
                    self.write_deployment().await?;
                    return Err(Stop::Requeue);
                }
                already_exists = true;
                self.sets.push(existing);
            }
            Err(e) => return Err(e.into()),
        }
        let i = self.sets.len() - 1;
        let mut needs_update = self.set_deployment_revision(&new_revision.to_string());
        if !already_exists && has_progress_deadline(&self.d) {
            let msg = format!("Created new replica set \"{name}\"");
            self.set_status_condition(new_condition(PROGRESSING, "True", NEW_RS_CREATED, &msg, self.now));
            needs_update = true;
        }
        if needs_update {
            self.write_deployment().await?;
        }
        Ok((Some(i), old))
    }

    fn set_deployment_revision(&mut self, rev: &str) -> bool {
        if annotation(&self.d, REVISION) == Some(rev) {
            return false;
        }
        set_annotation(&mut self.d, REVISION, rev);
        true
    }

    fn set_status_condition(&mut self, cond: Value) {
        if !self.d.get("status").is_some_and(Value::is_object) {
            self.d["status"] = json!({});
        }
        set_condition(&mut self.d["status"], cond);
    }

    /// Scales a ReplicaSet, recording the event (`scaleReplicaSetAndRecordEvent`).
    async fn scale(&mut self, i: usize, to: i64) -> Step<bool> {
        let from = spec_replicas(&self.sets[i]);
        if from == to {
            return Ok(false);
        }
        self.scale_set(i, to, if from < to { "up" } else { "down" }).await
    }

    /// Sets a ReplicaSet's size and replica annotations (`scaleReplicaSet`); whether the size changed.
    async fn scale_set(&mut self, i: usize, to: i64, operation: &str) -> Step<bool> {
        let from = spec_replicas(&self.sets[i]);
        let mut set = self.sets[i].clone();
        let annotated = set_replicas_annotations(&mut set, self.replicas(), self.replicas() + max_surge(&self.d));
        if from == to && !annotated {
            return Ok(false);
        }
        if from != to {
            set["spec"]["replicas"] = json!(to);
            bump_generation(&mut set);
        }
        self.write_set(i, set).await?;
        if from != to {
            let msg = format!("Scaled {operation} replica set {} from {from} to {to}", meta::name(&self.sets[i]));
            self.ctl.events.record(&self.d, EventType::Normal, "ScalingReplicaSet", &msg).await;
        }
        Ok(from != to)
    }

    /// Whether some active ReplicaSet was sized for another `spec.replicas` (`isScalingEvent`).
    async fn is_scaling_event(&mut self) -> Step<bool> {
        let (new, old) = self.new_and_old_synced(false).await?;
        let replicas = self.replicas();
        Ok(new.into_iter().chain(old).any(|i| {
            let set = &self.sets[i];
            spec_replicas(set) > 0
                && annotation(set, DESIRED_REPLICAS).and_then(|a| a.parse::<i64>().ok()).is_some_and(|n| n != replicas)
        }))
    }

    /// Paused or resized: scale only, no rollout step (`sync`).
    async fn sync_scale_only(&mut self) -> Step<Option<Duration>> {
        let (new, old) = self.new_and_old_synced(false).await?;
        self.scale_to_size(new, &old).await?;
        if is_paused(&self.d) {
            self.cleanup(&old).await?;
        }
        let status = self.status(new);
        if self.d.get("status") != Some(&status) {
            self.d["status"] = status;
            self.write_deployment().await?;
        }
        Ok(None)
    }

    /// Kubernetes' `scale`: one active ReplicaSet takes the whole size; a saturated new one
    /// lets the old ones go; otherwise the change is spread proportionally.
    async fn scale_to_size(&mut self, new: Option<usize>, old: &[usize]) -> Step<()> {
        let replicas = self.replicas();
        let mut newest_first = self.by_creation(old.to_vec());
        newest_first.reverse();
        let active: Vec<usize> =
            newest_first.iter().copied().chain(new).filter(|&i| spec_replicas(&self.sets[i]) > 0).collect();
        let target = match active.len() {
            0 => new.or(newest_first.first().copied()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            self.scale(i, replicas).await?;
            return Ok(());
        }
        if let Some(n) = new {
            let set = &self.sets[n];
            let saturated = spec_replicas(set) == replicas
                && annotation(set, DESIRED_REPLICAS).and_then(|a| a.parse::<i64>().ok()) == Some(replicas)
                && status_count(set, "availableReplicas") == replicas;
            if saturated {
                let active_old: Vec<usize> =
                    old.iter().copied().filter(|&i| spec_replicas(&self.sets[i]) > 0).collect();
                for i in active_old {
                    self.scale(i, 0).await?;
                }
                return Ok(());
            }
        }
        if is_rolling(&self.d) {
            let sets: Vec<&Value> = active.iter().map(|&i| &self.sets[i]).collect();
            let total: i64 = sets.iter().map(|s| spec_replicas(s)).sum();
            let allowed = if replicas > 0 { replicas + max_surge(&self.d) } else { 0 };
            let operation = if allowed - total < 0 { "down" } else { "up" };
            let sizes = proportional_sizes(&self.d, &sets);
            for (i, size) in active.into_iter().zip(sizes) {
                self.scale_set(i, size, operation).await?;
            }
        }
        Ok(())
    }

    /// One rolling-update step (`rolloutRolling`).
    async fn rollout_rolling(&mut self) -> Step<Option<Duration>> {
        let (new, old) = self.new_and_old_synced(true).await?;
        let Some(new) = new else { return Err(Stop::Requeue) };
        if self.reconcile_new(new).await? {
            return self.sync_rollout_status(Some(new)).await;
        }
        if self.reconcile_old(new, &old).await? {
            return self.sync_rollout_status(Some(new)).await;
        }
        if deployment_complete(&self.d, self.d.get("status").unwrap_or(&Value::Null)) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(new)).await
    }

    /// Scales the new ReplicaSet up within `maxSurge` (or down to `spec.replicas`).
    async fn reconcile_new(&mut self, new: usize) -> Step<bool> {
        let current = spec_replicas(&self.sets[new]);
        let replicas = self.replicas();
        if current == replicas {
            return Ok(false);
        }
        if current > replicas {
            return self.scale(new, replicas).await;
        }
        let all = self.sum_spec(&(0..self.sets.len()).collect::<Vec<_>>());
        let to = new_rs_new_replicas(&self.d, all, current);
        self.scale(new, to).await
    }

    /// Scales old ReplicaSets down within `maxUnavailable`: unhealthy replicas first, then
    /// as many as the available pods allow (`reconcileOldReplicaSets`).
    async fn reconcile_old(&mut self, new: usize, old: &[usize]) -> Step<bool> {
        let active_old: Vec<usize> =
            self.by_creation(old.iter().copied().filter(|&i| spec_replicas(&self.sets[i]) > 0).collect());
        if self.sum_spec(&active_old) == 0 {
            return Ok(false);
        }
        if !self.sets.iter().filter(|s| !meta::is_deleting(s)).all(status_current) {
            // Wait for the replica set controller to report on the last change (see the module doc).
            return Ok(false);
        }
        let all: Vec<usize> = (0..self.sets.len()).collect();
        let min_available = self.replicas() - max_unavailable(&self.d);
        let new_unavailable = spec_replicas(&self.sets[new]) - status_count(&self.sets[new], "availableReplicas");
        let max_scaled_down = self.sum_spec(&all) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Replicas that are not available go first: deleting them costs no availability.
        let mut cleaned = 0;
        for &i in &active_old {
            if max_scaled_down - cleaned <= 0 {
                break;
            }
            let (replicas, available) =
                (spec_replicas(&self.sets[i]), status_count(&self.sets[i], "availableReplicas"));
            if replicas == 0 || available >= replicas {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(replicas - available);
            self.scale_set(i, replicas - n, "down").await?;
            cleaned += n;
        }
        // Then available ones, as far as minimum availability allows.
        let available: i64 = self.sets.iter().map(|s| status_count(s, "availableReplicas")).sum();
        let mut scaled_down = 0;
        if available > min_available {
            let total = (available - min_available).min(max_scaled_down - cleaned);
            for &i in &active_old {
                if scaled_down >= total {
                    break;
                }
                let replicas = spec_replicas(&self.sets[i]);
                if replicas == 0 {
                    continue;
                }
                let n = replicas.min(total - scaled_down);
                self.scale(i, replicas - n).await?;
                scaled_down += n;
            }
        }
        Ok(cleaned + scaled_down > 0)
    }

    /// One Recreate step: old ReplicaSets to zero, wait until no old pod is left, then the new
    /// ReplicaSet at full size (`rolloutRecreate`).
    async fn rollout_recreate(&mut self, pods: &[Value]) -> Step<Option<Duration>> {
        let (new, old) = self.new_and_old_synced(false).await?;
        let mut scaled_down = false;
        for &i in &old {
            if spec_replicas(&self.sets[i]) > 0 {
                scaled_down |= self.scale(i, 0).await?;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(new).await;
        }
        let old_uids: Vec<&str> = old.iter().map(|&i| meta::uid(&self.sets[i])).collect();
        let old_running = old.iter().map(|&i| status_count(&self.sets[i], "replicas")).sum::<i64>() > 0
            || pods.iter().any(|p| {
                !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
                    && meta::controller_of(p).and_then(|r| r["uid"].as_str()).is_some_and(|u| old_uids.contains(&u))
            });
        if old_running {
            return self.sync_rollout_status(new).await;
        }
        let (new, old) = match new {
            Some(n) => (n, old),
            None => match self.new_and_old_synced(true).await? {
                (Some(n), old) => (n, old),
                (None, _) => return Err(Stop::Requeue),
            },
        };
        self.scale(new, self.replicas()).await?;
        if deployment_complete(&self.d, self.d.get("status").unwrap_or(&Value::Null)) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(new)).await
    }

    /// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit` (`cleanupDeployment`).
    async fn cleanup(&mut self, old: &[usize]) -> Step<()> {
        let Some(limit) = has_history_limit(&self.d) else { return Ok(()) };
        let mut cleanable: Vec<usize> = old.iter().copied().filter(|&i| !meta::is_deleting(&self.sets[i])).collect();
        let diff = cleanable.len() as i64 - limit;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|&a, &b| {
            revision(&self.sets[a])
                .cmp(&revision(&self.sets[b]))
                .then_with(|| by_creation(&self.sets[a], &self.sets[b]))
        });
        for &i in cleanable.iter().take(diff as usize) {
            let set = &self.sets[i];
            if status_count(set, "replicas") != 0 || spec_replicas(set) != 0 || !status_current(set) {
                continue;
            }
            let cmd = Command::delete_of(resource::REPLICA_SETS.key(), set);
            match self.ctl.proposer.propose(cmd).await {
                Ok(_) => meta::set(&mut self.sets[i], "deletionTimestamp", meta::timestamp(self.now)),
                Err(e) if rs::benign(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn status(&self, new: Option<usize>) -> Value {
        let all: Vec<&Value> = self.sets.iter().filter(|s| !meta::is_deleting(s)).collect();
        calculate_status(&self.d, &all, new.map(|i| &self.sets[i]), self.now)
    }

    /// Writes the rollout's status and the Progressing condition (`syncRolloutStatus`);
    /// returns when a stuck rollout's deadline passes.
    async fn sync_rollout_status(&mut self, new: Option<usize>) -> Step<Option<Duration>> {
        let mut status = self.status(new);
        let deadline = has_progress_deadline(&self.d);
        if !deadline {
            remove_condition(&mut status, PROGRESSING);
        }
        let empty = json!({});
        let current = condition(self.d.get("status").unwrap_or(&empty), PROGRESSING).cloned();
        let n = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
        let complete =
            n("replicas") == n("updatedReplicas") && current.as_ref().is_some_and(|c| c["reason"] == NEW_RS_AVAILABLE);
        if deadline && !complete {
            let subject = match new {
                Some(i) => format!("ReplicaSet \"{}\"", meta::name(&self.sets[i])),
                None => format!("Deployment \"{}\"", meta::name(&self.d)),
            };
            if deployment_complete(&self.d, &status) {
                let msg = format!("{subject} has successfully progressed.");
                set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, &msg, self.now));
            } else if deployment_progressing(&self.d, &status) {
                let msg = format!("{subject} is progressing.");
                let mut cond = new_condition(PROGRESSING, "True", RS_UPDATED, &msg, self.now);
                if let Some(c) = current.as_ref().filter(|c| c["status"] == "True") {
                    cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
                }
                // Replaced, not set: the update time moves with every step of progress.
                remove_condition(&mut status, PROGRESSING);
                set_condition(&mut status, cond);
            } else if timed_out(&self.d, &status, self.now) {
                let msg = format!("{subject} has timed out progressing.");
                set_condition(&mut status, new_condition(PROGRESSING, "False", TIMED_OUT, &msg, self.now));
            }
        }
        let wake = requeue_stuck(&self.d, &status, self.now);
        if self.d.get("status") != Some(&status) {
            self.d["status"] = status;
            self.write_deployment().await?;
        }
        Ok(wake)
    }
}

pub async fn run(store: Store, proposer: Proposer, node: String, shutdown: CancellationToken) {
    let controller = Controller::new(store.clone(), proposer, &node);
    // Pods too: a Recreate rollout waits for the old pods to be gone.
    let watched = [resource::DEPLOYMENTS.key(), resource::REPLICA_SETS.key(), resource::PODS.key()];
    let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
    crate::controllers::run_loop_timed(store, &watched, shutdown, || async {
        match controller.reconcile(Timestamp::now()).await {
            Ok(wake) => wake,
            Err(e) => {
                tracing::warn!(error = %e, "deployment reconcile failed; will retry");
                Some(Duration::from_secs(1))
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::{create, pods, run_pod, t, update};
    use crate::controllers::replicaset::{self as rsc};
    use crate::objects::pod::is_ready;

    fn deployment(name: &str, replicas: i64, extra: Value) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "c", "image": "img:1"}]}}}
        });
        objects::merge_patch(&mut d, &extra);
        d
    }

    /// The store, both controllers and a fake kubelet, stepped one second at a time.
    struct Cluster {
        store: Store,
        proposer: Proposer,
        deployments: Controller,
        sets: rsc::Controller,
        now: i64,
        /// The kubelet makes running pods ready.
        ready: bool,
        /// The kubelet finishes graceful deletions.
        finish_deletions: bool,
    }

    impl Cluster {
        async fn new() -> Cluster {
            let (store, proposer) = crate::store::test_store().await;
            Cluster {
                proposer: proposer.clone(),
                deployments: Controller::new(store.clone(), proposer.clone(), "n1"),
                sets: rsc::Controller::new(store.clone(), proposer.clone(), "n1"),
                store,
                now: 10,
                ready: true,
                finish_deletions: true,
            }
        }

        async fn d(&self, name: &str) -> Value {
            self.store.get(&resource::DEPLOYMENTS.key(), "default", name).await.unwrap().unwrap()
        }

        async fn sets(&self) -> Vec<Value> {
            self.store.list(&resource::REPLICA_SETS.key(), None).await.unwrap().0
        }

        /// What the API does on a spec change: the caller's edit, generation + 1.
        async fn edit(&self, name: &str, f: impl FnOnce(&mut Value)) {
            let mut d = self.d(name).await;
            f(&mut d);
            bump_generation(&mut d);
            update(&self.store, &resource::DEPLOYMENTS, d).await;
        }

        async fn kubelet(&self) {
            for p in pods(&self.store).await {
                if meta::is_deleting(&p) {
                    if self.finish_deletions {
                        let cmd = Command::Delete {
                            resource: "pods".into(),
                            namespace: "default".into(),
                            name: meta::name(&p).into(),
                            uid: None,
                        };
                        self.proposer.propose(cmd).await.unwrap();
                    }
                } else if p["status"]["phase"] != "Running" || (self.ready && !is_ready(&p)) {
                    update(&self.store, &resource::PODS, run_pod(&p, self.ready.then(|| t(self.now)))).await;
                }
            }
        }

        /// One round: deployment controller, replica set controller, kubelet; `check` after each.
        async fn step_checked(&mut self, check: &mut impl FnMut(&[Value], &[Value])) -> Option<Duration> {
            let wake = self.deployments.reconcile(t(self.now)).await.unwrap();
            check(&self.sets().await, &pods(&self.store).await);
            self.sets.reconcile(t(self.now)).await.unwrap();
            check(&self.sets().await, &pods(&self.store).await);
            self.kubelet().await;
            check(&self.sets().await, &pods(&self.store).await);
            self.now += 1;
            wake
        }

        async fn step(&mut self) -> Option<Duration> {
            self.step_checked(&mut |_, _| {}).await
        }

        /// Steps until the rollout of `name` is complete as `rollout status` sees it.
        async fn roll(&mut self, name: &str, check: &mut impl FnMut(&[Value], &[Value])) -> usize {
            for n in 1..=40 {
                self.step_checked(check).await;
                let d = self.d(name).await;
                let s = &d["status"];
                let c = |f: &str| s[f].as_i64().unwrap_or(0);
                if c("observedGeneration") >= d["metadata"]["generation"].as_i64().unwrap()
                    && c("updatedReplicas") == spec_replicas(&d)
                    && c("replicas") == c("updatedReplicas")
                    && c("availableReplicas") == c("updatedReplicas")
                    && pods(&self.store).await.iter().all(|p| !meta::is_deleting(p))
                {
                    return n;
                }
            }
            panic!("rollout of {name} did not complete: {:#}", self.d(name).await["status"]);
        }

        async fn events(&self) -> Vec<String> {
            self.deployments.events.flush().await;
            let mut events = self.store.list("events", None).await.unwrap().0;
            events.sort_by_key(|e| e["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap());
            events
                .iter()
                .filter(|e| e["reason"] == "ScalingReplicaSet")
                .map(|e| e["message"].as_str().unwrap().to_string())
                .collect()
        }
    }

    fn set_named<'a>(sets: &'a [Value], name: &str) -> &'a Value {
        sets.iter().find(|s| meta::name(s) == name).unwrap_or_else(|| panic!("no replica set {name}"))
    }

    fn active_pods(pods: &[Value]) -> Vec<&Value> {
        pods.iter().filter(|p| rsc::is_active(p)).collect()
    }

    #[test]
    fn surge_and_unavailable_resolve_like_kubernetes() {
        let d = |replicas: i64, surge: Value, unavailable: Value| {
            deployment(
                "web",
                replicas,
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}),
            )
        };
        assert_eq!(fenceposts(&d(10, json!("25%"), json!("25%"))), (3, 2), "surge rounds up, unavailable down");
        assert_eq!(fenceposts(&d(1, json!("25%"), json!("25%"))), (1, 0));
        assert_eq!(fenceposts(&d(3, json!(0), json!("10%"))), (0, 1), "both zero would stall: unavailable becomes 1");
        assert_eq!(max_unavailable(&d(2, json!(0), json!(5))), 2, "clamped to replicas");
        assert_eq!(max_unavailable(&d(0, json!(1), json!(1))), 0);
        let recreate = deployment("web", 4, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
        // New replicas: room left under replicas + surge, never past replicas.
        let rolling = d(10, json!(3), json!(2));
        assert_eq!(new_rs_new_replicas(&rolling, 10, 0), 3);
        assert_eq!(new_rs_new_replicas(&rolling, 13, 3), 3, "no room: unchanged");
        assert_eq!(new_rs_new_replicas(&rolling, 8, 7), 10, "capped at replicas");
        assert_eq!(new_rs_new_replicas(&recreate, 4, 0), 4);
    }

    #[test]
    fn proportional_scaling_mid_rollout() {
        let rs = |name: &str, replicas: i64, created: i64| {
            json!({"metadata": {"name": name, "creationTimestamp": meta::timestamp(t(created)),
                                "annotations": {DESIRED_REPLICAS: "10", MAX_REPLICAS: "13"}}, "spec": {"replicas": replicas}})
        };
        let (old, new) = (rs("old", 8, 0), rs("new", 5, 1));
        let bigger = deployment("web", 20, json!({}));
        assert_eq!(proportional_sizes(&bigger, &[&old, &new]), vec![15, 10], "25 allowed, split 8:5");
        let smaller = deployment("web", 5, json!({}));
        let sizes = proportional_sizes(&smaller, &[&old, &new]);
        assert_eq!(sizes.iter().sum::<i64>(), 5 + 2, "5 replicas + 2 surge");
        assert_eq!(sizes, vec![4, 3]);
        assert_eq!(proportional_sizes(&deployment("web", 0, json!({})), &[&old, &new]), vec![0, 0]);
    }

    #[test]
    fn conditions_keep_transition_times_and_revisions_keep_history() {
        let mut status = json!({});
        set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_CREATED, "a", t(0)));
        set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_CREATED, "b", t(5)));
        assert_eq!(condition(&status, PROGRESSING).unwrap()["message"], "a", "same status and reason: unchanged");
        set_condition(&mut status, new_condition(PROGRESSING, "True", RS_UPDATED, "c", t(9)));
        let c = condition(&status, PROGRESSING).unwrap();
        assert_eq!(
            (c["lastTransitionTime"].as_str(), c["lastUpdateTime"].as_str()),
            (Some(meta::timestamp(t(0)).as_str()), Some(meta::timestamp(t(9)).as_str()))
        );
        set_condition(&mut status, new_condition(PROGRESSING, "False", TIMED_OUT, "d", t(12)));
        assert_eq!(condition(&status, PROGRESSING).unwrap()["lastTransitionTime"], meta::timestamp(t(12)));

        let d = deployment(
            "web",
            3,
            json!({"metadata": {"annotations": {rsc_change_cause(): "v2", LAST_APPLIED: "{}", REVISION: "9"}}}),
        );
        let mut set = json!({"metadata": {"name": "web-x", "annotations": {REVISION: "1"}}});
        assert!(set_new_rs_annotations(&d, &mut set, 4, true));
        assert_eq!(
            set["metadata"]["annotations"],
            json!({REVISION: "4", REVISION_HISTORY: "1", rsc_change_cause(): "v2"})
        );
        assert!(set_new_rs_annotations(&d, &mut set, 6, true));
        assert_eq!(set["metadata"]["annotations"][REVISION_HISTORY], "1,4");
        assert!(!set_new_rs_annotations(&d, &mut set, 6, true), "nothing to change");
        let mut fresh = json!({"metadata": {"name": "web-y"}});
        set_new_rs_annotations(&d, &mut fresh, 1, false);
        assert_eq!(fresh["metadata"]["annotations"][DESIRED_REPLICAS], "3");
        assert_eq!(fresh["metadata"]["annotations"][MAX_REPLICAS], "4");
        assert!(fresh["metadata"]["annotations"].get(REVISION_HISTORY).is_none());
    }

    fn rsc_change_cause() -> &'static str {
        crate::objects::workload::CHANGE_CAUSE
    }

    #[tokio::test]
    async fn rolling_update_steps_within_surge_and_unavailable_to_completion() {
        let mut c = Cluster::new().await;
        let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
        let d = create(
            &c.store,
            &resource::DEPLOYMENTS,
            deployment(
                "web",
                4,
                json!({"spec": {"strategy": strategy},
            "metadata": {"annotations": {rsc_change_cause(): "first", LAST_APPLIED: "{}"}}}),
            ),
        )
        .await;
        c.roll("web", &mut |_, _| {}).await;
        let h1 = template_hash(&d["spec"]["template"], 0);
        let sets = c.sets().await;
        assert_eq!(sets.len(), 1);
        let first = set_named(&sets, &format!("web-{h1}"));
        assert_eq!(first["spec"]["selector"]["matchLabels"], json!({"app": "web", POD_TEMPLATE_HASH: h1}));
        assert_eq!(first["spec"]["template"]["metadata"]["labels"], json!({"app": "web", POD_TEMPLATE_HASH: h1}));
        assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        let ann = &first["metadata"]["annotations"];
        assert_eq!(
            (ann[REVISION].as_str(), ann[DESIRED_REPLICAS].as_str(), ann[MAX_REPLICAS].as_str()),
            (Some("1"), Some("4"), Some("5"))
        );
        assert_eq!(ann[rsc_change_cause()], "first");
        assert!(ann.get(LAST_APPLIED).is_none(), "last-applied-configuration is not copied");
        let all = pods(&c.store).await;
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|p| p["metadata"]["labels"][POD_TEMPLATE_HASH] == h1 && is_ready(p)));
        let d = c.d("web").await;
        assert_eq!(d["metadata"]["annotations"][REVISION], "1");
        let s = &d["status"];
        assert_eq!(
            (
                s["replicas"].as_i64(),
                s["updatedReplicas"].as_i64(),
                s["readyReplicas"].as_i64(),
                s["availableReplicas"].as_i64()
            ),
            (Some(4), Some(4), Some(4), Some(4))
        );
        assert!(s.get("unavailableReplicas").is_none());
        assert_eq!(condition(s, AVAILABLE).unwrap()["reason"], MIN_AVAILABLE);
        assert_eq!(condition(s, PROGRESSING).unwrap()["reason"], NEW_RS_AVAILABLE);
        assert_eq!(
            condition(s, PROGRESSING).unwrap()["message"],
            format!("ReplicaSet \"web-{h1}\" has successfully progressed.")
        );
        assert_eq!(c.events().await, vec![format!("Scaled up replica set web-{h1} from 0 to 4")]);

        // A new image: never more than 5 pods, never fewer than 3 available.
        c.edit("web", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2");
            d["metadata"]["annotations"][rsc_change_cause()] = json!("second");
        })
        .await;
        let mut steps = 0;
        c.roll("web", &mut |sets, pods| {
            steps += 1;
            let total: i64 = sets.iter().map(spec_replicas).sum();
            assert!(total <= 5, "replica sets add up to {total} > replicas + maxSurge");
            let active = active_pods(pods);
            assert!(active.len() <= 5, "{} pods > replicas + maxSurge", active.len());
            let ready = active.iter().filter(|p| is_ready(p)).count();
            assert!(ready >= 3, "only {ready} pods ready < replicas - maxUnavailable");
        })
        .await;
        let h2 = template_hash(&c.d("web").await["spec"]["template"], 0);
        assert_ne!(h1, h2);
        let sets = c.sets().await;
        assert_eq!(sets.len(), 2);
        let (old, new) = (set_named(&sets, &format!("web-{h1}")), set_named(&sets, &format!("web-{h2}")));
        assert_eq!((spec_replicas(old), spec_replicas(new)), (0, 4));
        assert_eq!(new["metadata"]["annotations"][REVISION], "2");
        assert_eq!(new["metadata"]["annotations"][rsc_change_cause()], "second");
        assert_eq!(c.d("web").await["metadata"]["annotations"][REVISION], "2");
        let all = pods(&c.store).await;
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|p| p["metadata"]["labels"][POD_TEMPLATE_HASH] == h2));
        let events = c.events().await;
        assert_eq!(events[1], format!("Scaled up replica set web-{h2} from 0 to 1"));
        assert!(events[2].starts_with(&format!("Scaled down replica set web-{h1} from 4 to ")), "{events:?}");
        assert_eq!(events.last().unwrap(), &format!("Scaled down replica set web-{h1} from 1 to 0"));
        assert!(steps > 6, "the rollout took several steps");
    }

    #[tokio::test]
    async fn recreate_scales_old_to_zero_and_waits_for_old_pods_to_go() {
        let mut c = Cluster::new().await;
        create(
            &c.store,
            &resource::DEPLOYMENTS,
            deployment("db", 2, json!({"spec": {"strategy": {"type": "Recreate"}}})),
        )
        .await;
        c.roll("db", &mut |_, _| {}).await;
        c.edit("db", |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2")).await;
        c.finish_deletions = false;
        for _ in 0..4 {
            c.step().await;
        }
        let sets = c.sets().await;
        assert_eq!(sets.len(), 1, "no new replica set while old pods are still terminating");
        assert_eq!(spec_replicas(&sets[0]), 0);
        assert!(pods(&c.store).await.iter().all(meta::is_deleting));
        c.finish_deletions = true;
        c.roll("db", &mut |sets, pods| {
            // Old and new pods never run side by side.
            let hashes: std::collections::BTreeSet<&str> =
                pods.iter().filter_map(|p| p["metadata"]["labels"][POD_TEMPLATE_HASH].as_str()).collect();
            assert!(hashes.len() <= 1, "old and new pods together: {hashes:?} ({} sets)", sets.len());
        })
        .await;
        let h2 = template_hash(&c.d("db").await["spec"]["template"], 0);
        assert_eq!(c.events().await.last().unwrap(), &format!("Scaled up replica set db-{h2} from 0 to 2"));
    }

    #[tokio::test]
    async fn history_is_cleaned_to_the_limit_and_undo_makes_an_old_set_new() {
        let mut c = Cluster::new().await;
        create(&c.store, &resource::DEPLOYMENTS, deployment("web", 2, json!({"spec": {"revisionHistoryLimit": 1}})))
            .await;
        c.roll("web", &mut |_, _| {}).await;
        let v1 = c.d("web").await["spec"]["template"].clone();
        for image in ["img:2", "img:3"] {
            c.edit("web", |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)).await;
            c.roll("web", &mut |_, _| {}).await;
        }
        c.step().await;
        let sets = c.sets().await;
        let mut revisions: Vec<i64> = sets.iter().map(revision).collect();
        revisions.sort();
        assert_eq!(revisions, vec![2, 3], "the oldest old replica set goes beyond revisionHistoryLimit");

        // Undo to revision 2, as `rollout undo` does: the old template (without the hash) is copied back.
        let r2 = sets.iter().find(|s| revision(s) == 2).unwrap().clone();
        let mut template = r2["spec"]["template"].clone();
        template["metadata"]["labels"].as_object_mut().unwrap().remove(POD_TEMPLATE_HASH);
        c.edit("web", |d| d["spec"]["template"] = template).await;
        c.roll("web", &mut |_, _| {}).await;
        let sets = c.sets().await;
        assert_eq!(sets.len(), 2, "no new replica set: the old one is new again");
        let undone = set_named(&sets, meta::name(&r2));
        assert_eq!(undone["metadata"]["annotations"][REVISION], "4");
        assert_eq!(undone["metadata"]["annotations"][REVISION_HISTORY], "2");
        assert_eq!(spec_replicas(undone), 2);
        assert_eq!(c.d("web").await["metadata"]["annotations"][REVISION], "4");

        // Back to the first template: a fresh replica set (its own was cleaned up), revision 5.
        c.edit("web", |d| d["spec"]["template"] = v1).await;
        c.roll("web", &mut |_, _| {}).await;
        c.step().await;
        let mut revisions: Vec<i64> = c.sets().await.iter().map(revision).collect();
        revisions.sort();
        assert_eq!(revisions, vec![4, 5]);
    }

    #[tokio::test]
    async fn paused_deployments_scale_but_do_not_roll() {
        let mut c = Cluster::new().await;
        create(&c.store, &resource::DEPLOYMENTS, deployment("web", 2, json!({}))).await;
        c.roll("web", &mut |_, _| {}).await;
        c.edit("web", |d| {
            d["spec"]["paused"] = json!(true);
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2");
        })
        .await;
        c.step().await;
        assert_eq!(c.sets().await.len(), 1, "no rollout while paused");
        let d = c.d("web").await;
        let p = condition(&d["status"], PROGRESSING).unwrap();
        assert_eq!(
            (p["status"].as_str(), p["reason"].as_str(), p["message"].as_str()),
            (Some("Unknown"), Some(PAUSED), Some("Deployment is paused"))
        );
        assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);

        c.edit("web", |d| d["spec"]["replicas"] = json!(3)).await;
        c.step().await;
        c.step().await;
        let sets = c.sets().await;
        assert_eq!((sets.len(), spec_replicas(&sets[0])), (1, 3), "a paused deployment still scales");
        assert_eq!(active_pods(&pods(&c.store).await).len(), 3);

        let mut watch = c.store.watch(c.store.revision().await.unwrap()).await.unwrap();
        c.edit("web", |d| d["spec"]["paused"] = json!(false)).await;
        c.roll("web", &mut |_, _| {}).await;
        assert_eq!(c.sets().await.len(), 2, "resumed: rolled out");
        let mut resumed = false;
        while let Some(Ok(ev)) = futures::FutureExt::now_or_never(watch.next()) {
            if ev.resource == resource::DEPLOYMENTS.key() {
                resumed |= condition(&ev.object["status"], PROGRESSING)
                    .is_some_and(|c| c["reason"] == RESUMED && c["message"] == "Deployment is resumed");
            }
        }
        assert!(resumed, "Progressing went through DeploymentResumed");
    }

    #[tokio::test]
    async fn min_ready_seconds_delays_availability() {
        let mut c = Cluster::new().await;
        create(&c.store, &resource::DEPLOYMENTS, deployment("web", 2, json!({"spec": {"minReadySeconds": 5}}))).await;
        c.step().await;
        c.step().await;
        let set = &c.sets().await[0];
        assert_eq!(set["spec"]["minReadySeconds"], 5, "copied to the replica set");
        // Pods became ready at t(10); the replica set controller asks to be woken after 5 s.
        let wake = c.sets.reconcile(t(c.now)).await.unwrap();
        assert!(
            wake.is_some_and(|w| w > Duration::from_secs(3) && w <= Duration::from_secs(5) + Duration::from_millis(5)),
            "{wake:?}"
        );
        c.deployments.reconcile(t(c.now)).await.unwrap();
        let d = c.d("web").await;
        assert_eq!(d["status"]["readyReplicas"], 2);
        assert_eq!(d["status"]["unavailableReplicas"], 2);
        assert_eq!(condition(&d["status"], AVAILABLE).unwrap()["reason"], MIN_UNAVAILABLE);
        c.now = 16;
        c.step().await;
        c.step().await;
        let d = c.d("web").await;
        assert_eq!(d["status"]["availableReplicas"], 2);
        assert_eq!(condition(&d["status"], AVAILABLE).unwrap()["status"], "True");
        assert_eq!(condition(&d["status"], PROGRESSING).unwrap()["reason"], NEW_RS_AVAILABLE);
    }

    #[tokio::test]
    async fn a_stuck_rollout_exceeds_its_progress_deadline() {
        let mut c = Cluster::new().await;
        c.ready = false;
        create(
            &c.store,
            &resource::DEPLOYMENTS,
            deployment("web", 1, json!({"spec": {"progressDeadlineSeconds": 30}})),
        )
        .await;
        c.step().await;
        c.step().await;
        let wake = c.step().await.expect("a wake-up at the deadline");
        let d = c.d("web").await;
        let p = condition(&d["status"], PROGRESSING).unwrap().clone();
        assert_eq!(p["status"], "True");
        let since = meta::parse_time(p.get("lastUpdateTime")).unwrap();
        assert_eq!(
            Duration::try_from(t(c.now - 1).duration_until(since + jiff::SignedDuration::from_secs(30))).unwrap()
                + Duration::from_millis(5),
            wake
        );
        c.now = since.as_second() - 1_700_000_000 + 31;
        c.step().await;
        let d = c.d("web").await;
        let p = condition(&d["status"], PROGRESSING).unwrap();
        assert_eq!((p["status"].as_str(), p["reason"].as_str()), (Some("False"), Some(TIMED_OUT)));
        assert!(p["message"].as_str().unwrap().ends_with("has timed out progressing."), "{p}");
        assert_eq!(c.step().await, None, "no more wake-ups once timed out");
        // Pods finally get ready: the rollout completes.
        c.ready = true;
        c.roll("web", &mut |_, _| {}).await;
        assert_eq!(condition(&c.d("web").await["status"], PROGRESSING).unwrap()["reason"], NEW_RS_AVAILABLE);
    }
}
