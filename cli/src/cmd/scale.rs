//! `skerry scale`: sets `spec.replicas` of deployments, replica sets and replication controllers
//! with a merge patch, after kubectl's optional preconditions (`--current-replicas`,
//! `--resource-version`); with `--timeout`, waits until the controller reports the new size.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::objects::{self, Selection, Subject, MERGE_PATCH};
use super::{parse_duration, Ctx};
use crate::error::{Error, Result, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE NAME... or TYPE/NAME... (deployments, replicasets, replicationcontrollers)
    pub resources: Vec<String>,
    /// The new desired number of replicas (required)
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// Precondition: scale only if the current size is this (-1: no condition)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub current_replicas: i64,
    /// Precondition: scale only if the object is at this resourceVersion
    #[arg(long)]
    pub resource_version: Option<String>,
    /// How long to wait for the new size to be reached (0: don't wait)
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    #[command(flatten)]
    pub select: Selection,
}

/// The kinds with a `scale` subresource in Kubernetes.
const SCALABLE: [&str; 4] = ["Deployment", "ReplicaSet", "ReplicationController", "StatefulSet"];

/// kubectl's `ScalePrecondition`: `size` -1 and no resource version mean none.
#[derive(Debug, Clone, PartialEq)]
pub struct Precondition {
    pub size: i64,
    pub resource_version: Option<String>,
}

impl Precondition {
    /// Checks the object's current `spec.replicas` and resourceVersion; the error is kubectl's.
    pub fn validate(&self, obj: &Value) -> std::result::Result<(), String> {
        let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        if self.size != -1 && replicas != self.size {
            return Err(format!("Expected replicas to be {}, was {replicas}", self.size));
        }
        let rv = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
        match &self.resource_version {
            Some(want) if want != rv => Err(format!("Expected resource version to be {want}, was {rv}")),
            _ => Ok(()),
        }
    }
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    // cobra checks required flags before anything else.
    let Some(replicas) = args.replicas else {
        return Err(Error::msg("required flag(s) \"replicas\" not set"));
    };
    if replicas < 0 {
        return Err(Error::msg("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"));
    }
    if args.current_replicas < -1 {
        return Err(Error::msg("The --current-replicas must specify an integer of -1 or greater"));
    }
    let timeout = parse_duration(&args.timeout).map_err(Error::Msg)?;
    if args.resources.is_empty() && args.select.files.is_empty() {
        return Err(Error::msg("You must provide one or more resources by argument or filename."));
    }
    let (subjects, mut errors) = objects::resolve(ctx, &args.resources, &args.select).await?;
    // The builder reads every object first; the ones it could not read are reported at the end.
    let mut found = Vec::new();
    for s in subjects {
        if let Some(obj) = objects::collect(objects::read(ctx, &s).await, &mut errors)? {
            found.push((s, obj));
        }
    }
    if args.resource_version.is_some() && found.len() > 1 {
        return Err(Error::msg("cannot use --resource-version with multiple resources"));
    }
    if found.is_empty() {
        if errors.is_empty() {
            return Err(Error::msg("no objects passed to scale"));
        }
        return super::finish(ctx, errors);
    }
    let precondition = (args.current_replicas != -1 || args.resource_version.is_some())
        .then(|| Precondition { size: args.current_replicas, resource_version: args.resource_version.clone() });
    for (subject, obj) in found {
        if !SCALABLE.contains(&subject.resource.kind.as_str()) {
            // What kubectl gets when it asks for the scale subresource of such an object.
            return Err(Error::Status(Status {
                message: "the server could not find the requested resource".into(),
                reason: "NotFound".into(),
                code: 404,
            }));
        }
        scale_one(ctx, &subject, obj, replicas, precondition.as_ref()).await?;
        if !timeout.is_zero() {
            wait_for_replicas(ctx, &subject, replicas, timeout).await?;
        }
        objects::done(ctx, &subject, "scaled")?;
    }
    super::finish(ctx, errors)
}

/// Patches `spec.replicas`. With a precondition the patch names the resourceVersion it checked,
/// so a concurrent change makes the server answer Conflict; then it reads again and retries,
/// as kubectl retries a conflicting scale update.
async fn scale_one(
    ctx: &mut Ctx,
    s: &Subject,
    mut obj: Value,
    replicas: i64,
    pre: Option<&Precondition>,
) -> Result<()> {
    let Some(pre) = pre else {
        objects::patch(ctx, &s.path(), MERGE_PATCH, &json!({"spec": {"replicas": replicas}})).await?;
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        pre.validate(&obj).map_err(Error::Msg)?;
        let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        let body = json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}});
        match objects::patch(ctx, &s.path(), MERGE_PATCH, &body).await {
            Err(Error::Status(st)) if st.code == 409 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                obj = ctx.get_json(&s.path(), false).await?;
            }
            other => return other.map(|_| ()),
        }
    }
}

/// Whether the controller has caught up with `replicas` (kubectl's `scaleHasDesiredReplicas`).
pub fn has_desired_replicas(obj: &Value, replicas: i64) -> bool {
    let status = obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0);
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    let observed = obj.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
    status == replicas && generation <= observed
}

async fn wait_for_replicas(ctx: &mut Ctx, s: &Subject, replicas: i64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let obj = ctx.get_json(&s.path(), false).await?;
        if has_desired_replicas(&obj, replicas) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::msg(format!("timed out waiting for {:?} to be synced", s.name)));
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions() {
        let obj = json!({"metadata": {"resourceVersion": "7"}, "spec": {"replicas": 2}});
        let size = |n| Precondition { size: n, resource_version: None };
        assert_eq!(size(2).validate(&obj), Ok(()));
        assert_eq!(size(3).validate(&obj), Err("Expected replicas to be 3, was 2".into()));
        let rv = Precondition { size: -1, resource_version: Some("6".into()) };
        assert_eq!(rv.validate(&obj), Err("Expected resource version to be 6, was 7".into()));
        // An unset spec.replicas is the default, 1.
        assert_eq!(size(1).validate(&json!({"spec": {}})), Ok(()));
    }

    #[test]
    fn desired_replicas() {
        let obj = |status: i64, generation: i64, observed: i64| json!({"metadata": {"generation": generation}, "status": {"replicas": status, "observedGeneration": observed}});
        assert!(has_desired_replicas(&obj(3, 2, 2), 3));
        assert!(!has_desired_replicas(&obj(2, 2, 2), 3));
        assert!(!has_desired_replicas(&obj(3, 3, 2), 3));
    }
}
