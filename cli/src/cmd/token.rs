//! `skerry token create|list|delete`: join tokens (`jointokens.skerry.io`), as `kubeadm token`.
//! The whole token is shown once, by `create`; the server keeps only a hash of its secret.

use std::io::Write;

use hyper::Method;
use serde_json::{json, Value};

use super::{json_body, request, Ctx};
use crate::client;
use crate::error::{Error, Result};

const PATH: &str = "/apis/skerry.io/v1/jointokens";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a join token and print it (the only time its secret is shown)
    Create {
        /// The role of nodes that join with it: agent or server
        #[arg(long, default_value = "agent")]
        role: String,
        /// How long the token is valid, e.g. 30m or 24h; 0 for ever
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many nodes may join with it (default: any number until it expires)
        #[arg(long)]
        uses: Option<u32>,
        /// A note for `token list`
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens (their secrets are never shown)
    #[command(visible_alias = "ls")]
    List,
    /// Delete join tokens by id
    #[command(visible_alias = "rm")]
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

pub async fn run(ctx: &mut Ctx, cmd: Command) -> Result<()> {
    match cmd {
        Command::Create { role, ttl, uses, description } => {
            let mut spec = json!({"role": role, "ttl": ttl, "description": description});
            if let Some(n) = uses {
                spec["uses"] = json!(n);
            }
            let body = json!({"apiVersion": "skerry.io/v1", "kind": "JoinToken", "spec": spec});
            let reply = ctx.json(request(Method::POST, PATH, json_body(&body))).await?;
            let token = reply.pointer("/status/token").and_then(Value::as_str).ok_or_else(|| {
                Error::msg("the server made the token but did not return it; delete it with `skerry token delete`")
            })?;
            writeln!(ctx.out, "{token}")?;
            Ok(())
        }
        Command::List => super::print_table(ctx, PATH).await,
        Command::Delete { ids } => {
            let mut errors = Vec::new();
            for id in ids {
                match ctx.bytes(request(Method::DELETE, &format!("{PATH}/{id}"), client::empty())).await {
                    Ok(_) => writeln!(ctx.out, "join token {id:?} deleted")?,
                    Err(e @ Error::Status(_)) => errors.push(e),
                    Err(e) => return Err(e),
                }
            }
            super::finish(ctx, errors)
        }
    }
}
