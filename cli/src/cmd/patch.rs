//! `skerry patch`: updates fields of one object with a strategic merge, JSON merge or JSON patch.

use std::io::Write;

use hyper::Method;
use serde_json::Value;

use super::{request, Ctx};
use crate::client;
use crate::error::{Error, Result};
use crate::resources::parse_targets;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE NAME or TYPE/NAME
    #[arg(required = true)]
    pub resource: Vec<String>,
    /// The patch to apply, as JSON or YAML
    #[arg(short = 'p', long = "patch")]
    pub patch: Option<String>,
    /// A file holding the patch
    #[arg(long)]
    pub patch_file: Option<String>,
    /// The type of patch: strategic, merge or json
    #[arg(long = "type", default_value = "strategic")]
    pub patch_type: String,
}

/// The Content-Type for a `--type` value.
pub fn content_type(kind: &str) -> Result<&'static str> {
    match kind {
        "strategic" => Ok("application/strategic-merge-patch+json"),
        "merge" => Ok("application/merge-patch+json"),
        "json" => Ok("application/json-patch+json"),
        other => Err(Error::msg(format!("--type must be one of [json merge strategic], not {other:?}"))),
    }
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let text = match (&args.patch, &args.patch_file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| Error::msg(format!("error reading {f}: {e}")))?,
        _ => return Err(Error::msg("must specify --patch or --patch-file containing the contents of the patch")),
    };
    let patch: Value = serde_json::from_str(&text)
        .or_else(|_| serde_yaml_ng::from_str(&text))
        .map_err(|e| Error::msg(format!("unable to parse {text:?}: {e}")))?;
    let kind = content_type(&args.patch_type)?;
    let disc = ctx.discovery().await?.clone();
    let targets = parse_targets(&disc, &args.resource)?;
    let [target] = targets.targets.as_slice() else {
        return Err(Error::msg("patch takes exactly one resource type"));
    };
    let [name] = target.names.as_slice() else {
        return Err(Error::msg("patch takes exactly one object name"));
    };
    let path = target.resource.item(&ctx.namespace, name);
    let before = ctx.get_json(&path, false).await?;
    let mut req = request(Method::PATCH, &path, client::full(serde_json::to_vec(&patch)?));
    req.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
    let after = ctx.json(req).await?;
    let changed = before.pointer("/metadata/resourceVersion") != after.pointer("/metadata/resourceVersion");
    let word = if changed { "patched" } else { "patched (no change)" };
    writeln!(ctx.out, "{}/{name} {word}", target.resource.kind_label())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn patch_types() {
        assert_eq!(super::content_type("merge").unwrap(), "application/merge-patch+json");
        assert_eq!(super::content_type("json").unwrap(), "application/json-patch+json");
        assert!(super::content_type("xml").is_err());
    }
}
