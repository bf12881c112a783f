//! `skerry rollout`: the rollout of deployments — `status`, `history`, `undo`, `restart`, `pause`
//! and `resume` — computed on the client from the Deployment and the ReplicaSets it controls,
//! with kubectl's messages. One file per subcommand; `template` prints a pod template as
//! `kubectl describe` does.

pub mod history;
pub mod pause;
pub mod restart;
pub mod status;
pub mod template;
pub mod undo;

use serde_json::Value;

use super::objects::{self, Selection, Subject, STRATEGIC_PATCH};
use super::Ctx;
use crate::error::{Error, Result};

/// The annotation on a Deployment and its ReplicaSets holding the rollout revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The annotation that says why a rollout happened (copied to the ReplicaSet).
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label a Deployment puts on its ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The pod template annotation `rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show the status of the rollout
    Status(status::Args),
    /// View previous rollout revisions and configurations
    History(history::Args),
    /// Undo a previous rollout
    Undo(undo::Args),
    /// Restart a resource: its pods are replaced by a new rollout
    Restart(Targets),
    /// Mark the provided resource as paused
    Pause(Targets),
    /// Resume a paused resource
    Resume(Targets),
}

/// The objects every rollout subcommand acts on.
#[derive(Debug, clap::Args)]
pub struct Targets {
    /// TYPE NAME... or TYPE/NAME... (deployments)
    pub resources: Vec<String>,
    #[command(flatten)]
    pub select: Selection,
}

pub async fn run(ctx: &mut Ctx, command: Command) -> Result<()> {
    match command {
        Command::Status(a) => status::run(ctx, a).await,
        Command::History(a) => history::run(ctx, a).await,
        Command::Undo(a) => undo::run(ctx, a).await,
        Command::Restart(t) => restart::run(ctx, t).await,
        Command::Pause(t) => pause::pause(ctx, t).await,
        Command::Resume(t) => pause::resume(ctx, t).await,
    }
}

/// The named objects; kubectl's error when none is named.
async fn subjects(ctx: &mut Ctx, t: &Targets) -> Result<(Vec<Subject>, Vec<Error>)> {
    if t.resources.is_empty() && t.select.files.is_empty() {
        return Err(Error::msg("required resource not specified"));
    }
    objects::resolve(ctx, &t.resources, &t.select).await
}

/// `deployments.apps "web" <reason>`: how kubectl words a refusal to patch an object.
fn refuse(s: &Subject, reason: &str) -> Error {
    Error::msg(format!("{} {:?} {reason}", s.resource_string(), s.name))
}

/// Patches each object with what `make` computes from it (a strategic merge patch, as kubectl's
/// `CalculatePatches` sends) and prints `<kind>/<name> <operation>`; refusals are reported at
/// the end.
async fn patch_each(
    ctx: &mut Ctx,
    t: &Targets,
    operation: &str,
    make: impl Fn(&Subject, &Value) -> Result<Value>,
) -> Result<()> {
    let (subjects, mut errors) = subjects(ctx, t).await?;
    for s in subjects {
        let Some(obj) = objects::collect(objects::read(ctx, &s).await, &mut errors)? else { continue };
        let Some(patch) = objects::collect(make(&s, &obj), &mut errors)? else { continue };
        if objects::collect(objects::patch(ctx, &s.path(), STRATEGIC_PATCH, &patch).await, &mut errors)?.is_none() {
            continue;
        }
        objects::done(ctx, &s, operation)?;
    }
    super::finish(ctx, errors)
}

/// The revision annotation of a Deployment or ReplicaSet (kubectl's `deploymentutil.Revision`):
/// 0 when absent, an error when it is not a number.
pub fn revision(obj: &Value) -> std::result::Result<i64, String> {
    let Some(v) = obj.pointer("/metadata/annotations").and_then(|a| a.get(REVISION)) else { return Ok(0) };
    let text = v.as_str().unwrap_or("");
    text.parse().map_err(|_| format!("strconv.ParseInt: parsing {text:?}: invalid syntax"))
}

/// Whether `obj` has a controller ownerReference with this uid (`metav1.IsControlledBy`).
pub fn is_controlled_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| r["controller"] == Value::Bool(true) && r["uid"].as_str() == Some(uid))
}

/// The ReplicaSets a Deployment controls, as kubectl finds them: listed in its namespace with
/// its selector, kept when their controller ownerReference names its uid.
pub async fn owned_replica_sets(ctx: &mut Ctx, deployment: &Value) -> Result<Vec<Value>> {
    let namespace =
        deployment.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(&ctx.namespace).to_string();
    let uid = deployment.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let selector = objects::selector_string(&deployment["spec"]["selector"]);
    let collection = format!("/apis/apps/v1/namespaces/{namespace}/replicasets");
    let items = objects::list(ctx, &collection, selector.as_deref()).await?;
    Ok(items.into_iter().filter(|rs| is_controlled_by(rs, &uid)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revisions() {
        assert_eq!(revision(&json!({"metadata": {"annotations": {REVISION: "3"}}})), Ok(3));
        assert_eq!(revision(&json!({"metadata": {}})), Ok(0));
        assert!(revision(&json!({"metadata": {"annotations": {REVISION: "x"}}})).is_err());
    }

    #[test]
    fn controller_references() {
        let rs = json!({"metadata": {"ownerReferences": [
            {"uid": "other", "controller": false},
            {"uid": "d1", "controller": true}
        ]}});
        assert!(is_controlled_by(&rs, "d1"));
        assert!(!is_controlled_by(&rs, "other"));
        assert!(!is_controlled_by(&json!({"metadata": {}}), "d1"));
    }
}
