//! `skerry version`: the client's version and the daemon's (`GET /version`).

use std::io::Write;

use serde_json::{json, Value};

use super::Ctx;
use crate::error::{Error, Result};
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the client version only
    #[arg(long)]
    pub client: bool,
    /// Output format: json or yaml
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

/// The client's version info, shaped like the server's.
pub fn client_info() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "gitVersion": format!("v{}", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{arch}", std::env::consts::OS),
    })
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let format = match args.output.as_deref() {
        None | Some("") => None,
        Some("json") => Some(Format::Json),
        Some("yaml") => Some(Format::Yaml),
        Some(other) => return Err(Error::msg(format!("--output must be 'yaml' or 'json', got \"{other}\""))),
    };
    let client = client_info();
    let server = if args.client { None } else { Some(ctx.get_json("/version", false).await) };
    match format {
        None => {
            writeln!(ctx.out, "Client Version: {}", client["gitVersion"].as_str().unwrap_or(""))?;
            match server {
                Some(Ok(s)) => writeln!(ctx.out, "Server Version: {}", s["gitVersion"].as_str().unwrap_or(""))?,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Some(format) => {
            let mut v = json!({"clientVersion": client});
            let failed = match server {
                Some(Ok(s)) => {
                    v["serverVersion"] = s;
                    None
                }
                Some(Err(e)) => Some(e),
                None => None,
            };
            let text = match format {
                Format::Json => serde_json::to_string_pretty(&v)? + "\n",
                _ => output::render(&v, format),
            };
            write!(ctx.out, "{text}")?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }
    Ok(())
}
