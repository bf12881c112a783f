//! `skerry-mkimage`: writes a busybox test image archive.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use skerry_tests::images::ImageBuilder;

const USAGE: &str = "usage: skerry-mkimage busybox --name NAME --out FILE [--gzip] [--docker] [--expose PORT/PROTO]... [--file DEST=SRC]... [--entrypoint ARG] [--cmd ARG...]  (--cmd takes the rest of the line)";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("busybox") {
        bail!("{USAGE}");
    }
    let (mut name, mut out, mut cmd, mut gzip, mut docker) = (None, None, Vec::new(), false, false);
    let (mut expose, mut files, mut entrypoint) = (Vec::new(), Vec::new(), Vec::new());
    let mut in_cmd = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = Some(args.next().context(USAGE)?),
            "--out" => out = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--gzip" => gzip = true,
            "--docker" => docker = true,
            _ if in_cmd => cmd.push(a),
            "--cmd" => in_cmd = true,
            "--expose" => expose.push(args.next().context(USAGE)?),
            "--entrypoint" => entrypoint.push(args.next().context(USAGE)?),
            "--file" => {
                let spec = args.next().context(USAGE)?;
                let (dest, src) = spec.split_once('=').context("--file takes DEST=SRC")?;
                let data = std::fs::read(src).with_context(|| format!("reading {src}"))?;
                files.push((dest.to_string(), data));
            }
            _ => bail!("unexpected argument {a:?}\n{USAGE}"),
        }
    }
    let (Some(name), Some(out)) = (name, out) else { bail!("{USAGE}") };
    let mut builder = ImageBuilder::new(&name);
    if !cmd.is_empty() {
        builder = builder.cmd(cmd);
    }
    if !entrypoint.is_empty() {
        builder = builder.entrypoint(entrypoint);
    }
    for port in &expose {
        builder = builder.expose(port);
    }
    for (dest, data) in &files {
        builder = builder.file(dest, data);
    }
    let img = if docker { builder.write_docker_archive(&out, gzip)? } else { builder.write_oci(&out, gzip)? };
    println!("{} {}", img.name, img.manifest_digest);
    Ok(())
}
