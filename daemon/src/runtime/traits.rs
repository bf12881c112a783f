//! The `Runtime` trait: what the agent needs from a container runtime, so its
//! logic can be tested against a fake instead of containerd.

use std::future::Future;
use std::path::Path;

use tokio::sync::mpsc::UnboundedSender;

use super::{
    ContainerRun, ContainerSummary, ContainerdRuntime, ExecRequest, ExecSession, Exit, ImageConfig, ImageInfo,
    PullProgress, RuntimeError, TaskState,
};

/// Container runtime operations, implemented by [`ContainerdRuntime`].
/// Futures are `Send` so callers can spawn them.
pub trait Runtime: Clone + Send + Sync + 'static {
    fn import_archive(&self, path: &Path) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send;
    fn pull(
        &self,
        reference: &str,
        auth: Option<(String, String)>,
        insecure_registries: &[String],
        progress: UnboundedSender<PullProgress>,
    ) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;
    fn list_images(&self) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send;
    fn remove_image(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn image_config(&self, name: &str) -> impl Future<Output = Result<Option<ImageConfig>, RuntimeError>> + Send;
    fn run(&self, c: &ContainerRun) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    fn wait(&self, id: &str) -> impl Future<Output = Result<Exit, RuntimeError>> + Send;
    fn state(&self, id: &str) -> impl Future<Output = Result<Option<TaskState>, RuntimeError>> + Send;
    fn kill(&self, id: &str, signal: i32) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn list_containers(&self) -> impl Future<Output = Result<Vec<ContainerSummary>, RuntimeError>> + Send;
    fn exec(&self, id: &str, e: &ExecRequest) -> impl Future<Output = Result<ExecSession, RuntimeError>> + Send;
}

impl Runtime for ContainerdRuntime {
    async fn import_archive(&self, path: &Path) -> Result<Vec<ImageInfo>, RuntimeError> {
        ContainerdRuntime::import_archive(self, path).await
    }
    async fn pull(
        &self,
        reference: &str,
        auth: Option<(String, String)>,
        insecure_registries: &[String],
        progress: UnboundedSender<PullProgress>,
    ) -> Result<ImageInfo, RuntimeError> {
        ContainerdRuntime::pull(self, reference, auth, insecure_registries, progress).await
    }
    async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        ContainerdRuntime::list_images(self).await
    }
    async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        ContainerdRuntime::remove_image(self, name).await
    }
    async fn image_config(&self, name: &str) -> Result<Option<ImageConfig>, RuntimeError> {
        ContainerdRuntime::image_config(self, name).await
    }
    async fn run(&self, c: &ContainerRun) -> Result<u32, RuntimeError> {
        ContainerdRuntime::run(self, c).await
    }
    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError> {
        ContainerdRuntime::wait(self, id).await
    }
    async fn state(&self, id: &str) -> Result<Option<TaskState>, RuntimeError> {
        ContainerdRuntime::state(self, id).await
    }
    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        ContainerdRuntime::kill(self, id, signal).await
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        ContainerdRuntime::remove(self, id).await
    }
    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
        ContainerdRuntime::list_containers(self).await
    }
    async fn exec(&self, id: &str, e: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        ContainerdRuntime::exec(self, id, e).await
    }
}
