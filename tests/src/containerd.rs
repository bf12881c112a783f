//! A private containerd for one test: own root, state, sockets; torn down on drop.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const CONTAINERD: &str = "/usr/bin/containerd";

/// Guard owning a running containerd. Dropping it kills containerd and the
/// shims (and their containers) it started, unmounts everything below its
/// directory, removes its cgroup parent and deletes the directory.
///
/// Every method takes `&self`, so several test nodes can share one (`Arc<Containerd>`), each
/// with a containerd namespace of its own ([`Containerd::add_namespace`]).
pub struct Containerd {
    child: Mutex<Option<Child>>,
    dir: PathBuf,
    socket: PathBuf,
    cgroup_parent: String,
    /// More containerd namespaces whose runc state dir goes on drop (e.g. a benchmark's own).
    extra_namespaces: Mutex<Vec<String>>,
}

/// Panics with a clear message unless we are root and containerd and runc exist.
pub fn require_prerequisites() {
    assert!(unsafe { libc::geteuid() } == 0, "these tests must run as root (they start containerd and runc)");
    assert!(Path::new(CONTAINERD).exists(), "{CONTAINERD} is missing; install it with `apt-get install -y containerd`");
    assert!(
        ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"]
            .iter()
            .any(|p| Path::new(p).exists()),
        "runc is missing; install it with `apt-get install -y runc`"
    );
}

impl Containerd {
    /// Starts containerd under a fresh `/tmp/sk-ctrd-*` directory and waits
    /// until its gRPC socket accepts connections.
    pub fn start() -> Containerd {
        require_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("sk-ctrd-")
            .tempdir_in("/tmp")
            .expect("creating containerd temp dir")
            .keep();
        let socket = dir.join("c.sock");
        let config = dir.join("config.toml");
        fs::write(&config, config_toml(&dir)).expect("writing containerd config");
        let child = spawn_containerd(&dir, &config);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let guard = Containerd {
            child: Mutex::new(Some(child)),
            dir,
            socket,
            cgroup_parent: format!("/{name}"),
            extra_namespaces: Mutex::new(Vec::new()),
        };
        guard.wait_ready();
        guard
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops containerd (SIGTERM, waiting for it; after [`Containerd::kill9`] there is nothing
    /// to stop) and starts a new one with the same root, state and socket; shims and containers
    /// keep running.
    pub fn restart(&self) {
        self.stop(Duration::from_secs(20));
        *self.child() = Some(spawn_containerd(&self.dir, &self.dir.join("config.toml")));
        self.wait_ready();
    }

    /// SIGTERM, SIGKILL after `grace`; waits for containerd to exit.
    fn stop(&self, grace: Duration) {
        if let Some(mut child) = self.child().take() {
            kill(child.id() as i32, if grace.is_zero() { libc::SIGKILL } else { libc::SIGTERM });
            if !wait_until_quiet(Instant::now() + grace, || matches!(child.try_wait(), Ok(Some(_)))) {
                kill(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }

    /// A power loss: SIGKILL to containerd, its shims and their containers, then what a reboot
    /// clears goes (task mounts, containerd's state dir, runc state, cgroups). Root (images,
    /// snapshots, metadata) stays; [`Containerd::restart`] starts it again.
    pub fn kill9(&self) {
        self.stop(Duration::ZERO);
        self.reap();
        let _ = fs::remove_dir_all(self.dir.join("state"));
    }

    /// The shims of containerd namespace `ns` and their containers get SIGKILL (a power loss
    /// of one node sharing this containerd); containerd itself keeps running.
    pub fn kill9_namespace(&self, ns: &str) {
        let shims = self.shim_pids(Some(ns));
        kill_trees(&shims);
        let _ = wait_until_quiet(Instant::now() + Duration::from_secs(5), || self.shim_pids(Some(ns)).is_empty());
    }

    /// containerd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let exited = self.child().as_mut().unwrap().try_wait().expect("polling containerd");
            if let Some(status) = exited {
                panic!("containerd exited early ({status}); log:\n{}", self.log());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not answer on {} within 30s; log:\n{}", self.socket.display(), self.log());
    }

    /// The gRPC socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory holding root, state, sockets and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A containerd namespace unique to this guard (`sk-…`). runc keeps its
    /// state in /run/containerd/runc/<namespace>, shared by every containerd
    /// on the host, so parallel tests must not share a namespace.
    pub fn namespace(&self) -> String {
        self.cgroup_parent.trim_start_matches('/').to_lowercase()
    }

    /// A cgroup parent path unique to this guard (e.g. `/sk-ctrd-abc`); it is
    /// removed from every hierarchy on drop.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// runc's state directory for containerd namespace `ns` (`/run/containerd/runc/<ns>`): one
    /// directory per container runc knows, with `exec.fifo` while it is created and not started.
    pub fn runc_state_dir(ns: &str) -> PathBuf {
        Path::new("/run/containerd/runc").join(ns)
    }

    /// Another containerd namespace used with this containerd; its runc state under
    /// /run/containerd/runc goes on drop too. Its containers' cgroups must be below
    /// [`Containerd::cgroup_parent`].
    pub fn add_namespace(&self, ns: &str) {
        self.extra_namespaces.lock().unwrap_or_else(|e| e.into_inner()).push(ns.to_string());
    }

    /// containerd's combined output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// PIDs of the `containerd-shim-runc-v2` processes this containerd started (their command
    /// line names its socket), only those of containerd namespace `ns` if given; never another
    /// containerd's.
    pub fn shim_pids(&self, ns: Option<&str>) -> Vec<i32> {
        let needle = self.socket.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|(_, _, cmd)| {
                cmd.iter().any(|a| a.contains("containerd-shim"))
                    && cmd.iter().any(|a| a.contains(&needle))
                    && ns.is_none_or(|ns| cmd.windows(2).any(|w| w[0] == "-namespace" && w[1] == ns))
            })
            .map(|(pid, _, _)| pid)
            .collect()
    }

    /// After containerd has gone: kills the shims and their containers, removes the shims'
    /// sockets, unmounts everything below the directory, removes the cgroups and runc state.
    fn reap(&self) {
        // Containers whose spec has no cgroupsPath get `/<id>` in every hierarchy; runc never
        // deletes the ones killed below, so remember them.
        let tasks = task_ids(&self.dir);
        let shims = self.shim_pids(None);
        let shim_sockets: Vec<PathBuf> = shims.iter().flat_map(|p| socket_paths(*p)).collect();
        kill_trees(&shims);
        let _ = wait_until_quiet(Instant::now() + Duration::from_secs(5), || self.shim_pids(None).is_empty());
        for socket in shim_sockets {
            let _ = fs::remove_file(socket);
        }
        crate::skerryd::unmount_below(&self.dir);
        remove_cgroup(&self.cgroup_parent);
        for id in tasks {
            remove_cgroup(&format!("/{id}"));
        }
        let _ = fs::remove_dir_all(Path::new("/run/containerd/runc").join(self.namespace()));
        for ns in self.extra_namespaces.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = fs::remove_dir_all(Path::new("/run/containerd/runc").join(ns));
        }
    }
}

/// Starts containerd with `config`, appending its output to `dir/containerd.log`.
fn spawn_containerd(dir: &Path, config: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .expect("opening containerd log");
    Command::new(CONTAINERD)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning containerd")
}

/// (pid, ppid, argv) of every process.
pub fn processes() -> Vec<(i32, i32, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let ppid = after.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv =
            cmd.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        out.push((pid, ppid, argv));
    }
    out
}

/// Paths of the listening sockets a process holds (the shim's socket lives in
/// /run/containerd/s and is left behind when the shim is killed).
fn socket_paths(pid: i32) -> Vec<PathBuf> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    l.to_string_lossy().strip_prefix("socket:[").map(|s| s.trim_end_matches(']').to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 8 && inodes.iter().any(|i| i == cols[6])).then(|| PathBuf::from(cols[7]))
        })
        .filter(|p| p.starts_with("/run/containerd/s"))
        .collect()
}

fn descendants(root: i32) -> Vec<i32> {
    let procs = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|(_, pp, _)| *pp == parent).map(|(p, _, _)| *p));
        i += 1;
    }
    found
}

/// SIGKILL to each process of `roots` and all its descendants, deepest first (containers
/// before their shim, so nothing is reparented to init and left running).
fn kill_trees(roots: &[i32]) {
    for root in roots {
        for pid in descendants(*root).into_iter().rev() {
            kill(pid, libc::SIGKILL);
        }
    }
}

fn kill(pid: i32, sig: i32) {
    unsafe {
        libc::kill(pid, sig);
    }
}

fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/ttrpc.sock"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    )
}

/// Removes a cgroup tree from every hierarchy, retrying for up to 3 s: killed processes
/// leave their cgroup a moment after they die.
fn remove_cgroup(parent: &str) {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let present = || -> bool {
        let mut dirs: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path().join(rel)).collect())
            .unwrap_or_default();
        dirs.push(Path::new("/sys/fs/cgroup").join(rel));
        dirs.iter().any(|d| d.is_dir())
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        skerryd::agent::cgroups::remove_tree(parent);
        if !present() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("warning: could not remove cgroup {parent} from every hierarchy");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// IDs of the containers with a task directory in this containerd's state (all namespaces).
fn task_ids(dir: &Path) -> Vec<String> {
    let tasks = dir.join("state/io.containerd.runtime.v2.task");
    let mut ids = Vec::new();
    for ns in fs::read_dir(tasks).into_iter().flatten().flatten() {
        for c in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            ids.push(c.file_name().to_string_lossy().into_owned());
        }
    }
    ids
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        self.reap();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

fn wait_until_quiet(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
