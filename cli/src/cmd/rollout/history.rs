//! `skerry rollout history`: the revisions of a Deployment, read from the revision and
//! change-cause annotations of the ReplicaSets it controls (kubectl's `DeploymentHistoryViewer`);
//! with `--revision`, that revision's pod template.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;

use super::{owned_replica_sets, subjects, template, Targets, CHANGE_CAUSE};
use crate::cmd::objects;
use crate::cmd::Ctx;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub targets: Targets,
    /// Show the pod template of this revision
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub revision: i64,
}

/// Each revision's pod template, with the ReplicaSet's change-cause put into its annotations
/// as kubectl does; ReplicaSets whose revision is not a number are left out.
pub fn revisions(replica_sets: &[Value]) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    for rs in replica_sets {
        let Ok(v) = super::revision(rs) else { continue };
        let mut template = rs.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        let cause = rs.pointer("/metadata/annotations").and_then(|a| a.get(CHANGE_CAUSE)).and_then(Value::as_str);
        if let Some(cause) = cause.filter(|c| !c.is_empty()) {
            if !template["metadata"]["annotations"].is_object() {
                template["metadata"]["annotations"] = serde_json::json!({});
            }
            template["metadata"]["annotations"][CHANGE_CAUSE] = Value::String(cause.to_string());
        }
        out.insert(v, template);
    }
    out
}

/// What kubectl's `ViewHistory` returns: the `REVISION  CHANGE-CAUSE` table, one template, or
/// `No rollout history found.`.
pub fn view(replica_sets: &[Value], revision: i64) -> std::result::Result<String, String> {
    let history = revisions(replica_sets);
    if history.is_empty() {
        return Ok("No rollout history found.".into());
    }
    if revision > 0 {
        let t = history.get(&revision).ok_or("unable to find the specified revision")?;
        return Ok(template::describe(t));
    }
    let rows: Vec<(String, String)> = history
        .iter()
        .map(|(r, t)| {
            let cause = t.pointer("/metadata/annotations").and_then(|a| a.get(CHANGE_CAUSE)).and_then(Value::as_str);
            (r.to_string(), cause.filter(|c| !c.is_empty()).unwrap_or("<none>").to_string())
        })
        .collect();
    // Go's tabwriter with padding 2; the last cell of a line is not padded.
    let width = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(0).max("REVISION".len()) + 2;
    let mut out = format!("{:<width$}CHANGE-CAUSE\n", "REVISION");
    for (r, cause) in rows {
        out.push_str(&format!("{r:<width$}{cause}\n"));
    }
    Ok(out)
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    if args.revision < 0 {
        return Err(Error::msg(format!("revision must be a positive integer: {}", args.revision)));
    }
    let (subjects, mut errors) = subjects(ctx, &args.targets).await?;
    for s in subjects {
        if !s.is_kind("Deployment") {
            errors.push(Error::msg(format!("no history viewer has been implemented for {:?}", s.group_kind())));
            continue;
        }
        let Some(deploy) = objects::collect(ctx.get_json(&s.path(), false).await, &mut errors)? else { continue };
        let replica_sets = owned_replica_sets(ctx, &deploy).await?;
        let text = match view(&replica_sets, args.revision) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Error::Msg(e));
                continue;
            }
        };
        // kubectl prints `<kind>/<name> <operation>` with the history as the operation.
        let with_revision = if args.revision > 0 { format!("with revision #{}", args.revision) } else { String::new() };
        writeln!(ctx.out, "{} {with_revision}\n{text}", s.label())?;
    }
    crate::cmd::finish(ctx, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(revision: &str, cause: Option<&str>, image: &str) -> Value {
        let mut annotations = json!({"deployment.kubernetes.io/revision": revision});
        if let Some(c) = cause {
            annotations[CHANGE_CAUSE] = json!(c);
        }
        json!({"metadata": {"annotations": annotations},
               "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn table_sorted_by_revision() {
        let list = [rs("10", Some("set image 1.27"), "b"), rs("2", None, "a"), rs("x", None, "c")];
        assert_eq!(view(&list, 0).unwrap(), "REVISION  CHANGE-CAUSE\n2         <none>\n10        set image 1.27\n");
        assert_eq!(view(&[], 0).unwrap(), "No rollout history found.");
    }

    #[test]
    fn one_revision() {
        let list = [rs("1", None, "a"), rs("2", Some("why"), "b")];
        let text = view(&list, 2).unwrap();
        assert!(
            text.starts_with("Pod Template:\n  Labels:\tapp=web\n  Annotations:\tkubernetes.io/change-cause: why\n"),
            "{text}"
        );
        assert!(text.contains("    Image:\tb\n"), "{text}");
        assert_eq!(view(&list, 3).unwrap_err(), "unable to find the specified revision");
    }
}
