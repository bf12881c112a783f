//! End-to-end tests of `skerryd::runtime` against a private containerd.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skerry_tests::containerd::Containerd;
use skerry_tests::images::ImageBuilder;
use skerry_tests::registry::Registry;
use skerry_tests::wait_until;
use skerryd::runtime::{
    build_spec, logger, merge_command, merge_env, ContainerRun, ContainerdRuntime, ExecControl, ExecRequest,
    ExecSession, RuntimeError, SpecInput, TaskState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUSYBOX: &str = "docker.io/library/busybox:latest";

struct Env {
    rt: ContainerdRuntime,
    dir: tempfile::TempDir,
    ctrd: Containerd,
}

async fn setup() -> Env {
    let ctrd = Containerd::start();
    let rt = ContainerdRuntime::connect(ctrd.socket(), &ctrd.namespace())
        .await
        .expect("connecting to the test containerd")
        .with_logger(PathBuf::from(env!("CARGO_BIN_EXE_skerry-test-logger")));
    let dir = tempfile::Builder::new().prefix("sk-rt-").tempdir_in("/tmp").unwrap();
    Env { rt, dir, ctrd }
}

impl Env {
    async fn import_busybox(&self) {
        let archive = self.dir.path().join("busybox.tar");
        ImageBuilder::new(BUSYBOX).write_oci(&archive, false).unwrap();
        self.rt.import_archive(&archive).await.expect("importing busybox");
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{id}.log"))
    }

    fn run_spec(&self, id: &str, image: &str, args: &[&str]) -> ContainerRun {
        let input = SpecInput {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            hostname: id.into(),
            cgroups_path: format!("{}/{id}", self.ctrd.cgroup_parent()),
            ..Default::default()
        };
        ContainerRun {
            id: id.into(),
            image: image.into(),
            spec: build_spec(&input),
            labels: HashMap::from([("skerry.io/test".to_string(), id.to_string())]),
            log_path: self.log_path(id),
        }
    }

    async fn run(&self, id: &str, args: &[&str]) -> u32 {
        self.rt
            .run(&self.run_spec(id, BUSYBOX, args))
            .await
            .unwrap_or_else(|e| panic!("running {id}: {e}\n{}", self.ctrd.log()))
    }
}

fn wait_for_log(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let content = || std::fs::read_to_string(path).unwrap_or_default();
    let what_desc = format!("{} contains {what:?}", path.display());
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(deadline, &what_desc, || content().contains(what))
    }));
    assert!(found.is_ok(), "{what_desc} timed out; the log holds:\n{}", content());
    std::fs::read_to_string(path).unwrap()
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut s = String::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_string(&mut s)).await.expect("output did not end").unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_oci_gzip_and_docker_archives() {
    let env = setup().await;
    assert!(env.rt.version().await.unwrap().starts_with("1."));
    let plain = env.dir.path().join("plain.tar");
    let gz = env.dir.path().join("gz.tar.gz");
    let docker = env.dir.path().join("docker.tar");
    ImageBuilder::new("busybox").write_oci(&plain, false).unwrap();
    ImageBuilder::new("user/web:v1").file("/www/index.html", b"hello").write_oci(&gz, true).unwrap();
    ImageBuilder::new("127.0.0.1:5000/tools:t").cmd(["echo", "hi"]).write_docker_archive(&docker, false).unwrap();

    let a = env.rt.import_archive(&plain).await.unwrap();
    assert_eq!(a[0].name, "docker.io/library/busybox:latest");
    assert!(a[0].size > 1_000_000, "size {}", a[0].size);
    assert!(a[0].created.is_some());
    let b = env.rt.import_archive(&gz).await.unwrap();
    assert_eq!(b[0].name, "docker.io/user/web:v1");
    let c = env.rt.import_archive(&docker).await.unwrap();
    assert_eq!(c[0].name, "127.0.0.1:5000/tools:t");
    // Importing again is fine.
    env.rt.import_archive(&plain).await.unwrap();

    let names: Vec<String> = env.rt.list_images().await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["127.0.0.1:5000/tools:t", "docker.io/library/busybox:latest", "docker.io/user/web:v1"]);

    let cfg = env.rt.image_config("127.0.0.1:5000/tools:t").await.unwrap().unwrap();
    assert_eq!(cfg.cmd, vec!["echo", "hi"]);
    assert!(cfg.env.iter().any(|e| e.starts_with("PATH=")));
    assert!(cfg.image_id.starts_with("sha256:"));

    // Images from every format run.
    env.rt.run(&env.run_spec("web", "user/web:v1", &["cat", "/www/index.html"])).await.unwrap();
    assert_eq!(env.rt.wait("web").await.unwrap().code, 0);
    wait_for_log(&env.log_path("web"), "stdout P hello");
    env.rt.remove("web").await.unwrap();

    env.rt.remove_image("user/web:v1").await.unwrap();
    assert!(matches!(env.rt.remove_image("user/web:v1").await, Err(RuntimeError::ImageNotFound(_))));
    assert_eq!(env.rt.image_config("user/web:v1").await.unwrap(), None);
    let err = env.rt.run(&env.run_spec("x", "nothere:1", &["true"])).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("skerry image import"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_collected_after_remove_image() {
    let env = setup().await;
    env.import_busybox().await;
    env.rt.remove_image(BUSYBOX).await.unwrap();
    let blobs = env.ctrd.dir().join("root/io.containerd.content.v1.content/blobs/sha256");
    let left = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "content left behind in {}", blobs.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_exit_code_and_logs() {
    let env = setup().await;
    env.import_busybox().await;
    let pid = env.run("echo", &["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]).await;
    assert!(pid > 0);
    let exit = env.rt.wait("echo").await.unwrap();
    assert_eq!(exit.code, 3);
    assert_eq!(exit.signal, None);
    // wait on an exited task returns at once
    assert_eq!(env.rt.wait("echo").await.unwrap().code, 3);
    assert!(matches!(env.rt.state("echo").await.unwrap(), Some(TaskState::Exited(e)) if e.code == 3));
    let log = wait_for_log(&env.log_path("echo"), "stderr F to-err");
    assert!(log.contains(" stdout F to-out\n"), "{log}");
    for line in log.lines() {
        let rec = logger::parse_record(line).expect("CRI record");
        assert!(rec.time.parse::<jiff::Timestamp>().is_ok(), "{line}");
    }
    let text = logger::read_log(&env.log_path("echo"), None, false).unwrap();
    assert!(text.contains("to-out\n") && text.contains("to-err\n"), "{text}");

    let listed = env.rt.list_containers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels["skerry.io/test"], "echo");
    env.rt.remove("echo").await.unwrap();
    env.rt.remove("echo").await.unwrap();
    assert_eq!(env.rt.state("echo").await.unwrap(), None);
    assert!(env.rt.list_containers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_tasks_and_remove_is_idempotent() {
    let env = setup().await;
    env.import_busybox().await;
    env.run("term", &["sh", "-c", "trap 'exit 143' TERM; while true; do sleep 0.1; done"]).await;
    env.run("sleeper", &["sleep", "1000"]).await;
    assert!(matches!(env.rt.state("sleeper").await.unwrap(), Some(TaskState::Running { pid }) if pid > 0));

    env.rt.kill("term", libc::SIGTERM).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), env.rt.wait("term"))
        .await
        .expect("SIGTERM was not honoured")
        .unwrap();
    assert_eq!(exit.code, 143);

    env.rt.kill("sleeper", libc::SIGKILL).await.unwrap();
    let exit = env.rt.wait("sleeper").await.unwrap();
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    env.rt.kill("sleeper", libc::SIGKILL).await.unwrap(); // already dead: fine
    env.rt.kill("nope", libc::SIGKILL).await.unwrap(); // no such container: fine

    // run replaces a stale container with the same id
    env.run("sleeper", &["sleep", "1000"]).await;
    // remove kills a running task
    env.rt.remove("sleeper").await.unwrap();
    env.rt.remove("sleeper").await.unwrap();
    env.rt.remove("term").await.unwrap();
    env.rt.remove("never-existed").await.unwrap();
    assert!(env.rt.list_containers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_pipes_and_tty() {
    let env = setup().await;
    env.import_busybox().await;
    env.run("box", &["sleep", "1000"]).await;

    let req = |args: &[&str]| ExecRequest { args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let s = env.rt.exec("box", &req(&["echo", "hi"])).await.unwrap();
    let ExecSession { stdout: out, stderr: err, control, .. } = s;
    assert_eq!(read_all(out).await, "hi\n");
    assert_eq!(read_all(err.unwrap()).await, "");
    assert_eq!(exit_code(&control).await, 0);

    let s = env.rt.exec("box", &req(&["sh", "-c", "echo oops >&2; exit 7"])).await.unwrap();
    let ExecSession { stdout: out, stderr: err, control, .. } = s;
    assert_eq!(read_all(err.unwrap()).await, "oops\n");
    assert_eq!(read_all(out).await, "");
    assert_eq!(exit_code(&control).await, 7);

    let mut s = env.rt.exec("box", &ExecRequest { stdin: true, ..req(&["cat"]) }).await.unwrap();
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"typed\n").await.unwrap();
    drop(stdin);
    s.close_stdin().await.unwrap();
    let ExecSession { stdout: out, control, .. } = s;
    assert_eq!(read_all(out).await, "typed\n");
    assert_eq!(exit_code(&control).await, 0);

    let s = env.rt.exec("box", &ExecRequest { tty: true, ..req(&["tty"]) }).await.unwrap();
    assert!(s.stderr.is_none());
    let ExecSession { stdout: out, control, .. } = s;
    let text = read_all(out).await;
    assert!(text.trim().starts_with("/dev/pts/"), "tty printed {text:?}");
    assert_eq!(exit_code(&control).await, 0);

    let s = env.rt.exec("box", &ExecRequest { tty: true, stdin: true, ..req(&["sh"]) }).await.unwrap();
    s.resize(100, 40).await.unwrap();
    let ExecSession { stdout: out, control, stdin, .. } = s;
    let mut stdin = stdin.unwrap();
    stdin.write_all(b"stty size; exit 5\n").await.unwrap();
    let text = read_all(out).await;
    assert!(text.contains("exit 5"), "tty echo missing: {text:?}");
    assert!(text.contains("40 100"), "resize not seen by stty: {text:?}");
    assert_eq!(exit_code(&control).await, 5);

    let missing = env.rt.exec("nope", &req(&["true"])).await.err().expect("exec into a missing container");
    assert!(missing.is_not_found(), "{missing}");
    env.rt.remove("box").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_exec_never_wedges_the_shim() {
    let env = setup().await;
    env.import_busybox().await;
    env.run("box", &["sleep", "1000"]).await;
    let fifos = env.dir.path().join("exec");
    let rt = env.rt.clone().with_fifo_dir(fifos.clone());
    // Callers that give up at every point of an exec's start: a probe's timeout, a cancelled
    // probe task. The shim opens the exec's FIFOs inside Start and blocks until each has a
    // reader, holding its event lock; had the caller taken the only reader away, the shim
    // would answer nothing again (FIELD-NOTES).
    let req = ExecRequest { args: vec!["true".into()], ..Default::default() };
    for ms in (0..=160).step_by(4) {
        let _ = tokio::time::timeout(Duration::from_millis(ms), rt.exec("box", &req)).await;
    }
    let state =
        tokio::time::timeout(Duration::from_secs(10), rt.state("box")).await.expect("the shim still answers").unwrap();
    assert!(matches!(state, Some(TaskState::Running { .. })), "{state:?}");
    let s =
        rt.exec("box", &ExecRequest { args: vec!["echo".into(), "still".into()], ..Default::default() }).await.unwrap();
    let ExecSession { stdout, control, .. } = s;
    assert_eq!(read_all(stdout).await, "still\n");
    assert_eq!(exit_code(&control).await, 0);
    drop(control);
    tokio::time::timeout(Duration::from_secs(20), rt.remove("box")).await.expect("remove answers").unwrap();
    wait_until(Instant::now() + Duration::from_secs(10), "every exec FIFO is gone", || {
        skerry_tests::skerryd::fifos_below(&fifos).is_empty()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_a_killed_process_left_are_released_then_removed() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("skerry-exec-left");
    std::fs::create_dir(&stale).unwrap();
    for f in ["stdout", "stderr"] {
        let path = std::ffi::CString::new(stale.join(f).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    }
    // A shim as a killed caller left it: holding the FIFOs by handle (so unlinking them does not
    // free it) and opening them for writing one after the other, each open blocking for a reader.
    let handles: Vec<std::fs::File> = ["stdout", "stderr"]
        .iter()
        .map(|f| std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(stale.join(f)).unwrap())
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        for h in &handles {
            let path = format!("/proc/self/fd/{}", h.as_raw_fd());
            let _writer = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            tx.send(()).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "the writer waits for a reader");
    skerryd::runtime::clear_fifo_dir(dir.path()).await;
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5)).expect("each blocked open was released");
    }
    assert!(!stale.exists(), "the directory is gone");
}

/// Waits for an exec with a deadline.
async fn exit_code(control: &ExecControl) -> i32 {
    tokio::time::timeout(Duration::from_secs(20), control.wait()).await.expect("exec did not exit").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_config_merges_into_a_runnable_command() {
    let env = setup().await;
    let archive = env.dir.path().join("app.tar");
    ImageBuilder::new("app:1")
        .entrypoint(["sh", "-c"])
        .cmd(["echo from-image $GREETING"])
        .env("GREETING=image")
        .write_oci(&archive, false)
        .unwrap();
    env.rt.import_archive(&archive).await.unwrap();
    let cfg = env.rt.image_config("app:1").await.unwrap().expect("image present");
    let args = merge_command(&cfg, &[], &["echo from-args $GREETING".to_string()]).unwrap();
    let env_vars = merge_env(&cfg.env, &["GREETING=container".to_string()]);
    let mut run = env.run_spec("app", "app:1", &[]);
    run.spec = build_spec(&SpecInput { args, env: env_vars, ..Default::default() });
    env.rt.run(&run).await.unwrap();
    assert_eq!(env.rt.wait("app").await.unwrap().code, 0);
    wait_for_log(&env.log_path("app"), "stdout F from-args container");
    env.rt.remove("app").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_from_a_local_registry() {
    let env = setup().await;
    let registry = Registry::start();
    let archive = env.dir.path().join("pushme.tar");
    ImageBuilder::new("pushme:1").cmd(["echo", "pulled"]).write_oci(&archive, false).unwrap();
    let reference = registry.push_oci_archive(&archive, "team/pushme:1");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let insecure = vec![registry.addr().to_string()];
    let info = env.rt.pull(&reference, None, &insecure, tx).await.unwrap_or_else(|e| panic!("{e}\n{}", registry.log()));
    assert_eq!(info.name, reference);
    let mut events = Vec::new();
    while let Ok(p) = rx.try_recv() {
        events.push(p);
    }
    assert!(events.iter().any(|p| p.status == "done" && p.current == p.total && p.total > 0), "{events:?}");

    let cfg = env.rt.image_config(&reference).await.unwrap().unwrap();
    assert_eq!(cfg.cmd, vec!["echo", "pulled"]);
    env.rt.run(&env.run_spec("pulled", &reference, &["echo", "pulled"])).await.unwrap();
    assert_eq!(env.rt.wait("pulled").await.unwrap().code, 0);
    wait_for_log(&env.log_path("pulled"), "stdout F pulled");
    env.rt.remove("pulled").await.unwrap();

    // Pulling again finds the layers present.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    env.rt.pull(&reference, None, &insecure, tx).await.unwrap();
    assert!(std::iter::from_fn(|| rx.try_recv().ok()).any(|p| p.status == "exists"));

    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let missing = format!("{}/team/pushme:nope", registry.addr());
    match env.rt.pull(&missing, None, &insecure, tx).await {
        Err(RuntimeError::Pull { reference, reason }) => {
            assert_eq!(reference, missing);
            assert!(reason.to_lowercase().contains("manifest unknown"), "reason: {reason}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }

    // Without marking it insecure the client speaks TLS to a plain-HTTP registry and fails.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    assert!(matches!(env.rt.pull(&reference, None, &[], tx).await, Err(RuntimeError::Pull { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_leaves_nothing_behind() {
    let env = setup().await;
    env.import_busybox().await;
    let pid = env.run("left-running", &["sleep", "1000"]).await;
    let dir = env.ctrd.dir().to_path_buf();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(env);
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_until(deadline, "the container process is gone", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*dir.to_string_lossy()), "mounts left below {}", dir.display());
    assert!(!dir.exists(), "{} was not removed", dir.display());
}
