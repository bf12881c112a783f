//! Content store and lease helpers: write, read and label blobs.

use std::collections::HashMap;

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    CreateRequest, DeleteRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{ContainerdRuntime, RuntimeError};

/// Size of each chunk sent to the content store (below gRPC's 16 MiB limit).
pub(crate) const CHUNK: usize = 1 << 20;

/// A lease that keeps written content and snapshots alive until deleted.
/// It also expires by itself after an hour in case skerryd dies mid-import.
pub(crate) struct Lease {
    pub id: String,
}

impl ContainerdRuntime {
    pub(crate) async fn create_lease(&self) -> Result<Lease, RuntimeError> {
        let id = format!("skerry-{}", uuid::Uuid::new_v4());
        let expire = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire.to_string())]);
        LeasesClient::new(self.channel())
            .create(self.req(CreateRequest { id: id.clone(), labels }))
            .await
            .map_err(|s| RuntimeError::grpc("lease create", s))?;
        Ok(Lease { id })
    }

    pub(crate) async fn delete_lease(&self, lease: Lease) {
        let r = LeasesClient::new(self.channel())
            .delete(self.req(DeleteRequest { id: lease.id.clone(), sync: false }))
            .await;
        if let Err(e) = r {
            tracing::warn!(lease = %lease.id, error = %e.message(), "could not delete lease");
        }
    }

    /// Content info, or None when the blob is absent.
    pub(crate) async fn content_info(&self, digest: &str) -> Result<Option<Info>, RuntimeError> {
        match ContentClient::new(self.channel()).info(self.req(InfoRequest { digest: digest.into() })).await {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::grpc("content info", s)),
        }
    }

    /// Reads a whole blob; NotFound becomes `Ok(None)`.
    pub(crate) async fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
        let req = self.req(ReadContentRequest { digest: digest.into(), offset: 0, size: 0 });
        let mut stream = match ContentClient::new(self.channel()).read(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(RuntimeError::grpc("content read", s)),
        };
        let mut data = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => data.extend_from_slice(&chunk.data),
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                Err(s) => return Err(RuntimeError::grpc("content read", s)),
            }
        }
        Ok(Some(data))
    }

    /// Adds labels to an existing blob.
    pub(crate) async fn label_blob(&self, digest: &str, labels: HashMap<String, String>) -> Result<(), RuntimeError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info { digest: digest.into(), labels, ..Default::default() };
        let req = UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) };
        ContentClient::new(self.channel())
            .update(self.req(req))
            .await
            .map_err(|s| RuntimeError::grpc("content update", s))?;
        Ok(())
    }

    /// Writes an in-memory blob unless present; labels it either way.
    pub(crate) async fn write_bytes(
        &self,
        lease: &Lease,
        digest: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let size = data.len() as u64;
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            data.chunks(CHUNK).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        self.write_stream(lease, digest, size, labels, futures::stream::iter(chunks), |_| {}).await
    }

    /// Streams a blob into the content store unless it is already there, then
    /// commits it with `labels` (checked against `digest` and `size`).
    /// `progress` gets the bytes written so far.
    pub(crate) async fn write_stream<S>(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        labels: HashMap<String, String>,
        data: S,
        mut progress: impl FnMut(u64),
    ) -> Result<(), RuntimeError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        if self.content_info(digest).await?.is_some() {
            progress(size);
            return self.label_blob(digest, labels).await;
        }
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let reference = format!("skerry-{}-{}", digest, uuid::Uuid::new_v4());
        let base = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference,
            total: size as i64,
            expected: digest.to_string(),
            ..Default::default()
        };
        let mut client = ContentClient::new(self.channel());
        let call = client.write(self.req_leased(ReceiverStream::new(rx), &lease.id));
        let feeder = feed_chunks(tx, base, data, labels);
        let (call_result, feed_result) = tokio::join!(
            async {
                let mut responses = call.await.map_err(|s| RuntimeError::grpc("content write", s))?.into_inner();
                while let Some(r) = responses.message().await.map_err(|s| RuntimeError::grpc("content write", s))? {
                    progress(r.offset as u64);
                }
                Ok::<(), RuntimeError>(())
            },
            feeder
        );
        feed_result?;
        match call_result {
            Err(RuntimeError::Containerd { code: tonic::Code::AlreadyExists, .. }) => Ok(()),
            other => other,
        }
    }
}

/// Sends the data as Write requests, then one Commit request.
async fn feed_chunks<S>(
    tx: mpsc::Sender<WriteContentRequest>,
    base: WriteContentRequest,
    mut data: S,
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let mut offset = 0i64;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| RuntimeError::io(format!("reading blob {}", base.expected), e))?;
        let len = chunk.len() as i64;
        let req = WriteContentRequest { offset, data: chunk.to_vec(), ..base.clone() };
        if tx.send(req).await.is_err() {
            return Ok(()); // the call failed; its error is reported by the caller
        }
        offset += len;
    }
    let commit = WriteContentRequest { action: WriteAction::Commit as i32, offset, labels, ..base };
    let _ = tx.send(commit).await;
    Ok(())
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
