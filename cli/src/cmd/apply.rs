//! `skerry apply -f`: server-side apply of every manifest object, reporting created/configured/unchanged.

use std::io::Write;

use hyper::Method;

use super::{finish, json_body, plan_manifests, request, require_files, Ctx};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The files, folders, URLs or `-` (stdin) that contain the configuration to apply
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Process the folders given with -f recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Accepted for kubectl compatibility: apply is always server-side
    #[arg(long, hide = true)]
    pub server_side: bool,
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    require_files(&args.files)?;
    let (planned, mut errors) = plan_manifests(ctx, &args.files, args.recursive).await?;
    if planned.is_empty() && errors.is_empty() {
        return Err(Error::msg("no objects passed to apply"));
    }
    for p in planned {
        let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
            errors.push(Error::msg(format!(
                "error when retrieving current configuration of {} from \"{}\": resource name may not be empty",
                p.resource.kind, p.source
            )));
            continue;
        };
        let path = format!("{}?fieldManager=skerry", p.resource.item(&p.namespace, name));
        let mut req = request(Method::PATCH, &path, json_body(&p.object));
        req.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/apply-patch+yaml"),
        );
        match ctx.call(req).await {
            Ok(resp) => {
                let outcome = resp
                    .headers()
                    .get("x-skerry-apply")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("configured")
                    .to_string();
                let _ = crate::client::read_body(resp).await;
                writeln!(ctx.out, "{}/{name} {outcome}", p.resource.kind_label())?;
            }
            Err(e) => errors.push(e),
        }
    }
    finish(ctx, errors)
}
