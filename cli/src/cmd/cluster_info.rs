//! `skerry cluster-info`: where the control plane answers (`GET /skerry/v1/info`).

use std::io::Write;

use super::Ctx;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &mut Ctx, _args: Args) -> Result<()> {
    let info = ctx.get_json("/skerry/v1/info", false).await?;
    let socket =
        info["socket"].as_str().map(str::to_string).unwrap_or_else(|| ctx.client.socket().display().to_string());
    writeln!(ctx.out, "Skerry control plane is running at unix://{socket}")?;
    if let Some(node) = info["nodeName"].as_str() {
        match info["containerd"].as_str() {
            Some(c) => writeln!(ctx.out, "Node {node} is running containers through containerd at unix://{c}")?,
            None => writeln!(ctx.out, "Node {node} is running")?,
        }
    }
    Ok(())
}
