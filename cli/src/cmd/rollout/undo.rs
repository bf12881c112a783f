//! `skerry rollout undo`: kubectl's client-side rollback — the pod template of the chosen
//! revision's ReplicaSet (without its `pod-template-hash` label) and its change-cause are
//! written back into the Deployment with one JSON patch.

use serde_json::{json, Map, Value};

use super::{owned_replica_sets, subjects, Targets, POD_TEMPLATE_HASH, REVISION};
use crate::cmd::objects::{self, Subject, JSON_PATCH};
use crate::cmd::Ctx;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub targets: Targets,
    /// The revision to roll back to (0: the previous one)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub to_revision: i64,
}

/// Deployment annotations a rollback keeps and never takes from the ReplicaSet.
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

fn revision_not_found(r: i64) -> String {
    format!("unable to find specified revision {r} in history")
}

/// The ReplicaSet to roll back to, as kubectl's `deploymentRevision` picks it: the one of
/// `to_revision`, or with 0 the second newest revision.
pub fn choose<'a>(
    replica_sets: &'a [Value],
    to_revision: i64,
    name: &str,
) -> std::result::Result<(i64, &'a Value), String> {
    let mut latest: Option<(i64, &Value)> = None;
    let mut previous: Option<(i64, &Value)> = None;
    for rs in replica_sets {
        let Ok(v) = super::revision(rs) else { continue };
        if to_revision > 0 {
            if v == to_revision {
                return Ok((v, rs));
            }
            continue;
        }
        if latest.is_none_or(|(l, _)| l < v) {
            previous = latest;
            latest = Some((v, rs));
        } else if previous.is_none_or(|(p, _)| p < v) {
            previous = Some((v, rs));
        }
    }
    if to_revision > 0 {
        return Err(revision_not_found(to_revision));
    }
    previous.ok_or_else(|| format!("no rollout history found for deployment {name:?}"))
}

/// Drops what a typed comparison would not see: nulls, empty strings, maps and lists.
fn normalize(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Object(m) => {
            let m: Map<String, Value> = m.iter().filter_map(|(k, v)| Some((k.clone(), normalize(v)?))).collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            (!a.is_empty()).then(|| Value::Array(a.iter().map(|x| normalize(x).unwrap_or(Value::Null)).collect()))
        }
        other => Some(other.clone()),
    }
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// kubectl's `equalIgnoreHash`: the templates are equal but for the `pod-template-hash` label.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    normalize(&without_hash(a)) == normalize(&without_hash(b))
}

/// The JSON patch that restores `rs`'s template and annotations into `deployment`, as
/// kubectl's: the Deployment keeps its revision bookkeeping annotations and takes every other
/// annotation from the ReplicaSet (the controller copied the Deployment's onto it), so the
/// change-cause of that revision comes back too.
pub fn rollback_patch(deployment: &Value, rs: &Value) -> Value {
    let mut template = without_hash(&rs["spec"]["template"]);
    if template.pointer("/metadata/labels").and_then(Value::as_object).is_some_and(Map::is_empty) {
        if let Some(m) = template["metadata"].as_object_mut() {
            m.remove("labels");
        }
    }
    let mut annotations = Map::new();
    for (k, v) in deployment["metadata"]["annotations"].as_object().into_iter().flatten() {
        if ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in rs["metadata"]["annotations"].as_object().into_iter().flatten() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        // kubectl says `replace`; `add` does the same and also works when there is no map yet.
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ])
}

/// Rolls one Deployment back; returns the operation to print.
async fn rollback(ctx: &mut Ctx, s: &Subject, to_revision: i64) -> Result<String> {
    if to_revision < 0 {
        return Err(Error::Msg(revision_not_found(to_revision)));
    }
    let deployment = ctx.get_json(&s.path(), false).await?;
    let replica_sets = owned_replica_sets(ctx, &deployment).await?;
    let (revision, rs) = choose(&replica_sets, to_revision, &s.name).map_err(Error::Msg)?;
    if deployment.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return Err(Error::msg(
            "you cannot rollback a paused deployment; resume it first with 'skerry rollout resume' and try again",
        ));
    }
    // kubectl prints the --to-revision it was given (0 by default); the revision found says more.
    if equal_ignore_hash(&rs["spec"]["template"], &deployment["spec"]["template"]) {
        return Ok(format!("skipped rollback (current template already matches revision {revision})"));
    }
    objects::patch(ctx, &s.path(), JSON_PATCH, &rollback_patch(&deployment, rs)).await?;
    Ok("rolled back".into())
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let (subjects, mut errors) = subjects(ctx, &args.targets).await?;
    for s in subjects {
        if !s.is_kind("Deployment") {
            errors.push(Error::msg(format!("no rollbacker has been implemented for {:?}", s.group_kind())));
            continue;
        }
        if let Some(operation) = objects::collect(rollback(ctx, &s, args.to_revision).await, &mut errors)? {
            objects::done(ctx, &s, &operation)?;
        }
    }
    crate::cmd::finish(ctx, errors)
}

#[cfg(test)]
mod tests {
    use super::super::CHANGE_CAUSE;
    use super::*;

    fn rs(revision: &str, image: &str) -> Value {
        json!({"metadata": {"name": format!("web-{revision}"), "annotations": {REVISION: revision}},
               "spec": {"template": {"metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: format!("h{revision}")}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn chooses_the_previous_or_the_named_revision() {
        let list = [rs("1", "a"), rs("3", "c"), rs("2", "b"), rs("bad", "x")];
        assert_eq!(choose(&list, 0, "web").unwrap().0, 2);
        assert_eq!(choose(&list, 1, "web").unwrap().1["metadata"]["name"], "web-1");
        assert_eq!(choose(&list, 9, "web").unwrap_err(), "unable to find specified revision 9 in history");
        assert_eq!(choose(&list[..1], 0, "web").unwrap_err(), "no rollout history found for deployment \"web\"");
        // Newest first in the list still gives the second newest.
        let list = [rs("3", "c"), rs("1", "a"), rs("2", "b")];
        assert_eq!(choose(&list, 0, "web").unwrap().0, 2);
    }

    #[test]
    fn templates_compare_without_the_hash() {
        let a = rs("1", "a");
        let mut d = a["spec"]["template"].clone();
        d["metadata"]["labels"].as_object_mut().unwrap().remove(POD_TEMPLATE_HASH);
        d["metadata"]["annotations"] = json!({});
        assert!(equal_ignore_hash(&a["spec"]["template"], &d));
        assert!(!equal_ignore_hash(&rs("2", "b")["spec"]["template"], &d));
    }

    #[test]
    fn patch_restores_template_and_change_cause() {
        let deployment = json!({"metadata": {"annotations": {REVISION: "3", CHANGE_CAUSE: "to c", "team": "x"}}});
        let mut old = rs("1", "a");
        old["metadata"]["annotations"][CHANGE_CAUSE] = json!("to a");
        old["metadata"]["annotations"]["team"] = json!("y");
        assert_eq!(
            rollback_patch(&deployment, &old),
            json!([
                {"op": "replace", "path": "/spec/template", "value": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "a"}]}}},
                {"op": "add", "path": "/metadata/annotations", "value": {REVISION: "3", CHANGE_CAUSE: "to a", "team": "y"}},
            ])
        );
        let patch = rollback_patch(&deployment, &rs("2", "b"));
        assert_eq!(patch[1]["value"], json!({REVISION: "3"}));
    }
}
