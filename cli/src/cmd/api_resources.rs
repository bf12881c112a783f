//! `skerry api-resources`: the resource types skerryd serves, from its discovery document.

use std::io::Write;

use super::Ctx;
use crate::error::Result;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only namespaced (true) or only cluster-scoped (false) resources
    #[arg(long, action = clap::ArgAction::Set)]
    pub namespaced: Option<bool>,
    /// Print only the resource names (`-o name`)
    #[arg(short = 'o', long, value_parser = ["name", "wide"])]
    pub output: Option<String>,
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let disc = ctx.discovery().await?.clone();
    let resources: Vec<_> =
        disc.resources.iter().filter(|r| args.namespaced.is_none_or(|n| n == r.namespaced)).collect();
    if args.output.as_deref() == Some("name") {
        for r in resources {
            let name = if r.group.is_empty() { r.name.clone() } else { format!("{}.{}", r.name, r.group) };
            writeln!(ctx.out, "{name}")?;
        }
        return Ok(());
    }
    let mut lines = vec![["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"].map(String::from).to_vec()];
    for r in resources {
        lines.push(vec![
            r.name.clone(),
            r.short_names.join(","),
            r.api_version(),
            r.namespaced.to_string(),
            r.kind.clone(),
        ]);
    }
    write!(ctx.out, "{}", output::align(&lines))?;
    Ok(())
}
