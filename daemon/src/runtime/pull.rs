//! Pulling images from OCI registries with `oci-client` into containerd.

use std::collections::HashMap;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::content::Lease;
use super::images::{diff_ids, is_index, parse_layers, pick_platform, LayerDesc};
use super::reference::parse_reference;
use super::{ContainerdRuntime, ImageInfo, PullProgress, RuntimeError};

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The registry's own words for an error, without the library's wrapping.
fn reason(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|err| {
                let code = serde_json::to_value(&err.code).ok().and_then(|v| v.as_str().map(String::from));
                match code {
                    Some(c) if !err.message.is_empty() => format!("{c}: {}", err.message),
                    Some(c) => c,
                    None => err.message.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        OciDistributionError::ServerError { code, message, .. } => {
            format!("registry answered HTTP {code}: {}", message.trim())
        }
        other => super::error_chain(other),
    }
}

struct Puller<'a> {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    name: String,
    progress: &'a UnboundedSender<PullProgress>,
}

impl Puller<'_> {
    fn fail(&self, e: OciDistributionError) -> RuntimeError {
        RuntimeError::Pull { reference: self.name.clone(), reason: reason(&e) }
    }

    fn report(&self, layer: &str, current: u64, total: u64, status: &str) {
        let _ = self.progress.send(PullProgress { layer: layer.into(), current, total, status: status.into() });
    }

    /// Manifest bytes, their media type, and the parsed manifest (resolving an index).
    async fn manifest(&self) -> Result<(Vec<u8>, String, Value), RuntimeError> {
        let (bytes, _) =
            self.client.pull_manifest_raw(&self.reference, &self.auth, ACCEPTED).await.map_err(|e| self.fail(e))?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| self.bad(format!("manifest is not JSON: {e}")))?;
        let media_type = doc["mediaType"].as_str().unwrap_or_default().to_string();
        if !is_index(&media_type, &doc) {
            return Ok((bytes.to_vec(), media_type, doc));
        }
        let (_, digest, _) =
            pick_platform(&doc).ok_or_else(|| self.bad("the index has no manifest for this platform".into()))?;
        let by_digest = self.reference.clone_with_digest(digest);
        let (bytes, _) =
            self.client.pull_manifest_raw(&by_digest, &self.auth, ACCEPTED).await.map_err(|e| self.fail(e))?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| self.bad(format!("manifest is not JSON: {e}")))?;
        let media_type = doc["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json").to_string();
        Ok((bytes.to_vec(), media_type, doc))
    }

    fn bad(&self, reason: String) -> RuntimeError {
        RuntimeError::Pull { reference: self.name.clone(), reason }
    }

    async fn config(&self, manifest: &Value) -> Result<Vec<u8>, RuntimeError> {
        let digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let mut out = Vec::new();
        self.client.pull_blob(&self.reference, digest, &mut out).await.map_err(|e| self.fail(e))?;
        Ok(out)
    }

    async fn layer(
        &self,
        rt: &ContainerdRuntime,
        lease: &Lease,
        layer: &LayerDesc,
        diff_id: &str,
    ) -> Result<(), RuntimeError> {
        let total = layer.size.max(0) as u64;
        let labels = HashMap::from([("containerd.io/uncompressed".to_string(), diff_id.to_string())]);
        if rt.content_info(&layer.digest).await?.is_some() {
            self.report(&layer.digest, total, total, "exists");
            return rt.label_blob(&layer.digest, labels).await;
        }
        self.report(&layer.digest, 0, total, "downloading");
        let stream =
            self.client.pull_blob_stream(&self.reference, layer.digest.as_str()).await.map_err(|e| self.fail(e))?;
        let data = stream.stream.map(|r| r.map_err(std::io::Error::other)).boxed();
        let mut last = 0u64;
        rt.write_stream(lease, &layer.digest, total, labels, data, |done| {
            if done >= last + (1 << 20) || done == total {
                last = done;
                self.report(&layer.digest, done, total, "downloading");
            }
        })
        .await
        .map_err(|e| match e {
            RuntimeError::Containerd { message, .. } => self.bad(format!("storing layer {}: {message}", layer.digest)),
            other => other,
        })?;
        self.report(&layer.digest, total, total, "done");
        Ok(())
    }
}

impl ContainerdRuntime {
    /// Pulls `reference` (normalized like Docker) and unpacks it. Plain HTTP is
    /// used only for registries (`host:port`) listed in `insecure_registries`.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<(String, String)>,
        insecure_registries: &[String],
        progress: UnboundedSender<PullProgress>,
    ) -> Result<ImageInfo, RuntimeError> {
        let parsed = parse_reference(reference)?;
        let name = parsed.whole();
        let config =
            ClientConfig { protocol: ClientProtocol::HttpsExcept(insecure_registries.to_vec()), ..Default::default() };
        let puller = Puller {
            client: Client::new(config),
            reference: parsed,
            auth: auth.map(|(u, p)| RegistryAuth::Basic(u, p)).unwrap_or(RegistryAuth::Anonymous),
            name: name.clone(),
            progress: &progress,
        };
        let (manifest_bytes, media_type, manifest) = puller.manifest().await?;
        let config_bytes = puller.config(&manifest).await?;
        let config: Value =
            serde_json::from_slice(&config_bytes).map_err(|e| puller.bad(format!("config is not JSON: {e}")))?;
        let layers = parse_layers(&manifest);
        let diffs = diff_ids(&config);
        if layers.len() != diffs.len() {
            return Err(puller.bad(format!("{} layers but {} diff_ids", layers.len(), diffs.len())));
        }
        let lease = self.create_lease().await?;
        let result = async {
            for (layer, diff) in layers.iter().zip(&diffs) {
                puller.layer(self, &lease, layer, diff).await?;
            }
            for layer in &layers {
                puller.report(&layer.digest, 0, 0, "unpacking");
            }
            self.store_image(&lease, &name, &manifest_bytes, &media_type, config_bytes, config).await
        }
        .await;
        self.delete_lease(lease).await;
        let resolved = result?;
        let size = resolved.layers.iter().map(|l| l.size).sum::<i64>() + resolved.config_size + resolved.manifest_size;
        Ok(ImageInfo {
            name,
            digest: resolved.manifest_digest.clone(),
            size: size.max(0) as u64,
            created: resolved.config["created"].as_str().and_then(|s| s.parse().ok()),
        })
    }
}
