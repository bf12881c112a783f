//! `skerry create -f`: POST every manifest object to its collection.

use std::io::Write;

use hyper::Method;

use super::{finish, json_body, plan_manifests, request, require_files, Ctx};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub kind: Option<Kind>,
    /// The files, folders, URLs or `-` (stdin) that contain the objects to create
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Process the folders given with -f recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// Objects created from the command line alone.
#[derive(Debug, clap::Subcommand)]
pub enum Kind {
    /// Create a namespace with the specified name
    #[command(visible_alias = "ns")]
    Namespace { name: String },
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    if let Some(Kind::Namespace { name }) = args.kind {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        ctx.json(request(Method::POST, "/api/v1/namespaces", json_body(&ns))).await?;
        writeln!(ctx.out, "namespace/{name} created")?;
        return Ok(());
    }
    require_files(&args.files)?;
    let (planned, mut errors) = plan_manifests(ctx, &args.files, args.recursive).await?;
    if planned.is_empty() && errors.is_empty() {
        return Err(Error::msg("no objects passed to create"));
    }
    for p in planned {
        let path = p.resource.collection(Some(&p.namespace));
        match ctx.json(request(Method::POST, &path, json_body(&p.object))).await {
            Ok(created) => {
                let name = created["metadata"]["name"].as_str().or(p.name.as_deref()).unwrap_or("").to_string();
                writeln!(ctx.out, "{}/{name} created", p.resource.kind_label())?;
            }
            Err(Error::Status(s)) => errors.push(Error::Status(s.with_source("creating", &p.source))),
            Err(e) => errors.push(e),
        }
    }
    finish(ctx, errors)
}
