//! `skerry-mkimage`: writes a busybox test image archive.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use skerry_tests::images::ImageBuilder;

const USAGE: &str = "usage: skerry-mkimage busybox --name NAME --out FILE [--cmd ARG...] [--gzip] [--docker]";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("busybox") {
        bail!("{USAGE}");
    }
    let (mut name, mut out, mut cmd, mut gzip, mut docker) = (None, None, Vec::new(), false, false);
    let mut in_cmd = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = Some(args.next().context(USAGE)?),
            "--out" => out = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--gzip" => gzip = true,
            "--docker" => docker = true,
            "--cmd" => in_cmd = true,
            _ if in_cmd => cmd.push(a),
            _ => bail!("unexpected argument {a:?}\n{USAGE}"),
        }
    }
    let (Some(name), Some(out)) = (name, out) else { bail!("{USAGE}") };
    let mut builder = ImageBuilder::new(&name);
    if !cmd.is_empty() {
        builder = builder.cmd(cmd);
    }
    let img = if docker { builder.write_docker_archive(&out, gzip)? } else { builder.write_oci(&out, gzip)? };
    println!("{} {}", img.name, img.manifest_digest);
    Ok(())
}
