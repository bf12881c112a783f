//! Reads OCI-layout and docker-save archives (plain or gzip) into image parts.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::content::sha256_digest;
use super::images::{is_index, pick_platform};
use super::RuntimeError;

const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One image found in an archive; its layers stay on disk until imported.
pub(crate) struct ArchiveImage {
    pub name: String,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    /// Layer files in manifest order.
    pub layer_files: Vec<PathBuf>,
}

/// An archive unpacked into a temporary directory, removed on drop.
pub(crate) struct Extracted {
    dir: PathBuf,
    pub images: Vec<ArchiveImage>,
}

impl Drop for Extracted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidArchive { path: path.to_path_buf(), reason: reason.into() }
}

/// Unpacks `path` into a temporary directory and finds its images.
pub(crate) async fn extract(path: &Path) -> Result<Extracted, RuntimeError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || extract_blocking(&path))
        .await
        .map_err(|e| RuntimeError::io("archive extraction task", std::io::Error::other(e)))?
}

fn extract_blocking(path: &Path) -> Result<Extracted, RuntimeError> {
    let dir = std::env::temp_dir().join(format!("skerry-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
    let mut extracted = Extracted { dir: dir.clone(), images: Vec::new() };
    unpack_tar(path, &dir)?;
    extracted.images = if dir.join("index.json").is_file() {
        oci_images(path, &dir)?
    } else if dir.join("manifest.json").is_file() {
        docker_images(path, &dir)?
    } else {
        return Err(invalid(path, "neither an OCI image layout (index.json) nor a docker archive (manifest.json)"));
    };
    if extracted.images.is_empty() {
        return Err(invalid(path, "the archive holds no images"));
    }
    Ok(extracted)
}

/// True when the reader starts with the gzip magic bytes.
fn is_gzip(path: &Path) -> Result<bool, RuntimeError> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).map_err(|e| RuntimeError::io(format!("opening {}", path.display()), e))?;
    let n = f.read(&mut magic).map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

fn unpack_tar(path: &Path, dir: &Path) -> Result<(), RuntimeError> {
    let file = File::open(path).map_err(|e| RuntimeError::io(format!("opening {}", path.display()), e))?;
    let reader: Box<dyn Read> = if is_gzip(path)? {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.unpack(dir).map_err(|e| invalid(path, format!("not a readable tar archive: {e}")))
}

fn read_json(archive: &Path, file: &Path) -> Result<(Vec<u8>, Value), RuntimeError> {
    let bytes = std::fs::read(file).map_err(|_| invalid(archive, format!("{} is missing", file.display())))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| invalid(archive, format!("{}: {e}", file.display())))?;
    Ok((bytes, value))
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(alg).join(hex)
}

fn oci_images(path: &Path, dir: &Path) -> Result<Vec<ArchiveImage>, RuntimeError> {
    let (_, index) = read_json(path, &dir.join("index.json"))?;
    let mut out = Vec::new();
    for desc in index["manifests"].as_array().cloned().unwrap_or_default() {
        let ann = &desc["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .or_else(|| ann["org.opencontainers.image.ref.name"].as_str())
            .ok_or_else(|| invalid(path, "an index.json entry has no image name annotation (org.opencontainers.image.ref.name or io.containerd.image.name)"))?
            .to_string();
        let mut media_type = desc["mediaType"].as_str().unwrap_or(MT_OCI_MANIFEST).to_string();
        let mut digest = desc["digest"].as_str().unwrap_or_default().to_string();
        let (mut bytes, mut manifest) = read_json(path, &blob_path(dir, &digest))?;
        if is_index(&media_type, &manifest) {
            let (mt, d, _) = pick_platform(&manifest)
                .ok_or_else(|| invalid(path, format!("{name} has no manifest for this platform")))?;
            (media_type, digest) = (if mt.is_empty() { MT_OCI_MANIFEST.into() } else { mt }, d);
            (bytes, manifest) = read_json(path, &blob_path(dir, &digest))?;
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let config = std::fs::read(blob_path(dir, config_digest))
            .map_err(|_| invalid(path, format!("config {config_digest} of {name} is missing")))?;
        let layer_files = manifest["layers"]
            .as_array()
            .map(|ls| ls.iter().map(|l| blob_path(dir, l["digest"].as_str().unwrap_or_default())).collect())
            .unwrap_or_default();
        out.push(ArchiveImage { name, manifest: bytes, manifest_media_type: media_type, config, layer_files });
    }
    Ok(out)
}

fn docker_images(path: &Path, dir: &Path) -> Result<Vec<ArchiveImage>, RuntimeError> {
    let (_, entries) = read_json(path, &dir.join("manifest.json"))?;
    let mut out = Vec::new();
    for entry in entries.as_array().cloned().unwrap_or_default() {
        let tags: Vec<String> = entry["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if tags.is_empty() {
            return Err(invalid(path, "an image in manifest.json has no RepoTags; tag it before `docker save`"));
        }
        let config_file = dir.join(entry["Config"].as_str().unwrap_or_default());
        let config =
            std::fs::read(&config_file).map_err(|_| invalid(path, format!("{} is missing", config_file.display())))?;
        let mut layers = Vec::new();
        let mut layer_files = Vec::new();
        for l in entry["Layers"].as_array().cloned().unwrap_or_default() {
            let file = dir.join(l.as_str().unwrap_or_default());
            let (digest, size) =
                file_digest(&file).map_err(|_| invalid(path, format!("layer {} is missing", file.display())))?;
            let media_type = if is_gzip(&file)? { MT_DOCKER_LAYER_GZIP } else { MT_DOCKER_LAYER };
            layers.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
            layer_files.push(file);
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "digest": sha256_digest(&config), "size": config.len()},
            "layers": layers,
        }))
        .expect("serializing a JSON value");
        for name in tags {
            out.push(ArchiveImage {
                name,
                manifest: manifest.clone(),
                manifest_media_type: MT_DOCKER_MANIFEST.into(),
                config: config.clone(),
                layer_files: layer_files.clone(),
            });
        }
    }
    Ok(out)
}

fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut f = BufReader::new(File::open(path)?);
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut f, &mut hasher)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}
