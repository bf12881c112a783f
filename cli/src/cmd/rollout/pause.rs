//! `skerry rollout pause` and `resume`: set or clear a Deployment's `spec.paused`, with
//! kubectl's refusals when it already is (or is not) paused.

use serde_json::{json, Value};

use super::{patch_each, refuse, Targets};
use crate::cmd::Ctx;
use crate::error::Result;

fn paused(obj: &Value) -> bool {
    obj.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false)
}

pub async fn pause(ctx: &mut Ctx, t: Targets) -> Result<()> {
    patch_each(ctx, &t, "paused", |s, obj| {
        if !s.is_kind("Deployment") {
            return Err(refuse(s, "pausing is not supported"));
        }
        if paused(obj) {
            return Err(refuse(s, "is already paused"));
        }
        Ok(json!({"spec": {"paused": true}}))
    })
    .await
}

pub async fn resume(ctx: &mut Ctx, t: Targets) -> Result<()> {
    patch_each(ctx, &t, "resumed", |s, obj| {
        if !s.is_kind("Deployment") {
            return Err(refuse(s, "resuming is not supported"));
        }
        if !paused(obj) {
            return Err(refuse(s, "is not paused"));
        }
        // The two-way merge patch kubectl computes once `paused` is false (omitted).
        Ok(json!({"spec": {"paused": null}}))
    })
    .await
}
