//! Containers and tasks: run, wait, state, kill, remove, list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status;
use containerd_client::types::Mount;

use super::reference::normalize_image_name;
use super::{ContainerRun, ContainerSummary, ContainerdRuntime, Exit, RuntimeError, TaskState};

pub(crate) const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
const LOGGER_NAME: &str = "skerry-logger";

fn is_code(s: &tonic::Status, code: tonic::Code) -> bool {
    s.code() == code
}

/// Percent-encodes a URI query value (everything but unreserved characters and `/`).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `binary://` stdio URI that makes the shim spawn the logger for `log_path`.
pub(crate) fn logger_uri(logger: &Path, log_path: &Path) -> String {
    format!("binary://{}?path={}", query_escape(&logger.to_string_lossy()), query_escape(&log_path.to_string_lossy()))
}

/// `$SKERRY_LOGGER`, else `skerry-logger` next to the running executable.
pub fn default_logger_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SKERRY_LOGGER") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(LOGGER_NAME)))
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(LOGGER_NAME))
}

impl ContainerdRuntime {
    /// Uses `path` as the logger binary instead of [`default_logger_path`].
    pub fn with_logger(mut self, path: PathBuf) -> Self {
        self.logger = Some(path);
        self
    }

    fn logger_path(&self) -> Result<PathBuf, RuntimeError> {
        let path = self.logger.clone().unwrap_or_else(default_logger_path);
        if !path.is_file() {
            return Err(RuntimeError::LoggerMissing(path));
        }
        Ok(path)
    }

    fn tasks(&self) -> TasksClient<tonic::transport::Channel> {
        TasksClient::new(self.channel())
    }

    fn containers(&self) -> ContainersClient<tonic::transport::Channel> {
        ContainersClient::new(self.channel())
    }

    /// Creates and starts one container + task; returns the task's pid. Any
    /// stale container, task or snapshot with the same id is removed first.
    pub async fn run(&self, c: &ContainerRun) -> Result<u32, RuntimeError> {
        let logger = self.logger_path()?;
        let image = normalize_image_name(&c.image)?;
        let top = self.ensure_unpacked(&image).await?;
        self.remove(&c.id).await?;
        if let Some(dir) = c.log_path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        }
        let lease = self.create_lease().await?;
        let created = self.create_container(&lease.id, c, &image, &top).await;
        self.delete_lease(lease).await;
        let mounts = created?;
        match self.start_task(c, mounts, &logger).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                if let Err(cleanup) = self.remove(&c.id).await {
                    tracing::warn!(id = %c.id, error = %cleanup, "cleaning up a container that failed to start");
                }
                Err(e)
            }
        }
    }

    /// Prepares the snapshot and creates the container record; returns the rootfs mounts.
    async fn create_container(
        &self,
        lease: &str,
        c: &ContainerRun,
        image: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: c.id.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        };
        let mounts = SnapshotsClient::new(self.channel())
            .prepare(self.req_leased(prepare, lease))
            .await
            .map_err(|s| RuntimeError::grpc("snapshot prepare", s))?
            .into_inner()
            .mounts;
        let spec = serde_json::to_vec(&c.spec).expect("serializing a JSON value");
        let container = Container {
            id: c.id.clone(),
            labels: c.labels.clone(),
            image: image.to_string(),
            runtime: Some(Runtime { name: RUNC_RUNTIME.into(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: spec }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: c.id.clone(),
            ..Default::default()
        };
        let created = self
            .containers()
            .create(self.req_leased(CreateContainerRequest { container: Some(container) }, lease))
            .await;
        if let Err(s) = created {
            let rm = RemoveSnapshotRequest { snapshotter: self.snapshotter.clone(), key: c.id.clone() };
            let _ = SnapshotsClient::new(self.channel()).remove(self.req(rm)).await;
            return Err(RuntimeError::grpc("container create", s));
        }
        Ok(mounts)
    }

    async fn start_task(&self, c: &ContainerRun, rootfs: Vec<Mount>, logger: &Path) -> Result<u32, RuntimeError> {
        let uri = logger_uri(logger, &c.log_path);
        let create = CreateTaskRequest {
            container_id: c.id.clone(),
            rootfs,
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        self.tasks().create(self.req(create)).await.map_err(|s| RuntimeError::grpc("task create", s))?;
        let start = StartRequest { container_id: c.id.clone(), exec_id: String::new() };
        let resp = self.tasks().start(self.req(start)).await.map_err(|s| RuntimeError::grpc("task start", s))?;
        Ok(resp.into_inner().pid)
    }

    /// Resolves when the task exits (at once if it already has).
    pub async fn wait(&self, id: &str) -> Result<Exit, RuntimeError> {
        self.wait_process(id, "").await
    }

    pub(crate) async fn wait_process(&self, id: &str, exec_id: &str) -> Result<Exit, RuntimeError> {
        let req = WaitRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        match self.tasks().wait(self.req(req)).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Exit::from_status(r.exit_status, r.exited_at))
            }
            Err(s) if is_code(&s, tonic::Code::NotFound) => Err(RuntimeError::ContainerNotFound(id.to_string())),
            Err(s) => Err(RuntimeError::grpc("task wait", s)),
        }
    }

    /// The task's state; None when there is no such container.
    pub async fn state(&self, id: &str) -> Result<Option<TaskState>, RuntimeError> {
        match self.containers().get(self.req(GetContainerRequest { id: id.to_string() })).await {
            Ok(_) => {}
            Err(s) if is_code(&s, tonic::Code::NotFound) => return Ok(None),
            Err(s) => return Err(RuntimeError::grpc("container get", s)),
        }
        let req = GetRequest { container_id: id.to_string(), exec_id: String::new() };
        let process = match self.tasks().get(self.req(req)).await {
            Ok(r) => r.into_inner().process.unwrap_or_default(),
            Err(s) if is_code(&s, tonic::Code::NotFound) => return Ok(Some(TaskState::Created)),
            Err(s) => return Err(RuntimeError::grpc("task get", s)),
        };
        Ok(Some(match Status::try_from(process.status).unwrap_or(Status::Unknown) {
            Status::Running | Status::Paused | Status::Pausing => TaskState::Running { pid: process.pid },
            Status::Stopped => TaskState::Exited(Exit::from_status(process.exit_status, process.exited_at)),
            Status::Created => TaskState::Created,
            // containerd answers UNKNOWN when the shim did not answer: the task may well run, so
            // it is neither restarted nor deleted on that word.
            Status::Unknown => {
                return Err(RuntimeError::Containerd {
                    op: "task state",
                    code: tonic::Code::Unavailable,
                    message: format!("the shim of {id} did not report the task's state"),
                })
            }
        }))
    }

    /// Sends a signal to the task's init process; a missing or finished task is fine.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let req =
            KillRequest { container_id: id.to_string(), exec_id: String::new(), signal: signal as u32, all: false };
        match self.tasks().kill(self.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if is_code(&s, tonic::Code::NotFound) || is_code(&s, tonic::Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(RuntimeError::grpc("task kill", s)),
        }
    }

    /// Deletes the task (SIGKILL first if it runs), the container and its
    /// snapshot. Removing something already gone is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_task(id).await?;
        match self.containers().delete(self.req(DeleteContainerRequest { id: id.to_string() })).await {
            Ok(_) => {}
            Err(s) if is_code(&s, tonic::Code::NotFound) => {}
            Err(s) => return Err(RuntimeError::grpc("container delete", s)),
        }
        let rm = RemoveSnapshotRequest { snapshotter: self.snapshotter.clone(), key: id.to_string() };
        match SnapshotsClient::new(self.channel()).remove(self.req(rm)).await {
            Ok(_) => Ok(()),
            Err(s) if is_code(&s, tonic::Code::NotFound) => Ok(()),
            Err(s) => Err(RuntimeError::grpc("snapshot remove", s)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        match self.state(id).await? {
            None => return Ok(()),
            Some(TaskState::Running { .. }) => {
                self.kill(id, libc::SIGKILL).await?;
                let waited = tokio::time::timeout(std::time::Duration::from_secs(10), self.wait(id)).await;
                if waited.is_err() {
                    tracing::warn!(id, "task did not exit within 10s of SIGKILL; deleting anyway");
                }
            }
            Some(_) => {}
        }
        let req = DeleteTaskRequest { container_id: id.to_string() };
        match self.tasks().delete(self.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if is_code(&s, tonic::Code::NotFound) => Ok(()),
            Err(s) => Err(RuntimeError::grpc("task delete", s)),
        }
    }

    /// Every container in the namespace with its labels.
    pub async fn list_containers(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let resp = self
            .containers()
            .list(self.req(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| RuntimeError::grpc("container list", s))?;
        let mut out: Vec<ContainerSummary> =
            resp.into_inner().containers.into_iter().map(|c| ContainerSummary { id: c.id, labels: c.labels }).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The container's stored OCI spec.
    pub(crate) async fn container_spec(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let c = match self.containers().get(self.req(GetContainerRequest { id: id.to_string() })).await {
            Ok(r) => r.into_inner().container.unwrap_or_default(),
            Err(s) if is_code(&s, tonic::Code::NotFound) => {
                return Err(RuntimeError::ContainerNotFound(id.to_string()))
            }
            Err(s) => return Err(RuntimeError::grpc("container get", s)),
        };
        let bytes = c.spec.map(|a| a.value).unwrap_or_default();
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::InvalidImage {
            image: c.image,
            reason: format!("container {id} has an unreadable spec: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_uri_escapes_the_query() {
        let uri = logger_uri(Path::new("/usr/bin/skerry-logger"), Path::new("/var/log/pods/a b&c/0.log"));
        assert_eq!(uri, "binary:///usr/bin/skerry-logger?path=/var/log/pods/a%20b%26c/0.log");
    }
}
