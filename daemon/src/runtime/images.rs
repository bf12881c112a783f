//! Images: registering, unpacking into snapshots, listing, removing, reading configs.

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest, UpdateImageRequest,
};
use containerd_client::types::Descriptor;
use serde_json::Value;

use super::archive::{self, ArchiveImage};
use super::content::{sha256_digest, Lease};
use super::reference::normalize_image_name;
use super::{ContainerdRuntime, ImageConfig, ImageInfo, RuntimeError};

pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A layer as described by a manifest.
#[derive(Clone, Debug)]
pub(crate) struct LayerDesc {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// The parsed manifest and config of one image.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub manifest_digest: String,
    pub manifest_size: i64,
    pub config_digest: String,
    pub config: Value,
    pub config_size: i64,
    pub layers: Vec<LayerDesc>,
}

impl Resolved {
    pub fn diff_ids(&self) -> Vec<String> {
        diff_ids(&self.config)
    }
}

pub(crate) fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Chain IDs per the OCI image spec: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

pub(crate) fn parse_layers(manifest: &Value) -> Vec<LayerDesc> {
    manifest["layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| LayerDesc {
                    media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                    digest: l["digest"].as_str().unwrap_or_default().to_string(),
                    size: l["size"].as_i64().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn is_index(media_type: &str, doc: &Value) -> bool {
    media_type == MT_OCI_INDEX || media_type == MT_DOCKER_LIST || doc.get("manifests").is_some()
}

/// `os/arch` of this host in OCI terms.
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// Picks this host's manifest from an index: (media type, digest, size).
pub(crate) fn pick_platform(index: &Value) -> Option<(String, String, i64)> {
    let (os, arch) = host_platform();
    index["manifests"].as_array()?.iter().find_map(|m| {
        let p = &m["platform"];
        let fits = p.is_null() || (p["os"] == os && p["architecture"] == arch);
        fits.then(|| {
            (
                m["mediaType"].as_str().unwrap_or_default().to_string(),
                m["digest"].as_str().unwrap_or_default().to_string(),
                m["size"].as_i64().unwrap_or_default(),
            )
        })
    })
}

fn image_config_from(config: &Value, image_id: &str) -> ImageConfig {
    let c = &config["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    ImageConfig {
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        env: strings(&c["Env"]),
        working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
        user: c["User"].as_str().unwrap_or_default().to_string(),
        image_id: image_id.to_string(),
    }
}

fn parse_json(image: &str, what: &str, data: &[u8]) -> Result<Value, RuntimeError> {
    serde_json::from_slice(data).map_err(|e| RuntimeError::InvalidImage {
        image: image.into(),
        reason: format!("{what} is not valid JSON: {e}"),
    })
}

impl ContainerdRuntime {
    /// Imports every image in an OCI or docker archive (gzip-compressed or not)
    /// and unpacks it so it can run.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<ImageInfo>, RuntimeError> {
        let extracted = archive::extract(path).await?;
        let lease = self.create_lease().await?;
        let result = self.import_extracted(&extracted.images, &lease).await;
        self.delete_lease(lease).await;
        drop(extracted);
        result
    }

    async fn import_extracted(&self, images: &[ArchiveImage], lease: &Lease) -> Result<Vec<ImageInfo>, RuntimeError> {
        let mut out = Vec::new();
        for img in images {
            let name = normalize_image_name(&img.name)?;
            let config = parse_json(&name, "config", &img.config)?;
            let diffs = diff_ids(&config);
            let manifest = parse_json(&name, "manifest", &img.manifest)?;
            let layers = parse_layers(&manifest);
            if layers.len() != diffs.len() {
                return Err(RuntimeError::InvalidImage {
                    image: name,
                    reason: format!("{} layers but {} diff_ids", layers.len(), diffs.len()),
                });
            }
            for ((layer, file), diff) in layers.iter().zip(&img.layer_files).zip(&diffs) {
                let labels = HashMap::from([("containerd.io/uncompressed".to_string(), diff.clone())]);
                let f = tokio::fs::File::open(file)
                    .await
                    .map_err(|e| RuntimeError::io(format!("opening {}", file.display()), e))?;
                let stream = tokio_util::io::ReaderStream::with_capacity(f, super::content::CHUNK);
                self.write_stream(lease, &layer.digest, layer.size as u64, labels, stream, |_| {}).await?;
            }
            let resolved = self
                .store_image(lease, &name, &img.manifest, &img.manifest_media_type, img.config.clone(), config)
                .await?;
            out.push(self.info_from(&name, &resolved));
        }
        Ok(out)
    }

    /// Writes config and manifest (with GC labels), unpacks the layers (already
    /// in the content store) and creates or updates the image record.
    pub(crate) async fn store_image(
        &self,
        lease: &Lease,
        name: &str,
        manifest_bytes: &[u8],
        manifest_media_type: &str,
        config_bytes: Vec<u8>,
        config: Value,
    ) -> Result<Resolved, RuntimeError> {
        let manifest = parse_json(name, "manifest", manifest_bytes)?;
        let layers = parse_layers(&manifest);
        let chains = chain_ids(&diff_ids(&config));
        let config_digest = sha256_digest(&config_bytes);
        let config_size = config_bytes.len() as i64;
        let mut config_labels = HashMap::new();
        if let Some(top) = chains.last() {
            config_labels.insert(format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter), top.clone());
        }
        self.write_bytes(lease, &config_digest, config_bytes, config_labels).await?;
        let mut manifest_labels =
            HashMap::from([("containerd.io/gc.ref.content.config".to_string(), config_digest.clone())]);
        for (i, l) in layers.iter().enumerate() {
            manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), l.digest.clone());
        }
        let manifest_digest = sha256_digest(manifest_bytes);
        self.write_bytes(lease, &manifest_digest, manifest_bytes.to_vec(), manifest_labels).await?;
        let resolved = Resolved {
            manifest_digest,
            manifest_size: manifest_bytes.len() as i64,
            config_digest,
            config,
            config_size,
            layers,
        };
        self.unpack(lease, name, &resolved).await?;
        let target = Descriptor {
            media_type: manifest_media_type.to_string(),
            digest: resolved.manifest_digest.clone(),
            size: resolved.manifest_size,
            annotations: HashMap::new(),
        };
        self.put_image(lease, name, target).await?;
        Ok(resolved)
    }

    async fn put_image(&self, lease: &Lease, name: &str, target: Descriptor) -> Result<(), RuntimeError> {
        let image = Image { name: name.to_string(), target: Some(target), ..Default::default() };
        let mut images = ImagesClient::new(self.channel());
        let create = CreateImageRequest { image: Some(image.clone()), source_date_epoch: None };
        match images.create(self.req_leased(create, &lease.id)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let update = UpdateImageRequest { image: Some(image), update_mask: None, source_date_epoch: None };
                images.update(self.req(update)).await.map_err(|s| RuntimeError::grpc("image update", s))?;
                Ok(())
            }
            Err(s) => Err(RuntimeError::grpc("image create", s)),
        }
    }

    /// Applies each layer onto its parent snapshot, committing snapshots named
    /// by chain ID; layers already unpacked are skipped.
    pub(crate) async fn unpack(&self, lease: &Lease, name: &str, image: &Resolved) -> Result<(), RuntimeError> {
        let diffs = image.diff_ids();
        let chains = chain_ids(&diffs);
        let mut parent = String::new();
        for ((layer, chain), diff) in image.layers.iter().zip(&chains).zip(&diffs) {
            if !self.snapshot_exists(chain).await? {
                self.apply_layer(lease, name, layer, &parent, chain, diff).await?;
            }
            parent = chain.clone();
        }
        Ok(())
    }

    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let req = StatSnapshotRequest { snapshotter: self.snapshotter.clone(), key: key.to_string() };
        match SnapshotsClient::new(self.channel()).stat(self.req(req)).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(RuntimeError::grpc("snapshot stat", s)),
        }
    }

    async fn apply_layer(
        &self,
        lease: &Lease,
        name: &str,
        layer: &LayerDesc,
        parent: &str,
        chain: &str,
        diff_id: &str,
    ) -> Result<(), RuntimeError> {
        let key = format!("skerry-unpack-{}", uuid::Uuid::new_v4());
        let mut snapshots = SnapshotsClient::new(self.channel());
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        };
        let mounts = snapshots
            .prepare(self.req_leased(prepare, &lease.id))
            .await
            .map_err(|s| RuntimeError::grpc("snapshot prepare", s))?
            .into_inner()
            .mounts;
        let apply = ApplyRequest {
            diff: Some(Descriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
                annotations: HashMap::new(),
            }),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        };
        let applied = DiffClient::new(self.channel()).apply(self.req_leased(apply, &lease.id)).await;
        let result = match applied {
            Ok(r) => {
                let got = r.into_inner().applied.map(|d| d.digest).unwrap_or_default();
                if got != diff_id {
                    Err(RuntimeError::InvalidImage {
                        image: name.into(),
                        reason: format!("layer {} unpacked to {got}, but the config says {diff_id}", layer.digest),
                    })
                } else {
                    self.commit_snapshot(lease, &key, chain).await
                }
            }
            Err(s) => Err(RuntimeError::grpc("diff apply", s)),
        };
        if result.is_err() {
            let _ =
                snapshots.remove(self.req(RemoveSnapshotRequest { snapshotter: self.snapshotter.clone(), key })).await;
        }
        result
    }

    async fn commit_snapshot(&self, lease: &Lease, key: &str, name: &str) -> Result<(), RuntimeError> {
        let commit = CommitSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            name: name.to_string(),
            key: key.to_string(),
            labels: HashMap::new(),
        };
        match SnapshotsClient::new(self.channel()).commit(self.req_leased(commit, &lease.id)).await {
            Ok(_) => Ok(()),
            // Unpacked concurrently by someone else: theirs is as good as ours.
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let rm = RemoveSnapshotRequest { snapshotter: self.snapshotter.clone(), key: key.to_string() };
                let _ = SnapshotsClient::new(self.channel()).remove(self.req(rm)).await;
                Ok(())
            }
            Err(s) => Err(RuntimeError::grpc("snapshot commit", s)),
        }
    }

    /// The image record, or None.
    async fn get_image(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        let req = GetImageRequest { name: name.to_string() };
        match ImagesClient::new(self.channel()).get(self.req(req)).await {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::grpc("image get", s)),
        }
    }

    /// Reads the manifest (through an index if need be) and config of an image.
    pub(crate) async fn resolve(&self, name: &str, target: &Descriptor) -> Result<Resolved, RuntimeError> {
        let missing = |what: &str, d: &str| RuntimeError::InvalidImage {
            image: name.into(),
            reason: format!("{what} {d} is missing from the content store; import or pull the image again"),
        };
        let (mut digest, mut size) = (target.digest.clone(), target.size);
        let mut bytes = self.read_blob(&digest).await?.ok_or_else(|| missing("manifest", &digest))?;
        let mut doc = parse_json(name, "manifest", &bytes)?;
        if is_index(&target.media_type, &doc) {
            let (_, d, s) = pick_platform(&doc).ok_or_else(|| RuntimeError::InvalidImage {
                image: name.into(),
                reason: format!("no manifest for {}/{}", host_platform().0, host_platform().1),
            })?;
            (digest, size) = (d, s);
            bytes = self.read_blob(&digest).await?.ok_or_else(|| missing("manifest", &digest))?;
            doc = parse_json(name, "manifest", &bytes)?;
        }
        let config_digest = doc["config"]["digest"].as_str().unwrap_or_default().to_string();
        let config_bytes = self.read_blob(&config_digest).await?.ok_or_else(|| missing("config", &config_digest))?;
        Ok(Resolved {
            manifest_digest: digest,
            manifest_size: size,
            config: parse_json(name, "config", &config_bytes)?,
            config_size: config_bytes.len() as i64,
            config_digest,
            layers: parse_layers(&doc),
        })
    }

    /// Looks an image up by (normalized) name and resolves it; ImageNotFound if absent.
    pub(crate) async fn resolve_image(&self, name: &str) -> Result<(String, Resolved), RuntimeError> {
        let name = normalize_image_name(name)?;
        let image = self.get_image(&name).await?.ok_or_else(|| RuntimeError::ImageNotFound(name.clone()))?;
        let target = image.target.unwrap_or_default();
        let resolved = self.resolve(&name, &target).await?;
        Ok((name, resolved))
    }

    fn info_from(&self, name: &str, r: &Resolved) -> ImageInfo {
        let layers: i64 = r.layers.iter().map(|l| l.size).sum();
        ImageInfo {
            name: name.to_string(),
            digest: r.manifest_digest.clone(),
            size: (layers + r.config_size + r.manifest_size).max(0) as u64,
            created: r.config["created"].as_str().and_then(|s| s.parse().ok()),
        }
    }

    /// All images in the namespace, sorted by name.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = ImagesClient::new(self.channel())
            .list(self.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|s| RuntimeError::grpc("image list", s))?
            .into_inner()
            .images;
        let mut out = Vec::with_capacity(images.len());
        for img in images {
            let target = img.target.clone().unwrap_or_default();
            match self.resolve(&img.name, &target).await {
                Ok(r) => out.push(self.info_from(&img.name, &r)),
                Err(e) => {
                    tracing::warn!(image = %img.name, error = %e, "listing an image whose content is incomplete");
                    out.push(ImageInfo { name: img.name, digest: target.digest, size: 0, created: None });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes an image; content and snapshots no longer referenced are
    /// garbage-collected before this returns.
    pub async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        let name = normalize_image_name(name)?;
        let req = DeleteImageRequest { name: name.clone(), sync: true, target: None };
        match ImagesClient::new(self.channel()).delete(self.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(RuntimeError::ImageNotFound(name)),
            Err(s) => Err(RuntimeError::grpc("image delete", s)),
        }
    }

    /// The image's config, or None when the image is absent.
    pub async fn image_config(&self, name: &str) -> Result<Option<ImageConfig>, RuntimeError> {
        match self.resolve_image(name).await {
            Ok((_, r)) => Ok(Some(image_config_from(&r.config, &r.config_digest))),
            Err(RuntimeError::ImageNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes sure the image's layers are unpacked and returns its top chain ID.
    pub(crate) async fn ensure_unpacked(&self, name: &str) -> Result<String, RuntimeError> {
        let (name, resolved) = self.resolve_image(name).await?;
        let chains = chain_ids(&resolved.diff_ids());
        let top = chains
            .last()
            .cloned()
            .ok_or_else(|| RuntimeError::InvalidImage { image: name.clone(), reason: "it has no layers".into() })?;
        if !self.snapshot_exists(&top).await? {
            let lease = self.create_lease().await?;
            let r = self.unpack(&lease, &name, &resolved).await;
            self.delete_lease(lease).await;
            r?;
        }
        Ok(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = |s: &str| format!("sha256:{}", s.repeat(64));
        let diffs = vec![d("a"), d("b")];
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], diffs[0]);
        assert_eq!(chains[1], sha256_digest(format!("{} {}", diffs[0], diffs[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn config_fields_are_read() {
        let config = serde_json::json!({"config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"], "Env": ["A=1"], "WorkingDir": "/w", "User": "1:2"}});
        let c = image_config_from(&config, "sha256:x");
        assert_eq!(c.entrypoint, vec!["/bin/sh"]);
        assert_eq!(c.cmd, vec!["-c", "x"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "1:2");
    }
}
