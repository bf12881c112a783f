//! The `Runtime` trait: what the agent needs from a container runtime, so its
//! logic can be tested against a fake ([`super::fake::FakeRuntime`]) instead of containerd.
//!
//! Object-safe (boxed futures), so the agent holds an `Arc<dyn Runtime>`.

use std::path::Path;

use futures::future::BoxFuture;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    ContainerRun, ContainerSummary, ContainerdRuntime, ExecRequest, ExecSession, Exit, ImageConfig, ImageInfo,
    PullProgress, RuntimeError, TaskState,
};

/// Container runtime operations, implemented by [`ContainerdRuntime`].
/// Futures are `Send` so callers can spawn them.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's version string, e.g. containerd's `1.6.20`.
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>>;
    fn import_archive<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Vec<ImageInfo>, RuntimeError>>;
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        auth: Option<(String, String)>,
        insecure_registries: &'a [String],
        progress: UnboundedSender<PullProgress>,
    ) -> BoxFuture<'a, Result<ImageInfo, RuntimeError>>;
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, RuntimeError>>;
    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// The config of an image that is present; `None` when it is not.
    fn image_config<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ImageConfig>, RuntimeError>>;
    /// Creates the container and starts its task; returns the task's pid.
    fn run<'a>(&'a self, c: &'a ContainerRun) -> BoxFuture<'a, Result<u32, RuntimeError>>;
    /// Waits for the container's task to exit.
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Exit, RuntimeError>>;
    /// The state of the container's task; `None` when there is no such container.
    fn state<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskState>, RuntimeError>>;
    fn kill<'a>(&'a self, id: &'a str, signal: i32) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// Removes the container's task (killing it) and the container.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<ContainerSummary>, RuntimeError>>;
    fn exec<'a>(&'a self, id: &'a str, e: &'a ExecRequest) -> BoxFuture<'a, Result<ExecSession, RuntimeError>>;
}

impl Runtime for ContainerdRuntime {
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        Box::pin(ContainerdRuntime::version(self))
    }
    fn import_archive<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Vec<ImageInfo>, RuntimeError>> {
        Box::pin(ContainerdRuntime::import_archive(self, path))
    }
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        auth: Option<(String, String)>,
        insecure_registries: &'a [String],
        progress: UnboundedSender<PullProgress>,
    ) -> BoxFuture<'a, Result<ImageInfo, RuntimeError>> {
        Box::pin(ContainerdRuntime::pull(self, reference, auth, insecure_registries, progress))
    }
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, RuntimeError>> {
        Box::pin(ContainerdRuntime::list_images(self))
    }
    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(ContainerdRuntime::remove_image(self, name))
    }
    fn image_config<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ImageConfig>, RuntimeError>> {
        Box::pin(ContainerdRuntime::image_config(self, name))
    }
    fn run<'a>(&'a self, c: &'a ContainerRun) -> BoxFuture<'a, Result<u32, RuntimeError>> {
        Box::pin(ContainerdRuntime::run(self, c))
    }
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Exit, RuntimeError>> {
        Box::pin(ContainerdRuntime::wait(self, id))
    }
    fn state<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskState>, RuntimeError>> {
        Box::pin(ContainerdRuntime::state(self, id))
    }
    fn kill<'a>(&'a self, id: &'a str, signal: i32) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(ContainerdRuntime::kill(self, id, signal))
    }
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(ContainerdRuntime::remove(self, id))
    }
    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<ContainerSummary>, RuntimeError>> {
        Box::pin(ContainerdRuntime::list_containers(self))
    }
    fn exec<'a>(&'a self, id: &'a str, e: &'a ExecRequest) -> BoxFuture<'a, Result<ExecSession, RuntimeError>> {
        Box::pin(ContainerdRuntime::exec(self, id, e))
    }
}
