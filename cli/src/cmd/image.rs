//! `skerry image import|ls|rm|pull`: the node's images, through skerryd's `/skerry/v1/images` API.

use std::io::Write;

use hyper::Method;
use serde_json::{json, Value};

use super::{json_body, request, Ctx};
use crate::client::{self, query};
use crate::error::{Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import images from a docker-archive or OCI archive file (`-` for stdin)
    Import { file: String },
    /// List the node's images
    #[command(visible_alias = "list")]
    Ls,
    /// Remove images
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Pull an image from a registry
    Pull {
        image: String,
        /// Registry user name
        #[arg(long)]
        username: Option<String>,
        /// Read the registry password from stdin
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(ctx: &mut Ctx, cmd: Command) -> Result<()> {
    match cmd {
        Command::Import { file } => import(ctx, &file).await,
        Command::Ls => ls(ctx).await,
        Command::Rm { names } => rm(ctx, &names).await,
        Command::Pull { image, username, password_stdin } => pull(ctx, &image, username, password_stdin).await,
    }
}

async fn import(ctx: &mut Ctx, file: &str) -> Result<()> {
    let body = if file == "-" {
        client::stream(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(file).await.map_err(|e| Error::msg(format!("cannot open \"{file}\": {e}")))?;
        client::stream(f)
    };
    let mut req = request(Method::POST, "/skerry/v1/images/import", body);
    req.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/octet-stream"));
    let reply = ctx.json(req).await?;
    for img in reply["images"].as_array().cloned().unwrap_or_default() {
        writeln!(
            ctx.out,
            "imported {} ({})",
            img["name"].as_str().unwrap_or(""),
            img["digest"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

async fn ls(ctx: &mut Ctx) -> Result<()> {
    super::print_table(ctx, "/skerry/v1/images").await
}

async fn rm(ctx: &mut Ctx, names: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    for name in names {
        let path = format!("/skerry/v1/images{}", query(&[("name", name.clone())]));
        match ctx.bytes(request(Method::DELETE, &path, client::empty())).await {
            Ok(_) => writeln!(ctx.out, "deleted {name}")?,
            Err(e @ Error::Status(_)) => errors.push(e),
            Err(e) => return Err(e),
        }
    }
    super::finish(ctx, errors)
}

async fn pull(ctx: &mut Ctx, image: &str, username: Option<String>, password_stdin: bool) -> Result<()> {
    let mut body = json!({"image": image});
    if let Some(u) = username {
        body["username"] = json!(u);
    }
    if password_stdin {
        let mut pw = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut pw).await?;
        body["password"] = json!(pw.trim_end_matches(['\n', '\r']));
    }
    let resp = ctx.call(request(Method::POST, "/skerry/v1/images/pull", json_body(&body))).await?;
    let mut progress = Progress::new(ctx.tty);
    let mut lines = client::JsonLines::new(resp);
    while let Some(msg) = lines.next().await? {
        if let Some(p) = msg.get("progress") {
            let text = progress.update(p);
            ctx.out.write_all(text.as_bytes())?;
            ctx.out.flush()?;
        } else if let Some(done) = msg.get("done") {
            writeln!(
                ctx.out,
                "pulled {} ({})",
                done["name"].as_str().unwrap_or(image),
                done["digest"].as_str().unwrap_or("")
            )?;
            return Ok(());
        } else if let Some(err) = msg.get("error") {
            return Err(Error::msg(err["message"].as_str().unwrap_or("pull failed").to_string()));
        }
    }
    Err(Error::msg(format!("the pull of {image} ended without a result")))
}

/// The pull progress display: one line per layer, redrawn in place on a
/// terminal, otherwise one plain line whenever a layer's status changes.
pub struct Progress {
    tty: bool,
    layers: Vec<(String, String)>,
    statuses: Vec<String>,
}

impl Progress {
    pub fn new(tty: bool) -> Progress {
        Progress { tty, layers: Vec::new(), statuses: Vec::new() }
    }

    /// Takes one progress message; returns the text to write.
    pub fn update(&mut self, p: &Value) -> String {
        let layer = p["layer"].as_str().unwrap_or("").to_string();
        let status = p["status"].as_str().unwrap_or("").to_string();
        let short = short_digest(&layer);
        let line = match (p["current"].as_u64(), p["total"].as_u64()) {
            (Some(c), Some(t)) if t > 0 && status == "downloading" => {
                format!("{short}: {status} {}/{}", human(c), human(t))
            }
            _ => format!("{short}: {status}"),
        };
        let idx = match self.layers.iter().position(|(l, _)| *l == layer) {
            Some(i) => i,
            None => {
                self.layers.push((layer.clone(), String::new()));
                self.statuses.push(String::new());
                self.layers.len() - 1
            }
        };
        let previous_lines = self.layers.len() - usize::from(self.layers[idx].1.is_empty());
        self.layers[idx].1 = line.clone();
        if self.tty {
            // Move up over what was drawn, then redraw every layer's line.
            let mut s = String::new();
            if previous_lines > 0 {
                s.push_str(&format!("\x1b[{previous_lines}A"));
            }
            for (_, l) in &self.layers {
                s.push_str(&format!("\r\x1b[2K{l}\n"));
            }
            s
        } else if self.statuses[idx] != status {
            self.statuses[idx] = status;
            format!("{line}\n")
        } else {
            String::new()
        }
    }
}

fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.chars().take(12).collect()
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_progress_prints_status_changes_only() {
        let mut p = Progress::new(false);
        let msg = |cur: u64, status: &str| json!({"layer": "sha256:0123456789abcdef", "current": cur, "total": 2048, "status": status});
        assert_eq!(p.update(&msg(0, "downloading")), "0123456789ab: downloading 0 B/2.0 KiB\n");
        assert_eq!(p.update(&msg(1024, "downloading")), "");
        assert_eq!(p.update(&msg(2048, "done")), "0123456789ab: done\n");
    }

    #[test]
    fn tty_progress_redraws_in_place() {
        let mut p = Progress::new(true);
        let a = json!({"layer": "sha256:aaaa", "status": "waiting"});
        let b = json!({"layer": "sha256:bbbb", "status": "waiting"});
        assert_eq!(p.update(&a), "\r\x1b[2Kaaaa: waiting\n");
        assert_eq!(p.update(&b), "\x1b[1A\r\x1b[2Kaaaa: waiting\n\r\x1b[2Kbbbb: waiting\n");
        assert_eq!(p.update(&a), "\x1b[2A\r\x1b[2Kaaaa: waiting\n\r\x1b[2Kbbbb: waiting\n");
    }
}
