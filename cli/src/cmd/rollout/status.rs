//! `skerry rollout status`: follows a Deployment (a GET, then a watch on it) and prints kubectl's
//! `DeploymentStatusViewer` message for every state it sees, until the rollout is done, fails
//! its progress deadline, the object goes away, or `--timeout` passes.

use std::io::Write;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use super::{subjects, Targets};
use crate::client::{self, JsonLines};
use crate::cmd::objects::Subject;
use crate::cmd::{parse_duration, request, Ctx};
use crate::error::{Error, Result, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub targets: Targets,
    /// Watch the status of the rollout until it's done
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch: bool,
    /// Pin to a specific revision for showing its status (0: the latest)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub revision: i64,
    /// How long to wait before ending the watch (0: forever), e.g. 30s, 5m
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

/// The condition reason a Deployment gets when it passes `progressDeadlineSeconds`.
const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";

/// kubectl's `DeploymentStatusViewer.Status`: the message for this state of the Deployment
/// (with its newline) and whether the rollout is done; an error ends the wait.
pub fn status_message(d: &Value, revision: i64) -> std::result::Result<(String, bool), String> {
    let name = d.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if revision > 0 {
        let current = super::revision(d).map_err(|e| format!("cannot get the revision of deployment {name:?}: {e}"))?;
        if revision != current {
            return Err(format!("desired revision ({revision}) is different from the running revision ({current})"));
        }
    }
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    if int("/metadata/generation") > int("/status/observedGeneration") {
        return Ok(("Waiting for deployment spec update to be observed...\n".into(), false));
    }
    let progressing = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing");
    if progressing.is_some_and(|c| c["reason"] == TIMED_OUT_REASON) {
        return Err(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let (updated, replicas, available) =
        (int("/status/updatedReplicas"), int("/status/replicas"), int("/status/availableReplicas"));
    let waiting = |what: String| Ok((format!("Waiting for deployment {name:?} rollout to finish: {what}...\n"), false));
    if let Some(wanted) = d.pointer("/spec/replicas").and_then(Value::as_i64) {
        if updated < wanted {
            return waiting(format!("{updated} out of {wanted} new replicas have been updated"));
        }
    }
    if replicas > updated {
        return waiting(format!("{} old replicas are pending termination", replicas - updated));
    }
    if available < updated {
        return waiting(format!("{available} of {updated} updated replicas are available"));
    }
    Ok((format!("deployment {name:?} successfully rolled out\n"), true))
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    if args.revision < 0 {
        return Err(Error::msg(format!("revision must be a positive integer: {}", args.revision)));
    }
    let timeout = parse_duration(&args.timeout).map_err(Error::Msg)?;
    let (subjects, errors) = subjects(ctx, &args.targets).await?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let [subject] = subjects.as_slice() else {
        return Err(Error::msg(format!(
            "rollout status is only supported on individual resources and resource collections, but {} resources were found",
            subjects.len()
        )));
    };
    if !subject.is_kind("Deployment") {
        return Err(Error::msg(format!("no status viewer has been implemented for {}", subject.group_kind())));
    }
    let follow = follow(ctx, subject, args.revision, args.watch);
    if timeout.is_zero() {
        return follow.await;
    }
    match tokio::time::timeout(timeout, follow).await {
        Ok(result) => result,
        Err(_) => Err(Error::msg("timed out waiting for the condition")),
    }
}

/// Prints the message for one state; returns whether the rollout is done.
fn show(ctx: &mut Ctx, d: &Value, revision: i64) -> Result<bool> {
    let (message, done) = status_message(d, revision).map_err(Error::Msg)?;
    write!(ctx.out, "{message}")?;
    ctx.out.flush()?;
    Ok(done)
}

fn resource_version(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string()
}

/// Reads the Deployment, then watches it from that version, like kubectl's `UntilWithSync`:
/// a watch that ends is resumed from the last version seen, one that expired (410) lists again.
async fn follow(ctx: &mut Ctx, s: &Subject, revision: i64, watch: bool) -> Result<()> {
    let mut rv = String::new();
    let mut relist = true;
    loop {
        if relist {
            let d = ctx.get_json(&s.path(), false).await?;
            if show(ctx, &d, revision)? || !watch {
                return Ok(());
            }
            rv = resource_version(&d);
            relist = false;
        }
        let mut q = vec![("watch", "true".to_string()), ("fieldSelector", format!("metadata.name={}", s.name))];
        if !rv.is_empty() {
            q.push(("resourceVersion", rv.clone()));
        }
        let path = format!("{}{}", s.resource.collection(Some(&s.namespace)), client::query(&q));
        let resp = ctx.call(request(Method::GET, &path, client::empty())).await?;
        let mut events = JsonLines::new(resp);
        let mut seen = false;
        while let Some(event) = events.next().await? {
            let object = &event["object"];
            let ours = object.pointer("/metadata/name").and_then(Value::as_str) == Some(s.name.as_str());
            match event["type"].as_str().unwrap_or("") {
                "ADDED" | "MODIFIED" if ours => {
                    seen = true;
                    rv = resource_version(object);
                    if show(ctx, object, revision)? {
                        return Ok(());
                    }
                }
                // Watching a new object of the same name would report on the wrong rollout.
                "DELETED" if ours => return Err(Error::msg("object has been deleted")),
                "ERROR" => {
                    let status = Status::from_body(500, object.to_string().as_bytes());
                    if status.code != 410 {
                        return Err(Error::Status(status));
                    }
                    relist = true;
                    break;
                }
                _ => {}
            }
        }
        if !seen && !relist {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, observed: i64, spec: i64, status: Value) -> Value {
        let mut s = status;
        s["observedGeneration"] = json!(observed);
        json!({"metadata": {"name": "web", "generation": generation, "annotations": {"deployment.kubernetes.io/revision": "2"}},
               "spec": {"replicas": spec}, "status": s})
    }

    #[test]
    fn messages_follow_kubectl() {
        let msg = |d: &Value| status_message(d, 0);
        assert_eq!(
            msg(&deploy(2, 1, 2, json!({}))),
            Ok(("Waiting for deployment spec update to be observed...\n".into(), false))
        );
        assert_eq!(
            msg(&deploy(2, 2, 2, json!({"replicas": 3, "updatedReplicas": 1}))),
            Ok((
                "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...\n"
                    .into(),
                false
            ))
        );
        assert_eq!(
            msg(&deploy(2, 2, 2, json!({"replicas": 3, "updatedReplicas": 2}))),
            Ok((
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...\n".into(),
                false
            ))
        );
        assert_eq!(
            msg(&deploy(2, 2, 2, json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}))),
            Ok((
                "Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available...\n".into(),
                false
            ))
        );
        assert_eq!(
            msg(&deploy(2, 2, 2, json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}))),
            Ok(("deployment \"web\" successfully rolled out\n".into(), true))
        );
        let stuck = deploy(
            2,
            2,
            2,
            json!({"conditions": [
                {"type": "Available", "status": "False"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]}),
        );
        assert_eq!(msg(&stuck), Err("deployment \"web\" exceeded its progress deadline".into()));
    }

    #[test]
    fn pinned_revision() {
        let d = deploy(1, 1, 0, json!({}));
        assert_eq!(status_message(&d, 2).map(|m| m.1), Ok(true));
        assert_eq!(
            status_message(&d, 3),
            Err("desired revision (3) is different from the running revision (2)".into())
        );
    }
}
