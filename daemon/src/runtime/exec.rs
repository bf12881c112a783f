//! Exec: run a process inside a running container with FIFO (or TTY) stdio.
//!
//! The shim opens the FIFOs itself. The trap (see FIELD-NOTES) is that a
//! non-blocking FIFO reader sees EOF while no writer is connected, and the
//! shim connects its writer asynchronously. So each output FIFO is opened
//! non-blocking for reading and we also hold a writer of our own until the
//! process has exited; after that only the shim's writer keeps it open, and the
//! reader sees EOF exactly when the shim has copied everything. Stdin is opened
//! read-write so opening never blocks; dropping it gives the process EOF.
//!
//! The other trap: the shim opens its writers inside Start, blocking until each FIFO has a
//! reader, while it holds the lock its exit handling needs. A reader gone before then (a
//! caller that gave up, a killed skerryd) wedges the shim for good: no state, kill or delete
//! is answered again, so the task, the shim and the container's `skerry-logger` stay. Hence
//! the requests run in a task of their own holding extra readers until Start returns, and
//! [`clear_fifo_dir`] releases what a killed skerryd left before anything else runs.

use std::path::{Path, PathBuf};

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest, StartRequest,
};
use nix::sys::stat::Mode;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::spec::merge_env;
use super::{ContainerdRuntime, ExecRequest, RuntimeError};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// A running exec process. Read `stdout` (and `stderr` unless a TTY was
/// requested) to EOF; `wait` gives the exit code. The process is deleted from
/// containerd once it exits, whether or not anyone waits. Destructure it
/// (`let ExecSession { stdin, stdout, stderr, control } = s;`) to move the
/// streams into separate tasks and keep `control` for resize and wait.
pub struct ExecSession {
    /// Dropping it (or [`ExecControl::close_stdin`]) gives the process EOF.
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    /// None with a TTY: the terminal merges both streams into `stdout`.
    pub stderr: Option<pipe::Receiver>,
    pub control: ExecControl,
}

/// Resize, close stdin and wait for an exec process. Cheap to clone.
#[derive(Clone)]
pub struct ExecControl {
    rt: ContainerdRuntime,
    container_id: String,
    exec_id: String,
    exit: watch::Receiver<Option<Result<i32, String>>>,
    _fifos: std::sync::Arc<FifoDir>,
}

/// How long [`clear_fifo_dir`] keeps the FIFOs a killed process left open for reading.
const RELEASE: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes what earlier processes left in an exec FIFO directory; call it, and wait for it,
/// before any exec and before containers are removed. No exec outlives the process that
/// started it, but a process killed while a shim was starting one leaves that shim blocked
/// opening the exec's FIFOs for writing (one after the other), waiting for a reader that died
/// with it — and the blocked shim answers nothing, so its task can be neither stopped nor
/// deleted. Each FIFO is held open for reading for [`RELEASE`], which lets those opens
/// complete, before the directories go.
pub async fn clear_fifo_dir(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let stale: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("skerry-exec-"))
        .map(|e| e.path())
        .collect();
    let readers: Vec<std::fs::File> = stale
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|f| f.file_type().is_ok_and(|t| t.is_fifo()))
        .filter_map(|f| open_keeper(&f.path()).ok())
        .collect();
    if !readers.is_empty() {
        tracing::info!(fifos = readers.len(), "releasing exec FIFOs a previous skerryd left");
        tokio::time::sleep(RELEASE).await;
    }
    drop(readers);
    for d in stale {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A private directory of FIFOs, removed on drop (open ends stay valid).
struct FifoDir(PathBuf);

impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl FifoDir {
    fn create(base: &Path) -> Result<Self, RuntimeError> {
        let dir = base.join(format!("skerry-exec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        Ok(FifoDir(dir))
    }

    fn fifo(&self, name: &str) -> Result<PathBuf, RuntimeError> {
        let path = self.0.join(name);
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| RuntimeError::io(format!("creating fifo {}", path.display()), e.into()))?;
        Ok(path)
    }
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::io(format!("opening fifo {}", path.display()), e)
}

/// Another reader of an output FIFO, never read: kept until the shim has opened its writer.
fn open_keeper(path: &Path) -> Result<std::fs::File, RuntimeError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(open_err(path))
}

/// Opens an output FIFO: our non-blocking reader plus a placeholder writer.
fn open_output(path: &Path) -> Result<(pipe::Receiver, pipe::Sender), RuntimeError> {
    let reader = pipe::OpenOptions::new().open_receiver(path).map_err(open_err(path))?;
    let holder = pipe::OpenOptions::new().open_sender(path).map_err(open_err(path))?;
    Ok((reader, holder))
}

/// The container's process spec with the exec's args, env, terminal and cwd.
fn exec_process(container_spec: &serde_json::Value, e: &ExecRequest) -> serde_json::Value {
    let mut process = container_spec["process"].clone();
    let base_env: Vec<String> = serde_json::from_value(process["env"].clone()).unwrap_or_default();
    process["args"] = serde_json::json!(e.args);
    process["env"] = serde_json::json!(merge_env(&base_env, &e.env));
    process["terminal"] = serde_json::json!(e.tty);
    if let Some(cwd) = &e.cwd {
        process["cwd"] = serde_json::json!(cwd);
    }
    process
}

impl ContainerdRuntime {
    /// Puts exec FIFOs in `dir` instead of the temp dir. A process that dies mid-exec (a
    /// SIGKILL never runs the drop that removes them) leaves them there, so the daemon gives a
    /// directory it owns and empties at start ([`clear_fifo_dir`]).
    pub fn with_fifo_dir(mut self, dir: PathBuf) -> Self {
        self.fifo_dir = Some(dir);
        self
    }

    fn fifo_dir(&self) -> PathBuf {
        self.fifo_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// Starts `e.args` in the running container `id`.
    pub async fn exec(&self, id: &str, e: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        if e.args.is_empty() {
            return Err(RuntimeError::NoCommand);
        }
        let spec = self.container_spec(id).await?;
        let process = exec_process(&spec, e);
        let fifos = FifoDir::create(&self.fifo_dir())?;
        let stdout_path = fifos.fifo("stdout")?;
        let (stdout, stdout_holder) = open_output(&stdout_path)?;
        let mut holders = vec![stdout_holder];
        let (stderr, stderr_path) = if e.tty {
            (None, String::new())
        } else {
            let path = fifos.fifo("stderr")?;
            let (reader, holder) = open_output(&path)?;
            holders.push(holder);
            (Some(reader), path.to_string_lossy().into_owned())
        };
        let (stdin, stdin_path) = if e.stdin {
            let path = fifos.fifo("stdin")?;
            let sender = pipe::OpenOptions::new().read_write(true).open_sender(&path).map_err(open_err(&path))?;
            (Some(sender), path.to_string_lossy().into_owned())
        } else {
            (None, String::new())
        };
        let exec_id = format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut keepers = vec![open_keeper(&stdout_path)?];
        if !stderr_path.is_empty() {
            keepers.push(open_keeper(Path::new(&stderr_path))?);
        }
        let req = ExecProcessRequest {
            container_id: id.to_string(),
            stdin: stdin_path,
            stdout: stdout_path.to_string_lossy().into_owned(),
            stderr: stderr_path,
            terminal: e.tty,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.into(),
                value: serde_json::to_vec(&process).expect("serializing a JSON value"),
            }),
            exec_id: exec_id.clone(),
        };
        // The shim opens its ends of the output FIFOs inside Start, each open blocking until the
        // FIFO has a reader, while it holds its event lock: a FIFO that nobody reads any more
        // wedges the whole shim (no state, kill or delete answered). So the requests run in a
        // task of their own that keeps readers of its own until Start has returned, whatever
        // becomes of this future (a probe's timeout, a cancelled probe task, a closed
        // connection); then it waits for the exit, releases our placeholder writers and deletes
        // the process.
        let fifos = std::sync::Arc::new(fifos);
        let (exit_tx, exit) = watch::channel(None);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (rt, cid, xid, dir) = (self.clone(), id.to_string(), exec_id.clone(), fifos.clone());
        tokio::spawn(async move {
            let result = rt.start_exec(&cid, &xid, req).await;
            drop(keepers);
            drop(dir);
            let ok = result.is_ok();
            let _ = started_tx.send(result);
            if !ok {
                return;
            }
            let result = rt.wait_process(&cid, &xid).await;
            drop(holders);
            rt.delete_process(&cid, &xid).await;
            let _ = exit_tx.send(Some(result.map(|e| e.code).map_err(|e| e.to_string())));
        });
        started
            .await
            .map_err(|_| RuntimeError::io("starting exec", std::io::Error::other("the exec task stopped")))??;
        let control = ExecControl { rt: self.clone(), container_id: id.into(), exec_id, exit, _fifos: fifos };
        Ok(ExecSession { stdin, stdout, stderr, control })
    }

    /// Creates and starts the exec process; deletes it again when it does not start.
    async fn start_exec(&self, id: &str, exec_id: &str, req: ExecProcessRequest) -> Result<(), RuntimeError> {
        let mut tasks = TasksClient::new(self.channel());
        tasks.exec(self.req(req)).await.map_err(|s| match s.code() {
            tonic::Code::NotFound => RuntimeError::ContainerNotFound(id.to_string()),
            _ => RuntimeError::grpc("exec", s),
        })?;
        let start = StartRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        if let Err(s) = tasks.start(self.req(start)).await {
            self.delete_process(id, exec_id).await;
            return Err(RuntimeError::grpc("exec start", s));
        }
        Ok(())
    }

    async fn delete_process(&self, id: &str, exec_id: &str) {
        let req = DeleteProcessRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        if let Err(s) = TasksClient::new(self.channel()).delete_process(self.req(req)).await {
            if s.code() != tonic::Code::NotFound {
                tracing::warn!(id, exec_id, error = %s.message(), "could not delete exec process");
            }
        }
    }
}

impl ExecSession {
    /// See [`ExecControl::resize`].
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        self.control.resize(cols, rows).await
    }

    /// Drops `stdin` and tells the shim to close the process's stdin.
    pub async fn close_stdin(&mut self) -> Result<(), RuntimeError> {
        self.stdin = None;
        self.control.close_stdin().await
    }

    /// See [`ExecControl::wait`].
    pub async fn wait(&self) -> Result<i32, RuntimeError> {
        self.control.wait().await
    }
}

impl ExecControl {
    /// The exec's id within its container.
    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    /// Resizes the TTY (no effect without one).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        let req = ResizePtyRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            width: cols as u32,
            height: rows as u32,
        };
        TasksClient::new(self.rt.channel())
            .resize_pty(self.rt.req(req))
            .await
            .map_err(|s| RuntimeError::grpc("resize pty", s))?;
        Ok(())
    }

    /// Tells the shim to close the process's stdin (drop your `stdin` too).
    pub async fn close_stdin(&self) -> Result<(), RuntimeError> {
        let req =
            CloseIoRequest { container_id: self.container_id.clone(), exec_id: self.exec_id.clone(), stdin: true };
        match TasksClient::new(self.rt.channel()).close_io(self.rt.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(RuntimeError::grpc("close stdin", s)),
        }
    }

    /// Sends `signal` to the exec process (e.g. a probe that timed out). One that is gone
    /// already is not an error.
    pub async fn kill(&self, signal: i32) -> Result<(), RuntimeError> {
        let req = KillRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            signal: signal as u32,
            all: false,
        };
        match TasksClient::new(self.rt.channel()).kill(self.rt.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(RuntimeError::grpc("exec kill", s)),
        }
    }

    /// The exit code, once the process has exited.
    pub async fn wait(&self) -> Result<i32, RuntimeError> {
        let mut rx = self.exit.clone();
        let result = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::io("waiting for exec", std::io::Error::other("exit watcher stopped")))?
            .clone()
            .expect("checked by wait_for");
        result.map_err(|message| RuntimeError::Containerd { op: "exec wait", code: tonic::Code::Unknown, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_replaces_args_env_terminal() {
        let spec = serde_json::json!({"process": {"args": ["sleep"], "env": ["PATH=/bin", "A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0}}});
        let e = ExecRequest {
            args: vec!["sh".into()],
            env: vec!["A=2".into()],
            tty: true,
            stdin: true,
            cwd: Some("/tmp".into()),
        };
        let p = exec_process(&spec, &e);
        assert_eq!(p["args"], serde_json::json!(["sh"]));
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "A=2"]));
        assert_eq!(p["terminal"], true);
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["user"]["uid"], 0);
    }
}
