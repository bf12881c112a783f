//! `skerry describe`: prints the daemon's text description of each object.

use std::io::Write;

use hyper::Method;

use super::{request, Ctx};
use crate::client::{self, query};
use crate::error::{Error, Result};
use crate::resources::parse_targets;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE [NAME...] or TYPE/NAME...
    pub resources: Vec<String>,
    /// Label selector to filter on
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Describe the objects across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    if args.resources.is_empty() {
        return Err(Error::msg(
            "You must specify the type of resource to describe. Use \"skerry api-resources\" for a complete list of supported resources.",
        ));
    }
    let disc = ctx.discovery().await?.clone();
    let targets = parse_targets(&disc, &args.resources)?;
    // (item path) for every object to describe, in order.
    let mut items: Vec<String> = Vec::new();
    let mut any_namespaced = false;
    for t in &targets.targets {
        any_namespaced |= t.resource.namespaced;
        if t.names.is_empty() {
            let scope = if args.all_namespaces { None } else { Some(ctx.namespace.as_str()) };
            let mut q = Vec::new();
            if let Some(l) = &args.selector {
                q.push(("labelSelector", l.clone()));
            }
            let path = format!("{}{}", t.resource.collection(scope), query(&q));
            let list = ctx.get_json(&path, false).await?;
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                let meta = &item["metadata"];
                let name = meta["name"].as_str().unwrap_or("");
                let ns = meta["namespace"].as_str().unwrap_or(&ctx.namespace).to_string();
                items.push(t.resource.item(&ns, name));
            }
        } else {
            items.extend(t.names.iter().map(|n| t.resource.item(&ctx.namespace, n)));
        }
    }
    if items.is_empty() {
        super::get::no_resources(ctx, args.all_namespaces, any_namespaced)?;
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut first = true;
    for path in items {
        match ctx.bytes(request(Method::GET, &format!("{path}/describe"), client::empty())).await {
            Ok(text) => {
                if !first {
                    writeln!(ctx.out)?;
                }
                first = false;
                ctx.out.write_all(&text)?;
                if !text.ends_with(b"\n") {
                    writeln!(ctx.out)?;
                }
            }
            Err(e @ Error::Status(_)) => errors.push(e),
            Err(e) => return Err(e),
        }
    }
    super::finish(ctx, errors)
}
