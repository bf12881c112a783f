//! `skerry cordon` and `skerry uncordon`: mark nodes unschedulable (or schedulable again) with a
//! merge patch of `spec.unschedulable`, printing kubectl's `node/N cordoned`,
//! `node/N already cordoned`, `node/N uncordoned`, `node/N already uncordoned`. `drain` cordons
//! through [`cordon_nodes`] too.

use std::io::Write;

use serde_json::{json, Value};

use super::objects::{self, MERGE_PATCH};
use super::Ctx;
use crate::client;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NODE...
    pub nodes: Vec<String>,
    /// Selector (label query) to filter nodes on
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// The nodes named by `NODE...` (or `node/NODE`) or matching `selector`, read once (kubectl's
/// builder: the first one that cannot be read ends the command).
pub async fn nodes(ctx: &mut Ctx, verb: &str, names: &[String], selector: Option<&String>) -> Result<Vec<Value>> {
    if names.is_empty() && selector.is_none() {
        return Err(Error::msg(format!("USAGE: {verb} NODE [flags]\nSee 'skerry {verb} -h' for help and examples")));
    }
    if !names.is_empty() && selector.is_some() {
        return Err(Error::msg(format!(
            "cannot specify both a node name and a --selector option\nSee 'skerry {verb} -h' for help and examples"
        )));
    }
    let mut out = Vec::new();
    if let Some(l) = selector {
        let list =
            ctx.get_json(&format!("/api/v1/nodes{}", client::query(&[("labelSelector", l.clone())])), false).await?;
        out.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    for name in names {
        let name = match name.split_once('/') {
            Some(("node" | "nodes" | "no", n)) => n,
            Some(_) => return Err(Error::msg(format!("expected resource of type node, got {name:?}"))),
            None => name.as_str(),
        };
        out.push(ctx.get_json(&format!("/api/v1/nodes/{}", client::encode(name)), false).await?);
    }
    Ok(out)
}

/// What cordoning (`desired` true) or uncordoning a node with this `unschedulable` prints.
pub fn operation(desired: bool, unschedulable: bool) -> &'static str {
    match (desired, unschedulable == desired) {
        (true, true) => "already cordoned",
        (true, false) => "cordoned",
        (false, true) => "already uncordoned",
        (false, false) => "uncordoned",
    }
}

/// Cordons (`desired` true) or uncordons each node, as kubectl's `RunCordonOrUncordon`: a node
/// that cannot be changed is reported (`error: unable to cordon node "N": ...`) and skipped.
pub async fn cordon_nodes(ctx: &mut Ctx, nodes: &[Value], desired: bool) -> Result<()> {
    let verb = if desired { "cordon" } else { "uncordon" };
    for node in nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or("");
        let current = node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
        let op = operation(desired, current);
        if current != desired {
            let patch = json!({"spec": {"unschedulable": if desired { json!(true) } else { Value::Null }}});
            let path = format!("/api/v1/nodes/{}", client::encode(name));
            match objects::patch(ctx, &path, MERGE_PATCH, &patch).await {
                Ok(_) => {}
                Err(Error::Status(s)) => {
                    writeln!(ctx.err, "error: unable to {verb} node {name:?}: {}", s.message)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        writeln!(ctx.out, "node/{name} {op}")?;
    }
    Ok(())
}

pub async fn run(ctx: &mut Ctx, args: Args, desired: bool) -> Result<()> {
    let verb = if desired { "cordon" } else { "uncordon" };
    let nodes = nodes(ctx, verb, &args.nodes, args.selector.as_ref()).await?;
    cordon_nodes(ctx, &nodes, desired).await
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn operations_are_kubectls_words() {
        assert_eq!(operation(true, false), "cordoned");
        assert_eq!(operation(true, true), "already cordoned");
        assert_eq!(operation(false, true), "uncordoned");
        assert_eq!(operation(false, false), "already uncordoned");
    }
}
