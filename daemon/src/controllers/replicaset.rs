//! ReplicaSets and ReplicationControllers: keep `spec.replicas` pods of the template running.
//!
//! One implementation for both kinds (an RC's selector is a plain map, an RS's a
//! `LabelSelector`), after kube-controller-manager's replica set controller. A pass lists the
//! owners and the pods once; for each owner that is not terminating it claims pods (adopts
//! matching orphans, releases owned pods that stopped matching, never touches pods another
//! controller owns), creates the missing pods concurrently (the store commits them together) or
//! deletes the least valuable ones, then writes `status` when it changed. Availability after
//! `minReadySeconds` is time-based: the pass returns when the next pod becomes available so the
//! loop wakes then. The pure parts — [`claim`], [`deletion_order`], [`status`] — are tested
//! directly. Reads never go stale under us: the store is read after our own writes are
//! acknowledged and one pass runs at a time, so Kubernetes' "expectations" are not needed.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{EventType, Recorder};
use crate::objects::{self, meta, pod, resource, selector::Selector, ResourceType};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

/// The annotation that makes a pod cheaper (or dearer) to delete on scale-down.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A generated name's prefix is cut so that prefix + 5 characters fit a 63-character label.
const MAX_GENERATED_PREFIX: usize = 58;

// ---------------------------------------------------------------------------------------------
// Pure helpers, shared with the Deployment controller.

/// The pods an RS (a `LabelSelector`) or an RC (a plain map, defaulting to the template's
/// labels) selects; `None` when the selector cannot be read.
pub fn selector(owner: &Value) -> Option<Selector> {
    let sel = owner.pointer("/spec/selector")?;
    if owner["kind"] == "ReplicationController" {
        let map: BTreeMap<String, String> =
            sel.as_object()?.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
        return Some(Selector::from_map(&map));
    }
    Selector::from_label_selector(sel).ok()
}

/// `spec.replicas` (1 when absent, as defaulted).
pub fn spec_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// An integer status field (0 when absent: Kubernetes omits zeros).
pub fn status_count(obj: &Value, field: &str) -> i64 {
    obj.get("status").and_then(|s| s.get(field)).and_then(Value::as_i64).unwrap_or(0)
}

pub fn min_ready_seconds(obj: &Value) -> i64 {
    obj.pointer("/spec/minReadySeconds").and_then(Value::as_i64).unwrap_or(0).max(0)
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

/// A pod that counts toward replicas: not terminating and not finished.
pub fn is_active(pod: &Value) -> bool {
    !meta::is_deleting(pod) && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// When a ready pod became ready.
fn ready_since(pod: &Value) -> Option<Timestamp> {
    pod::ready_condition(pod)
        .filter(|c| c["status"] == "True")
        .and_then(|c| meta::parse_time(c.get("lastTransitionTime")))
}

/// When a ready pod counts as available: `minReadySeconds` after it became ready (Kubernetes
/// requires that moment to be strictly in the past). `None` when the pod is not ready.
pub fn available_at(pod: &Value, min_ready: i64) -> Option<Timestamp> {
    if !pod::is_ready(pod) {
        return None;
    }
    if min_ready == 0 {
        return Some(Timestamp::MIN);
    }
    // A ready pod without a transition time is treated as never available, as Kubernetes does.
    Some(ready_since(pod)? + jiff::SignedDuration::from_secs(min_ready))
}

pub fn is_available(pod: &Value, min_ready: i64, now: Timestamp) -> bool {
    available_at(pod, min_ready).is_some_and(|t| min_ready == 0 || t < now)
}

/// How long until the next of `pods` becomes available, if one is ready but not yet available.
pub fn next_available(pods: &[&Value], min_ready: i64, now: Timestamp) -> Option<Duration> {
    pods.iter()
        .filter(|p| !is_available(p, min_ready, now))
        .filter_map(|p| available_at(p, min_ready))
        .map(|t| {
            let after = now.duration_until(t);
            // Strictly after `t`: wake a moment past it.
            Duration::try_from(after).unwrap_or_default() + Duration::from_millis(5)
        })
        .min()
}

/// The earlier of two optional wake-ups.
pub fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which pods of a namespace an owner controls, and which it should adopt or release.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// Indices of pods the owner controls and that match its selector.
    pub owned: Vec<usize>,
    /// Orphans (no controller) that match and are not terminating.
    pub adopt: Vec<usize>,
    /// Pods the owner controls that no longer match.
    pub release: Vec<usize>,
}

/// Kubernetes' `ClaimPods` over `objects` (pods, or ReplicaSets for a Deployment): objects
/// controlled by another owner are never touched; a terminating owner adopts and releases
/// nothing.
pub fn claim(owner: &Value, selector: &Selector, objects: &[Value]) -> Claim {
    let mut c = Claim::default();
    let (uid, ns) = (meta::uid(owner), meta::namespace(owner));
    let owner_deleting = meta::is_deleting(owner);
    for (i, obj) in objects.iter().enumerate() {
        if meta::namespace(obj) != ns {
            continue;
        }
        let matches = selector.matches(&meta::labels(obj));
        match meta::controller_of(obj) {
            Some(r) if r["uid"].as_str() == Some(uid) => {
                if matches {
                    c.owned.push(i);
                } else if !owner_deleting {
                    c.release.push(i);
                }
            }
            Some(_) => {}
            None if matches && !owner_deleting && !meta::is_deleting(obj) => c.adopt.push(i),
            None => {}
        }
    }
    c
}

fn assigned(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
}

fn phase_rank(pod: &Value) -> u8 {
    match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Value) -> i64 {
    pod.pointer(&format!("/metadata/annotations/{}", DELETION_COST.replace('/', "~1")))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .max()
        .unwrap_or(0)
}

fn created(pod: &Value) -> Option<Timestamp> {
    meta::parse_time(pod.pointer("/metadata/creationTimestamp"))
}

/// Kubernetes' scale-down order: `Less` means `a` goes first. Unassigned before assigned,
/// Pending before Unknown before Running, not ready before ready, lower deletion cost first,
/// ready for less time before longer, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pod::is_ready(a).cmp(&pod::is_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| match (pod::is_ready(a), pod::is_ready(b)) {
            (true, true) => ready_since(b).cmp(&ready_since(a)),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// The status an owner should have with `pods` (its active pods), keeping other fields
/// (conditions) of the current status. Zero counts are omitted, as Kubernetes omits them.
pub fn status(owner: &Value, pods: &[&Value], now: Timestamp) -> Value {
    let min_ready = min_ready_seconds(owner);
    let template_labels = owner.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            let labels = meta::labels(p);
            template_labels.into_iter().flatten().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
        .count();
    let ready = pods.iter().filter(|p| pod::is_ready(p)).count();
    let available = pods.iter().filter(|p| is_available(p, min_ready, now)).count();
    let mut s = owner.get("status").and_then(Value::as_object).cloned().unwrap_or_default();
    s.insert("replicas".into(), json!(pods.len()));
    for (field, n) in
        [("fullyLabeledReplicas", fully_labeled), ("readyReplicas", ready), ("availableReplicas", available)]
    {
        if n > 0 {
            s.insert(field.into(), json!(n));
        } else {
            s.remove(field);
        }
    }
    match owner.pointer("/metadata/generation") {
        Some(g) => s.insert("observedGeneration".into(), g.clone()),
        None => s.remove("observedGeneration"),
    };
    Value::Object(s)
}

/// A name `prefix` + 5 random characters, as `metadata.generateName` gets.
pub fn generate_name(prefix: &str) -> String {
    let mut name: String = prefix.chars().take(MAX_GENERATED_PREFIX).collect();
    let random = uuid::Uuid::new_v4();
    name.extend(random.as_bytes()[..5].iter().map(|b| NAME_ALPHABET[*b as usize % NAME_ALPHABET.len()] as char));
    name
}

/// The pod an owner's template describes, admitted (defaults filled) but not yet named.
pub fn pod_from_template(owner: &Value) -> Result<Value, objects::ObjectError> {
    let t = owner.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let prefix = format!("{}-", meta::name(owner));
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), json!(generate_name(&prefix)));
    metadata.insert("generateName".into(), json!(prefix));
    metadata.insert("namespace".into(), json!(meta::namespace(owner)));
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(v) = t.pointer(&format!("/metadata/{field}")).filter(|v| !v.is_null()) {
            metadata.insert(field.into(), v.clone());
        }
    }
    metadata.insert("ownerReferences".into(), json!([meta::controller_ref(owner)]));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": t.get("spec").cloned().unwrap_or(json!({}))});
    Ok(objects::admit(&resource::PODS, pod)?.object)
}

/// A fresh copy of an admitted template pod: its own name, uid and creation time.
fn instance(template: &Value, now: Timestamp) -> Value {
    let mut pod = template.clone();
    let prefix = template.pointer("/metadata/generateName").and_then(Value::as_str).unwrap_or("").to_string();
    meta::set(&mut pod, "name", generate_name(&prefix));
    meta::set(&mut pod, "uid", uuid::Uuid::new_v4().to_string());
    meta::set(&mut pod, "creationTimestamp", meta::timestamp(now));
    pod
}

/// The command that deletes a pod as the API does: gracefully when it is bound (the agent
/// finishes it), at once when it never reached a node or has no grace period.
pub fn delete_pod(pod: &Value, now: Timestamp) -> Command {
    let grace = objects::pod::grace_period(pod, None);
    if grace == 0 || !assigned(pod) {
        return Command::delete_of(resource::PODS.key(), pod);
    }
    Command::Update { resource: resource::PODS.key(), object: objects::pod::begin_deletion(pod, grace, now) }
}

/// Applies commands concurrently (the store commits them in one transaction); results in order.
pub async fn apply_all(proposer: &Proposer, commands: Vec<Command>) -> Vec<Result<crate::store::Applied, StoreError>> {
    futures::future::join_all(commands.into_iter().map(|c| proposer.propose(c))).await
}

/// Errors a controller expects from racing writers; the next pass sees the new state.
pub fn benign(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Rejected(Rejection::Conflict { .. })
            | StoreError::Rejected(Rejection::NotFound { .. })
            | StoreError::Rejected(Rejection::AlreadyExists { .. })
    )
}

// ---------------------------------------------------------------------------------------------
// The controller.

/// The ReplicaSet and ReplicationController controller: its store and event recorders.
pub struct Controller {
    store: Store,
    proposer: Proposer,
    rs_events: Recorder,
    rc_events: Recorder,
}

impl Controller {
    pub fn new(store: Store, proposer: Proposer, node: &str) -> Controller {
        Controller {
            rs_events: Recorder::new(store.clone(), proposer.clone(), "replicaset-controller", node.to_string()),
            rc_events: Recorder::new(store.clone(), proposer.clone(), "replication-controller", node.to_string()),
            store,
            proposer,
        }
    }

    /// One pass over every ReplicaSet and ReplicationController; returns when to run again
    /// for time-based state (a pod becoming available).
    pub async fn reconcile(&self, now: Timestamp) -> Result<Option<Duration>, StoreError> {
        let (pods, _) = self.store.list(&resource::PODS.key(), None).await?;
        let mut by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in pods {
            by_ns.entry(meta::namespace(&p).to_string()).or_default().push(p);
        }
        let mut wake = None;
        for rt in [&resource::REPLICA_SETS, &resource::REPLICATION_CONTROLLERS] {
            let (owners, _) = self.store.list(&rt.key(), None).await?;
            for owner in owners.iter().filter(|o| !meta::is_deleting(o)) {
                let pods = by_ns.entry(meta::namespace(owner).to_string()).or_default();
                match self.sync(rt, owner, pods, now).await {
                    Ok(w) => wake = earliest(wake, w),
                    Err(e) => {
                        tracing::warn!(error = %e, kind = rt.kind, name = meta::name(owner), "replica sync failed; will retry");
                        wake = earliest(wake, Some(Duration::from_secs(1)));
                    }
                }
            }
        }
        Ok(wake)
    }

    fn recorder(&self, rt: &ResourceType) -> &Recorder {
        if rt.kind == "ReplicationController" {
            &self.rc_events
        } else {
            &self.rs_events
        }
    }

    /// Syncs one owner against the pods of its namespace (updated in place as it writes).
    async fn sync(
        &self,
        rt: &ResourceType,
        owner: &Value,
        pods: &mut Vec<Value>,
        now: Timestamp,
    ) -> Result<Option<Duration>, StoreError> {
        let Some(sel) = selector(owner) else {
            tracing::warn!(kind = rt.kind, name = meta::name(owner), "unreadable selector; skipping");
            return Ok(None);
        };
        let recorder = self.recorder(rt);
        let claim = claim(owner, &sel, pods);
        let mut owned = claim.owned;
        let adopt: Vec<Command> = claim
            .adopt
            .iter()
            .map(|&i| Command::Update {
                resource: resource::PODS.key(),
                object: meta::with_controller_ref(&pods[i], owner),
            })
            .collect();
        for (&i, r) in claim.adopt.iter().zip(apply_all(&self.proposer, adopt).await) {
            match r {
                Ok(applied) => {
                    pods[i] = applied.object;
                    owned.push(i);
                }
                Err(e) if benign(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let release: Vec<Command> = claim
            .release
            .iter()
            .map(|&i| Command::Update {
                resource: resource::PODS.key(),
                object: meta::without_owner(&pods[i], meta::uid(owner)),
            })
            .collect();
        for (&i, r) in claim.release.iter().zip(apply_all(&self.proposer, release).await) {
            match r {
                Ok(applied) => pods[i] = applied.object,
                Err(e) if benign(&e) => {}
                Err(e) => return Err(e),
            }
        }

        let mut active: Vec<usize> = owned.into_iter().filter(|&i| is_active(&pods[i])).collect();
        let want = spec_replicas(owner).max(0) as usize;
        if active.len() < want {
            match pod_from_template(owner) {
                Ok(template) => {
                    let creates: Vec<Command> = (active.len()..want)
                        .map(|_| Command::Create { resource: resource::PODS.key(), object: instance(&template, now) })
                        .collect();
                    let mut failed = None;
                    for r in apply_all(&self.proposer, creates).await {
                        match r {
                            Ok(applied) => {
                                let msg = format!("Created pod: {}", meta::name(&applied.object));
                                recorder.record(owner, EventType::Normal, "SuccessfulCreate", &msg).await;
                                pods.push(applied.object);
                                active.push(pods.len() - 1);
                            }
                            Err(e) => failed = Some(e),
                        }
                    }
                    if let Some(e) = failed {
                        recorder
                            .record(owner, EventType::Warning, "FailedCreate", &format!("Error creating: {e}"))
                            .await;
                    }
                }
                Err(e) => {
                    recorder.record(owner, EventType::Warning, "FailedCreate", &format!("Error creating: {e}")).await
                }
            }
        } else if active.len() > want {
            active.sort_by(|&a, &b| deletion_order(&pods[a], &pods[b]));
            let doomed: Vec<usize> = active.drain(..active.len() - want).collect();
            let deletes: Vec<Command> = doomed.iter().map(|&i| delete_pod(&pods[i], now)).collect();
            for (&i, r) in doomed.iter().zip(apply_all(&self.proposer, deletes).await) {
                match r {
                    Ok(applied) => {
                        let msg = format!("Deleted pod: {}", meta::name(&pods[i]));
                        recorder.record(owner, EventType::Normal, "SuccessfulDelete", &msg).await;
                        pods[i] = applied.object;
                    }
                    Err(e) if benign(&e) => active.push(i),
                    Err(e) => return Err(e),
                }
            }
        }

        let current: Vec<&Value> = active.iter().map(|&i| &pods[i]).collect();
        let new_status = status(owner, &current, now);
        if owner.get("status") != Some(&new_status) {
            let mut new = owner.clone();
            new["status"] = new_status;
            match self.proposer.propose(Command::Update { resource: rt.key(), object: new }).await {
                Ok(_) => {}
                Err(e) if benign(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(next_available(&current, min_ready_seconds(owner), now))
    }
}

pub async fn run(store: Store, proposer: Proposer, node: String, shutdown: CancellationToken) {
    let controller = Controller::new(store.clone(), proposer, &node);
    let watched = [resource::REPLICA_SETS.key(), resource::REPLICATION_CONTROLLERS.key(), resource::PODS.key()];
    let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
    crate::controllers::run_loop_timed(store, &watched, shutdown, || async {
        match controller.reconcile(Timestamp::now()).await {
            Ok(wake) => wake,
            Err(e) => {
                tracing::warn!(error = %e, "replica set reconcile failed; will retry");
                Some(Duration::from_secs(1))
            }
        }
    })
    .await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    /// Admits and stores an owner like the API does.
    pub(crate) async fn create(store: &Store, rt: &ResourceType, obj: Value) -> Value {
        let proposer = crate::store::Proposer::local(store);
        let mut obj = objects::admit(rt, obj).unwrap().object;
        meta::set(&mut obj, "namespace", "default");
        meta::set(&mut obj, "uid", uuid::Uuid::new_v4().to_string());
        meta::set(&mut obj, "creationTimestamp", meta::timestamp(t(0)));
        meta::set(&mut obj, "generation", 1);
        proposer.propose(Command::Create { resource: rt.key(), object: obj }).await.unwrap().object
    }

    fn replica_set(name: &str, replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name, "tier": "web"}},
                                     "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "c", "image": "img:1"}]}}}})
    }

    /// What the scheduler and the agent would write: bound, Running, Ready since `since`.
    pub(crate) fn run_pod(pod: &Value, ready_since: Option<Timestamp>) -> Value {
        let mut p = pod.clone();
        p["spec"]["nodeName"] = json!("n1");
        p["status"]["phase"] = json!("Running");
        let ready = match ready_since {
            Some(at) => json!({"type": "Ready", "status": "True", "lastTransitionTime": meta::timestamp(at)}),
            None => json!({"type": "Ready", "status": "False", "lastTransitionTime": meta::timestamp(t(0))}),
        };
        p["status"]["conditions"] = json!([ready]);
        p
    }

    pub(crate) async fn update(store: &Store, rt: &ResourceType, obj: Value) -> Value {
        let proposer = crate::store::Proposer::local(store);
        proposer.propose(Command::Update { resource: rt.key(), object: obj }).await.unwrap().object
    }

    pub(crate) async fn pods(store: &Store) -> Vec<Value> {
        store.list("pods", None).await.unwrap().0
    }

    fn owned_by<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
        pods.iter()
            .filter(|p| meta::controller_of(p).is_some_and(|r| r["uid"].as_str() == Some(meta::uid(owner))))
            .collect()
    }

    async fn get(store: &Store, rt: &ResourceType, name: &str) -> Value {
        store.get(&rt.key(), "default", name).await.unwrap().unwrap()
    }

    #[test]
    fn deletion_order_ranks_like_kubernetes() {
        let pod = |name: &str, node: bool, phase: &str, ready: Option<i64>, restarts: i64, created: i64| {
            let mut p = json!({"metadata": {"name": name, "creationTimestamp": meta::timestamp(t(created))},
                               "spec": {}, "status": {"phase": phase, "containerStatuses": [{"restartCount": restarts}]}});
            if node {
                p["spec"]["nodeName"] = json!("n1");
            }
            if let Some(at) = ready {
                p["status"]["conditions"] =
                    json!([{"type": "Ready", "status": "True", "lastTransitionTime": meta::timestamp(t(at))}]);
            }
            p
        };
        // Each pod is less valuable than the next one.
        let ranked = [
            pod("unassigned", false, "Running", Some(0), 0, 0),
            pod("pending", true, "Pending", None, 0, 0),
            pod("unknown", true, "Unknown", None, 0, 0),
            pod("not-ready", true, "Running", None, 0, 0),
            pod("ready-recently", true, "Running", Some(50), 0, 0),
            pod("many-restarts", true, "Running", Some(10), 3, 0),
            pod("newer", true, "Running", Some(10), 0, 5),
            pod("older", true, "Running", Some(10), 0, 1),
        ];
        for i in 0..ranked.len() {
            for j in 0..ranked.len() {
                assert_eq!(
                    deletion_order(&ranked[i], &ranked[j]),
                    i.cmp(&j),
                    "{} vs {}",
                    meta::name(&ranked[i]),
                    meta::name(&ranked[j])
                );
            }
        }
        let mut cheap = ranked[7].clone();
        cheap["metadata"]["annotations"] = json!({DELETION_COST: "-10"});
        assert_eq!(
            deletion_order(&cheap, &ranked[4]),
            Ordering::Less,
            "a lower deletion cost goes first among ready pods"
        );
    }

    #[test]
    fn claim_adopts_releases_and_leaves_others_alone() {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "a", "namespace": "default", "uid": "rs-a"}});
        let other = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "b", "namespace": "default", "uid": "rs-b"}});
        let sel = Selector::from_map(&[("app".to_string(), "a".to_string())].into());
        let pod = |labels: Value, owner: Option<&Value>, ns: &str| {
            let mut p = json!({"metadata": {"name": "p", "namespace": ns, "labels": labels}});
            if let Some(o) = owner {
                p = meta::with_controller_ref(&p, o);
            }
            p
        };
        let mut deleting = pod(json!({"app": "a"}), None, "default");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let pods = vec![
            pod(json!({"app": "a"}), Some(&owner), "default"), // owned
            pod(json!({"app": "a"}), None, "default"),         // orphan: adopt
            pod(json!({"app": "x"}), Some(&owner), "default"), // owned, no longer matches: release
            pod(json!({"app": "a"}), Some(&other), "default"), // another controller's
            pod(json!({"app": "x"}), None, "default"),         // unrelated orphan
            pod(json!({"app": "a"}), None, "elsewhere"),       // another namespace
            deleting,                                          // terminating orphan
        ];
        assert_eq!(claim(&owner, &sel, &pods), Claim { owned: vec![0], adopt: vec![1], release: vec![2] });
        let mut gone = owner.clone();
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(
            claim(&gone, &sel, &pods),
            Claim { owned: vec![0], adopt: vec![], release: vec![] },
            "a terminating owner adopts and releases nothing"
        );
        // References survive a round trip; other owners' references are kept.
        let adopted = meta::with_controller_ref(&pods[3], &owner);
        assert_eq!(adopted["metadata"]["ownerReferences"].as_array().unwrap().len(), 2);
        assert_eq!(meta::without_owner(&adopted, "rs-a"), pods[3]);
        assert!(meta::without_owner(&pods[0], "rs-a")["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn status_counts_ready_and_available_after_min_ready_seconds() {
        let mut owner = replica_set("web", 3);
        owner["spec"]["minReadySeconds"] = json!(10);
        owner["metadata"]["generation"] = json!(4);
        let base = json!({"metadata": {"labels": {"app": "web", "tier": "web"}}});
        let mut partial = run_pod(&base, Some(t(0)));
        partial["metadata"]["labels"] = json!({"app": "web"});
        let pods = [run_pod(&base, Some(t(0))), run_pod(&base, None), partial];
        let refs: Vec<&Value> = pods.iter().collect();
        let s = status(&owner, &refs, t(5));
        assert_eq!(
            s,
            json!({"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2, "observedGeneration": 4}),
            "ready, not yet available"
        );
        assert_eq!(next_available(&refs, 10, t(5)), Some(Duration::from_secs(5) + Duration::from_millis(5)));
        assert_eq!(status(&owner, &refs, t(10))["availableReplicas"], Value::Null, "strictly after minReadySeconds");
        assert_eq!(status(&owner, &refs, t(11))["availableReplicas"], 2);
        assert_eq!(next_available(&refs, 10, t(11)), None);
        assert_eq!(status(&owner, &[], t(0)), json!({"replicas": 0, "observedGeneration": 4}));
    }

    #[tokio::test]
    async fn creates_missing_pods_then_scales_down_the_least_valuable() {
        let (store, proposer) = crate::store::test_store().await;
        let ctl = Controller::new(store.clone(), proposer.clone(), "n1");
        let rs = create(&store, &resource::REPLICA_SETS, replica_set("web", 3)).await;
        ctl.reconcile(t(1)).await.unwrap();
        let all = pods(&store).await;
        assert_eq!(all.len(), 3);
        for p in &all {
            assert!(meta::name(p).starts_with("web-") && meta::name(p).len() == 9, "{}", meta::name(p));
            assert!(meta::name(p)[4..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
            assert_eq!(p["metadata"]["generateName"], "web-");
            assert_eq!(p["metadata"]["labels"], json!({"app": "web", "tier": "web"}));
            assert_eq!(
                p["metadata"]["ownerReferences"],
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": meta::uid(&rs), "controller": true, "blockOwnerDeletion": true}])
            );
            assert_eq!(p["spec"]["restartPolicy"], "Always", "admitted with defaults");
            assert_eq!(p["status"]["phase"], "Pending");
        }
        let rs = get(&store, &resource::REPLICA_SETS, "web").await;
        assert_eq!(rs["status"], json!({"replicas": 3, "fullyLabeledReplicas": 3, "observedGeneration": 1}));
        ctl.rs_events.flush().await;
        let events = store.list("events", None).await.unwrap().0;
        assert_eq!(
            events
                .iter()
                .filter(|e| e["reason"] == "SuccessfulCreate"
                    && e["message"].as_str().unwrap().starts_with("Created pod: web-"))
                .count(),
            3
        );

        // Nothing changed: nothing written.
        let rev = store.revision().await.unwrap();
        ctl.reconcile(t(2)).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), rev);

        // Two pods run (one ready for longer), one stays unscheduled.
        let (a, b) = (run_pod(&all[0], Some(t(2))), run_pod(&all[1], Some(t(3))));
        update(&store, &resource::PODS, a.clone()).await;
        update(&store, &resource::PODS, b.clone()).await;
        ctl.reconcile(t(4)).await.unwrap();
        let rs = get(&store, &resource::REPLICA_SETS, "web").await;
        assert_eq!((status_count(&rs, "readyReplicas"), status_count(&rs, "availableReplicas")), (2, 2));

        // Scale to 1: the unscheduled pod goes at once, the pod ready for less time stops gracefully.
        let mut scaled = rs.clone();
        scaled["spec"]["replicas"] = json!(1);
        update(&store, &resource::REPLICA_SETS, scaled).await;
        ctl.reconcile(t(5)).await.unwrap();
        let all = pods(&store).await;
        assert_eq!(all.len(), 2, "the unscheduled pod is deleted at once");
        let doomed = all.iter().find(|p| meta::name(p) == meta::name(&b)).unwrap();
        assert!(meta::is_deleting(doomed), "the bound pod stops gracefully");
        assert_eq!(doomed["metadata"]["deletionGracePeriodSeconds"], 5);
        assert!(
            !meta::is_deleting(all.iter().find(|p| meta::name(p) == meta::name(&a)).unwrap()),
            "the longest-ready pod stays"
        );
        let rs = get(&store, &resource::REPLICA_SETS, "web").await;
        assert_eq!(rs["status"]["replicas"], 1, "terminating pods do not count");
        ctl.rs_events.flush().await;
        let events = store.list("events", None).await.unwrap().0;
        assert_eq!(events.iter().filter(|e| e["reason"] == "SuccessfulDelete").count(), 2);

        // A finished pod is replaced.
        let mut failed = all.iter().find(|p| meta::name(p) == meta::name(&a)).unwrap().clone();
        failed["status"]["phase"] = json!("Failed");
        update(&store, &resource::PODS, failed).await;
        ctl.reconcile(t(6)).await.unwrap();
        let all = pods(&store).await;
        assert_eq!(all.iter().filter(|p| is_active(p)).count(), 1);
        assert_eq!(all.len(), 3);
    }

    #[tokio::test]
    async fn a_hundred_replicas_are_created_in_one_pass_with_one_status_write() {
        let (store, proposer) = crate::store::test_store().await;
        let ctl = Controller::new(store.clone(), proposer.clone(), "n1");
        create(&store, &resource::REPLICA_SETS, replica_set("big", 100)).await;
        let before = store.revision().await.unwrap();
        let started = std::time::Instant::now();
        ctl.reconcile(t(1)).await.unwrap();
        let took = started.elapsed();
        let mut watch = store.watch(before).await.unwrap();
        let mut writes = BTreeMap::<String, usize>::new();
        while let Some(Ok(ev)) = futures::FutureExt::now_or_never(watch.next()) {
            *writes.entry(ev.resource.clone()).or_default() += 1;
        }
        assert_eq!(
            (writes.get("pods"), writes.get("replicasets.apps")),
            (Some(&100), Some(&1)),
            "100 creates and one status write"
        );
        let all = pods(&store).await;
        let names: std::collections::BTreeSet<&str> = all.iter().map(meta::name).collect();
        assert_eq!(names.len(), 100, "distinct names");
        assert_eq!(get(&store, &resource::REPLICA_SETS, "big").await["status"]["replicas"], 100);
        // A generous bound (debug build, shared CI machine); it is milliseconds in practice.
        assert!(took < Duration::from_secs(5), "one pass took {took:?}");
        ctl.rs_events.flush().await;
        let rev = store.revision().await.unwrap();
        let started = std::time::Instant::now();
        ctl.reconcile(t(2)).await.unwrap();
        eprintln!("create pass {took:?}, idle pass {:?}", started.elapsed());
        assert_eq!(store.revision().await.unwrap(), rev);
    }

    #[tokio::test]
    async fn adopts_orphans_releases_strays_and_ignores_terminating_owners() {
        let (store, proposer) = crate::store::test_store().await;
        let ctl = Controller::new(store.clone(), proposer.clone(), "n1");
        let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "namespace": "default", "uid": "o1", "labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "c", "image": "img:1"}]}});
        let foreign = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "foreign", "namespace": "default", "uid": "f1", "labels": {"app": "web"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "other", "controller": true}]},
                             "spec": {"containers": [{"name": "c", "image": "img:1"}]}});
        proposer.propose(Command::Create { resource: "pods".into(), object: orphan }).await.unwrap();
        proposer.propose(Command::Create { resource: "pods".into(), object: foreign.clone() }).await.unwrap();
        let rs = create(&store, &resource::REPLICA_SETS, replica_set("web", 2)).await;
        ctl.reconcile(t(1)).await.unwrap();
        let all = pods(&store).await;
        assert_eq!(all.len(), 3, "the orphan counts; one pod is created; the foreign pod is not counted");
        assert_eq!(owned_by(&all, &rs).len(), 2);
        let orphan = all.iter().find(|p| meta::name(p) == "orphan").unwrap();
        assert_eq!(meta::controller_of(orphan).unwrap()["uid"].as_str(), Some(meta::uid(&rs)));
        assert_eq!(
            all.iter().find(|p| meta::name(p) == "foreign").unwrap()["metadata"]["ownerReferences"],
            foreign["metadata"]["ownerReferences"]
        );

        // Relabelled out of the selector: released (the reference goes), and replaced.
        let mut stray = orphan.clone();
        stray["metadata"]["labels"] = json!({"app": "debug"});
        update(&store, &resource::PODS, stray).await;
        ctl.reconcile(t(2)).await.unwrap();
        let all = pods(&store).await;
        assert!(all.iter().find(|p| meta::name(p) == "orphan").unwrap()["metadata"].get("ownerReferences").is_none());
        assert_eq!(owned_by(&all, &rs).len(), 2);

        // A terminating owner is left alone: no replacement, no adoption, no status.
        let mut gone = get(&store, &resource::REPLICA_SETS, "web").await;
        gone["metadata"]["deletionTimestamp"] = json!(meta::timestamp(t(3)));
        update(&store, &resource::REPLICA_SETS, gone).await;
        let victim = owned_by(&all, &rs)[0].clone();
        proposer
            .propose(Command::Delete {
                resource: "pods".into(),
                namespace: "default".into(),
                name: meta::name(&victim).into(),
                uid: None,
            })
            .await
            .unwrap();
        let mut back = all.iter().find(|p| meta::name(p) == "orphan").unwrap().clone();
        back["metadata"]["labels"] = json!({"app": "web"});
        update(&store, &resource::PODS, back).await;
        ctl.rs_events.flush().await;
        let rev = store.revision().await.unwrap();
        ctl.reconcile(t(4)).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), rev, "nothing written for a terminating owner");
    }

    #[tokio::test]
    async fn replication_controllers_use_a_plain_map_selector() {
        let (store, proposer) = crate::store::test_store().await;
        let ctl = Controller::new(store.clone(), proposer.clone(), "n1");
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "redis"},
                        "spec": {"replicas": 2, "minReadySeconds": 3, "template": {"metadata": {"labels": {"app": "redis"}},
                                 "spec": {"containers": [{"name": "redis", "image": "redis:6"}]}}}});
        let rc = create(&store, &resource::REPLICATION_CONTROLLERS, rc).await;
        assert_eq!(rc["spec"]["selector"], json!({"app": "redis"}));
        ctl.reconcile(t(1)).await.unwrap();
        let all = pods(&store).await;
        assert_eq!(owned_by(&all, &rc).len(), 2);
        assert_eq!(all[0]["metadata"]["ownerReferences"][0]["kind"], "ReplicationController");
        assert_eq!(all[0]["metadata"]["ownerReferences"][0]["apiVersion"], "v1");
        for p in &all {
            update(&store, &resource::PODS, run_pod(p, Some(t(2)))).await;
        }
        // Ready at t2, available strictly after t5: the pass asks to be woken then.
        let wake = ctl.reconcile(t(4)).await.unwrap();
        assert_eq!(wake, Some(Duration::from_secs(1) + Duration::from_millis(5)));
        let rc = get(&store, &resource::REPLICATION_CONTROLLERS, "redis").await;
        assert_eq!((status_count(&rc, "readyReplicas"), status_count(&rc, "availableReplicas")), (2, 0));
        assert_eq!(ctl.reconcile(t(6)).await.unwrap(), None);
        let rc = get(&store, &resource::REPLICATION_CONTROLLERS, "redis").await;
        assert_eq!(status_count(&rc, "availableReplicas"), 2);
        ctl.rc_events.flush().await;
        let events = store.list("events", None).await.unwrap().0;
        assert_eq!(events[0]["source"]["component"], "replication-controller");
    }
}
