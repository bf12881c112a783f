//! A recording fake of [`Runtime`] for unit tests: images, containers and tasks in memory, a
//! log of every call, and exits the test controls.
//!
//! It mirrors what the agent relies on in containerd: `run` needs the image present (else
//! `ImageNotFound`) and replaces a stale container with the same ID; `kill` of a missing or
//! finished task is fine; SIGKILL ends a task (status 137), SIGTERM too (143) unless the test
//! said the container ignores it; `remove` kills a running task first and never fails for
//! something already gone; `wait` resolves when the task exits, at once when it has. Exec runs
//! nothing: it fails, so an exec probe against the fake always fails. A container the test
//! [wedged](FakeRuntime::wedge) answers `state`, `kill` and `remove` with an error and stays,
//! as one whose shim no longer answers. Time comes from the [`Clock`] the test passes, so
//! exits and calls carry timestamps on the test's clock.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use super::{
    normalize_image_name, ContainerRun, ContainerSummary, ExecRequest, ExecSession, Exit, ImageConfig, ImageInfo,
    PullProgress, Runtime, RuntimeError, TaskState,
};
use crate::clock::Clock;

/// One call to the fake, with the test clock's time when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub at: jiff::Timestamp,
    pub op: Op,
}

/// What was asked, with its arguments (container IDs, image names as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Version,
    ImportArchive(PathBuf),
    Pull(String),
    ListImages,
    RemoveImage(String),
    ImageConfig(String),
    Run(String),
    Wait(String),
    State(String),
    Kill(String, i32),
    Remove(String),
    ListContainers,
    Exec(String, Vec<String>),
}

#[derive(Debug, Clone)]
struct Container {
    labels: HashMap<String, String>,
    task: TaskState,
    ignores_sigterm: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Present images by normalized name.
    images: BTreeMap<String, ImageConfig>,
    /// What a pull can fetch, by normalized name.
    registry: BTreeMap<String, ImageConfig>,
    containers: BTreeMap<String, Container>,
    /// Containers that will ignore SIGTERM once they run.
    ignore_sigterm: std::collections::HashSet<String>,
    /// Containers whose shim does not answer (see [`FakeRuntime::wedge`]).
    wedged: std::collections::HashSet<String>,
    calls: Vec<Call>,
    next_pid: u32,
}

/// The fake runtime. Share it as `Arc<FakeRuntime>` and hand a clone to the code under test as
/// `Arc<dyn Runtime>`.
pub struct FakeRuntime {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    /// Bumped on every change of a task, to wake waiters.
    changed: watch::Sender<u64>,
}

/// The config the fake gives an image: `sleep 3600`, as a long-running container.
pub fn image_config(name: &str) -> ImageConfig {
    ImageConfig {
        entrypoint: Vec::new(),
        cmd: vec!["sleep".into(), "3600".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        working_dir: String::new(),
        user: String::new(),
        image_id: format!("sha256:fake-{}", name.replace([':', '/'], "-")),
    }
}

fn info(name: &str, config: &ImageConfig) -> ImageInfo {
    ImageInfo { name: name.to_string(), digest: config.image_id.clone(), size: 1024, created: None }
}

impl FakeRuntime {
    pub fn new(clock: Arc<dyn Clock>) -> FakeRuntime {
        let state = State { next_pid: 1000, ..State::default() };
        FakeRuntime { state: Mutex::new(state), clock, changed: watch::channel(0).0 }
    }

    /// Makes an image present on the node.
    pub fn add_image(&self, name: &str) {
        let name = normalize_image_name(name).expect("a valid image name");
        self.state.lock().unwrap().images.insert(name.clone(), image_config(&name));
    }

    /// Makes an image pullable (it becomes present when pulled).
    pub fn add_to_registry(&self, name: &str) {
        let name = normalize_image_name(name).expect("a valid image name");
        self.state.lock().unwrap().registry.insert(name.clone(), image_config(&name));
    }

    /// A container whose task already runs, as one left by an earlier `skerryd`.
    pub fn add_running(&self, id: &str, labels: HashMap<String, String>) {
        let mut st = self.state.lock().unwrap();
        st.next_pid += 1;
        let task = TaskState::Running { pid: st.next_pid };
        let ignores_sigterm = st.ignore_sigterm.contains(id);
        st.containers.insert(id.to_string(), Container { labels, task, ignores_sigterm });
    }

    /// The container (now or once it runs) ignores SIGTERM; only SIGKILL ends it.
    pub fn ignore_sigterm(&self, id: &str) {
        let mut st = self.state.lock().unwrap();
        st.ignore_sigterm.insert(id.to_string());
        if let Some(c) = st.containers.get_mut(id) {
            c.ignores_sigterm = true;
        }
    }

    /// From now on `state`, `kill` and `remove` of the container fail and change nothing, as
    /// when its shim no longer answers; [`FakeRuntime::unwedge`] ends that.
    pub fn wedge(&self, id: &str) {
        self.state.lock().unwrap().wedged.insert(id.to_string());
    }

    pub fn unwedge(&self, id: &str) {
        self.state.lock().unwrap().wedged.remove(id);
    }

    /// The error a wedged container answers with, if it is wedged.
    fn wedged(&self, id: &str, op: &'static str) -> Result<(), RuntimeError> {
        if !self.state.lock().unwrap().wedged.contains(id) {
            return Ok(());
        }
        Err(RuntimeError::Containerd {
            op,
            code: tonic::Code::Unavailable,
            message: format!("the shim of {id} does not answer"),
        })
    }

    /// Ends the container's running task with `code`, now.
    pub fn exit(&self, id: &str, code: i32) {
        let at = self.clock.now();
        let mut st = self.state.lock().unwrap();
        let c = st.containers.get_mut(id).expect("exit of an unknown container");
        assert!(matches!(c.task, TaskState::Running { .. }), "exit of a task that does not run: {:?}", c.task);
        let mut exit = Exit::from_status(code as u32, None);
        exit.exited_at = at;
        c.task = TaskState::Exited(exit);
        drop(st);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The task's state, without recording a call.
    pub fn task(&self, id: &str) -> Option<TaskState> {
        self.state.lock().unwrap().containers.get(id).map(|c| c.task.clone())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The calls that change something (run, kill, remove, pull, image removal and import),
    /// leaving out the reads a worker repeats on every pass.
    pub fn actions(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                matches!(
                    c.op,
                    Op::Run(_) | Op::Kill(..) | Op::Remove(_) | Op::Pull(_) | Op::RemoveImage(_) | Op::ImportArchive(_)
                )
            })
            .collect()
    }

    fn record(&self, op: Op) {
        let at = self.clock.now();
        self.state.lock().unwrap().calls.push(Call { at, op });
    }

    /// Ends a running task killed by `signal` (128 + signal, as containerd reports it).
    fn end(&self, id: &str, signal: i32) {
        let at = self.clock.now();
        let mut st = self.state.lock().unwrap();
        let Some(c) = st.containers.get_mut(id) else { return };
        if !matches!(c.task, TaskState::Running { .. }) || (signal == libc::SIGTERM && c.ignores_sigterm) {
            return;
        }
        let mut exit = Exit::from_status(128 + signal as u32, None);
        exit.exited_at = at;
        c.task = TaskState::Exited(exit);
        drop(st);
        self.changed.send_modify(|n| *n += 1);
    }
}

fn normalized(name: &str) -> Result<String, RuntimeError> {
    normalize_image_name(name)
}

impl Runtime for FakeRuntime {
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        self.record(Op::Version);
        Box::pin(async { Ok("fake".to_string()) })
    }

    fn import_archive<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Vec<ImageInfo>, RuntimeError>> {
        self.record(Op::ImportArchive(path.to_path_buf()));
        Box::pin(async { Ok(Vec::new()) })
    }

    fn pull<'a>(
        &'a self,
        reference: &'a str,
        _auth: Option<(String, String)>,
        _insecure_registries: &'a [String],
        _progress: UnboundedSender<PullProgress>,
    ) -> BoxFuture<'a, Result<ImageInfo, RuntimeError>> {
        self.record(Op::Pull(reference.to_string()));
        Box::pin(async move {
            let name = normalized(reference)?;
            let mut st = self.state.lock().unwrap();
            let Some(config) = st.registry.get(&name).cloned() else {
                return Err(RuntimeError::Pull {
                    reference: reference.to_string(),
                    reason: "not found in the fake registry".into(),
                });
            };
            st.images.insert(name.clone(), config.clone());
            Ok(info(&name, &config))
        })
    }

    fn list_images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, RuntimeError>> {
        self.record(Op::ListImages);
        let images = self.state.lock().unwrap().images.iter().map(|(n, c)| info(n, c)).collect();
        Box::pin(async move { Ok(images) })
    }

    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.record(Op::RemoveImage(name.to_string()));
        Box::pin(async move {
            let normal = normalized(name)?;
            match self.state.lock().unwrap().images.remove(&normal) {
                Some(_) => Ok(()),
                None => Err(RuntimeError::ImageNotFound(normal)),
            }
        })
    }

    fn image_config<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ImageConfig>, RuntimeError>> {
        self.record(Op::ImageConfig(name.to_string()));
        Box::pin(async move {
            let name = normalized(name)?;
            Ok(self.state.lock().unwrap().images.get(&name).cloned())
        })
    }

    fn run<'a>(&'a self, c: &'a ContainerRun) -> BoxFuture<'a, Result<u32, RuntimeError>> {
        self.record(Op::Run(c.id.clone()));
        Box::pin(async move {
            let image = normalized(&c.image)?;
            let mut st = self.state.lock().unwrap();
            if !st.images.contains_key(&image) {
                return Err(RuntimeError::ImageNotFound(image));
            }
            st.next_pid += 1;
            let pid = st.next_pid;
            let ignores_sigterm = st.ignore_sigterm.contains(&c.id);
            let container = Container { labels: c.labels.clone(), task: TaskState::Running { pid }, ignores_sigterm };
            st.containers.insert(c.id.clone(), container);
            drop(st);
            self.changed.send_modify(|n| *n += 1);
            Ok(pid)
        })
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Exit, RuntimeError>> {
        self.record(Op::Wait(id.to_string()));
        let mut changed = self.changed.subscribe();
        Box::pin(async move {
            loop {
                match self.task(id) {
                    None => return Err(RuntimeError::ContainerNotFound(id.to_string())),
                    Some(TaskState::Exited(exit)) => return Ok(exit),
                    Some(_) => {}
                }
                if changed.changed().await.is_err() {
                    return Err(RuntimeError::ContainerNotFound(id.to_string()));
                }
            }
        })
    }

    fn state<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskState>, RuntimeError>> {
        self.record(Op::State(id.to_string()));
        let task = self.wedged(id, "task state").map(|()| self.task(id));
        Box::pin(async move { task })
    }

    fn kill<'a>(&'a self, id: &'a str, signal: i32) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.record(Op::Kill(id.to_string(), signal));
        let wedged = self.wedged(id, "task kill");
        if wedged.is_ok() {
            self.end(id, signal);
        }
        Box::pin(async { wedged })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.record(Op::Remove(id.to_string()));
        if let Err(e) = self.wedged(id, "task delete") {
            return Box::pin(async { Err(e) });
        }
        self.end(id, libc::SIGKILL);
        self.state.lock().unwrap().containers.remove(id);
        self.changed.send_modify(|n| *n += 1);
        Box::pin(async { Ok(()) })
    }

    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<ContainerSummary>, RuntimeError>> {
        self.record(Op::ListContainers);
        let list = self
            .state
            .lock()
            .unwrap()
            .containers
            .iter()
            .map(|(id, c)| ContainerSummary { id: id.clone(), labels: c.labels.clone() })
            .collect();
        Box::pin(async move { Ok(list) })
    }

    fn exec<'a>(&'a self, id: &'a str, e: &'a ExecRequest) -> BoxFuture<'a, Result<ExecSession, RuntimeError>> {
        self.record(Op::Exec(id.to_string(), e.args.clone()));
        Box::pin(async {
            Err(RuntimeError::Containerd {
                op: "exec",
                code: tonic::Code::Unimplemented,
                message: "the fake runtime runs no processes".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::PausedClock;

    fn fake() -> FakeRuntime {
        FakeRuntime::new(Arc::new(PausedClock::starting_at(jiff::Timestamp::from_second(1_750_000_000).unwrap())))
    }

    fn run(id: &str, image: &str) -> ContainerRun {
        ContainerRun {
            id: id.into(),
            image: image.into(),
            spec: serde_json::json!({}),
            labels: HashMap::new(),
            log_path: PathBuf::from("/nonexistent/0.log"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runs_only_present_images_and_pulls_from_its_registry() {
        let rt = fake();
        let err = rt.run(&run("c1", "busybox")).await.unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotFound(ref n) if n == "docker.io/library/busybox:latest"));
        assert!(rt.pull("nginx", None, &[], tokio::sync::mpsc::unbounded_channel().0).await.is_err());
        rt.add_to_registry("busybox");
        rt.pull("busybox", None, &[], tokio::sync::mpsc::unbounded_channel().0).await.unwrap();
        assert!(rt.image_config("docker.io/library/busybox:latest").await.unwrap().is_some());
        let pid = rt.run(&run("c1", "busybox")).await.unwrap();
        assert_eq!(rt.state("c1").await.unwrap(), Some(TaskState::Running { pid }));
        assert_eq!(rt.actions().iter().filter(|c| c.op == Op::Run("c1".into())).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn signals_end_tasks_and_wake_waiters() {
        let rt = Arc::new(fake());
        rt.add_image("busybox");
        rt.run(&run("c1", "busybox")).await.unwrap();
        rt.ignore_sigterm("c1");
        let waiter = {
            let rt = rt.clone();
            tokio::spawn(async move { rt.wait("c1").await })
        };
        tokio::task::yield_now().await;
        rt.kill("c1", libc::SIGTERM).await.unwrap();
        assert!(matches!(rt.task("c1"), Some(TaskState::Running { .. })), "SIGTERM is ignored");
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        rt.kill("c1", libc::SIGKILL).await.unwrap();
        let exit = waiter.await.unwrap().unwrap();
        assert_eq!((exit.code, exit.signal), (137, Some(9)));
        assert_eq!(exit.exited_at, jiff::Timestamp::from_second(1_750_000_003).unwrap());
        rt.remove("c1").await.unwrap();
        assert_eq!(rt.state("c1").await.unwrap(), None);
        assert!(matches!(rt.wait("c1").await, Err(RuntimeError::ContainerNotFound(_))));
    }
}
