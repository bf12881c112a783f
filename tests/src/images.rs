//! Builds small, deterministic busybox test images as OCI or docker archives.
//!
//! One layer holds Debian's static `/bin/busybox`, a symlink per applet, a
//! minimal `/etc/passwd`/`/etc/group`, `/tmp`, and any extra files the caller
//! adds. Every timestamp is fixed, so the same builder always yields the same
//! digests.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// Fixed mtime for every tar entry (2024-01-01T00:00:00Z).
const MTIME: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";

const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A file to add to the image.
#[derive(Clone, Debug)]
pub struct ExtraFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Builder for a one-layer busybox image.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    name: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
    exposed_ports: Vec<String>,
    files: Vec<ExtraFile>,
}

/// The blobs of a built image, ready to be laid out in an archive.
pub struct BuiltImage {
    pub name: String,
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Applet names of the host's busybox (`busybox --list`).
pub fn busybox_applets() -> Result<Vec<String>> {
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} is missing; install it with `apt-get install -y busybox-static`");
    }
    let out = Command::new(BUSYBOX).arg("--list").output().context("running busybox --list")?;
    if !out.status.success() {
        bail!("`{BUSYBOX} --list` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect())
}

impl ImageBuilder {
    pub fn new(name: &str) -> Self {
        ImageBuilder {
            name: name.to_string(),
            entrypoint: Vec::new(),
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: String::new(),
            user: String::new(),
            exposed_ports: Vec::new(),
            files: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds (or replaces) one `KEY=value` entry.
    pub fn env(mut self, kv: &str) -> Self {
        let key = kv.split('=').next().unwrap_or(kv);
        self.env.retain(|e| e.split('=').next() != Some(key));
        self.env.push(kv.to_string());
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = dir.to_string();
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    /// Adds an exposed port such as `80/tcp`.
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.to_string());
        self
    }

    /// Adds a regular file (mode 0644).
    pub fn file(self, path: &str, contents: &[u8]) -> Self {
        self.file_mode(path, contents, 0o644)
    }

    pub fn file_mode(mut self, path: &str, contents: &[u8], mode: u32) -> Self {
        self.files.push(ExtraFile { path: path.to_string(), contents: contents.to_vec(), mode });
        self
    }

    /// Builds the layer, config and manifest blobs.
    pub fn build(&self) -> Result<BuiltImage> {
        let layer = self.layer_tar()?;
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&self.config_json(&layer_digest))?;
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": MT_OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
        }))?;
        let manifest_digest = sha256_digest(&manifest);
        Ok(BuiltImage {
            name: self.name.clone(),
            layer,
            layer_digest,
            config,
            config_digest,
            manifest,
            manifest_digest,
        })
    }

    fn config_json(&self, diff_id: &str) -> Value {
        let mut config = serde_json::Map::new();
        config.insert("Env".into(), json!(self.env));
        if !self.entrypoint.is_empty() {
            config.insert("Entrypoint".into(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            config.insert("Cmd".into(), json!(self.cmd));
        }
        if !self.working_dir.is_empty() {
            config.insert("WorkingDir".into(), json!(self.working_dir));
        }
        if !self.user.is_empty() {
            config.insert("User".into(), json!(self.user));
        }
        if !self.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, Value> =
                self.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
            config.insert("ExposedPorts".into(), Value::Object(ports));
        }
        json!({
            "created": CREATED,
            "architecture": oci_arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": CREATED, "created_by": "skerry-mkimage"}],
        })
    }

    fn layer_tar(&self) -> Result<Vec<u8>> {
        let busybox = std::fs::read(BUSYBOX)
            .with_context(|| format!("reading {BUSYBOX}; install it with `apt-get install -y busybox-static`"))?;
        let applets = busybox_applets()?;
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs = BTreeSet::new();
        for d in ["bin", "etc", "root", "tmp", "usr", "usr/bin", "var", "proc", "sys", "dev"] {
            dirs.insert(d.to_string());
        }
        for f in &self.files {
            let rel = f.path.trim_start_matches('/');
            let mut parent = Path::new(rel).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_string_lossy().into_owned());
                parent = p.parent();
            }
        }
        for d in &dirs {
            let mode = if d == "tmp" { 0o1777 } else { 0o755 };
            append_dir(&mut tar, d, mode)?;
        }
        append_file(&mut tar, "bin/busybox", &busybox, 0o755)?;
        for applet in &applets {
            append_symlink(&mut tar, &format!("bin/{applet}"), "busybox")?;
        }
        let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        let group = b"root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n";
        let user_files = |p: &str| self.files.iter().any(|f| f.path.trim_start_matches('/') == p);
        if !user_files("etc/passwd") {
            append_file(&mut tar, "etc/passwd", passwd, 0o644)?;
        }
        if !user_files("etc/group") {
            append_file(&mut tar, "etc/group", group, 0o644)?;
        }
        for f in &self.files {
            append_file(&mut tar, f.path.trim_start_matches('/'), &f.contents, f.mode)?;
        }
        Ok(tar.into_inner()?)
    }

    /// Writes an OCI image layout archive (optionally gzip-compressed as a whole).
    pub fn write_oci(&self, path: &Path, gzip: bool) -> Result<BuiltImage> {
        let img = self.build()?;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [{
                "mediaType": MT_OCI_MANIFEST,
                "digest": img.manifest_digest,
                "size": img.manifest.len(),
                "annotations": {
                    "org.opencontainers.image.ref.name": img.name,
                    "io.containerd.image.name": img.name,
                },
            }],
        }))?;
        let mut tar = tar::Builder::new(Vec::new());
        append_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        append_file(&mut tar, "index.json", &index, 0o644)?;
        append_dir(&mut tar, "blobs", 0o755)?;
        append_dir(&mut tar, "blobs/sha256", 0o755)?;
        for (digest, data) in
            [(&img.layer_digest, &img.layer), (&img.config_digest, &img.config), (&img.manifest_digest, &img.manifest)]
        {
            append_file(&mut tar, &format!("blobs/sha256/{}", hex_of(digest)), data, 0o644)?;
        }
        write_archive(path, tar.into_inner()?, gzip)?;
        Ok(img)
    }

    /// Writes a `docker save` archive (manifest.json with Config, RepoTags, Layers).
    pub fn write_docker_archive(&self, path: &Path, gzip: bool) -> Result<BuiltImage> {
        let img = self.build()?;
        let config_name = format!("{}.json", hex_of(&img.config_digest));
        let layer_name = format!("{}/layer.tar", hex_of(&img.layer_digest));
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [img.name],
            "Layers": [layer_name],
        }]))?;
        let mut tar = tar::Builder::new(Vec::new());
        append_file(&mut tar, &config_name, &img.config, 0o644)?;
        append_dir(&mut tar, hex_of(&img.layer_digest), 0o755)?;
        append_file(&mut tar, &layer_name, &img.layer, 0o644)?;
        append_file(&mut tar, "manifest.json", &manifest, 0o644)?;
        write_archive(path, tar.into_inner()?, gzip)?;
        Ok(img)
    }
}

fn write_archive(path: &Path, data: Vec<u8>, gzip: bool) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if gzip {
        let mut enc = flate2::GzBuilder::new().mtime(0).write(file, flate2::Compression::fast());
        enc.write_all(&data)?;
        enc.finish()?.sync_all()?;
    } else {
        file.write_all(&data)?;
        file.sync_all()?;
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    Ok(())
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut h, path, data)?;
    Ok(())
}

fn append_symlink(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, path, target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_deterministic() {
        let a = ImageBuilder::new("docker.io/library/busybox:latest").file("/www/index.html", b"hi").build().unwrap();
        let b = ImageBuilder::new("docker.io/library/busybox:latest").file("/www/index.html", b"hi").build().unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let tmp = tempfile::tempdir().unwrap();
        let p1 = tmp.path().join("a.tar");
        let p2 = tmp.path().join("b.tar");
        ImageBuilder::new("x").write_oci(&p1, true).unwrap();
        ImageBuilder::new("x").write_oci(&p2, true).unwrap();
        assert_eq!(std::fs::read(p1).unwrap(), std::fs::read(p2).unwrap());
    }
}
