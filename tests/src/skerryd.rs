//! A real `skerryd` for one test, talking to a private containerd, and the `skerry` CLI pointed at it.
//!
//! Each skerryd runs inside its own network namespace ([`NodeNet`]: `sk-n<6 hex>`, veth to the
//! root namespace, node address `10.250.X.Y`) entered by a `pre_exec` `setns`; containerd stays
//! in the root namespace. Each has its own CNI config dir (`skerry-cni` or the reference
//! plugins, [`CniPlugins`]) and IPAM data dir in its temp dir, so nothing touches the host's
//! `/etc/cni/net.d`, `/var/lib/cni` or root namespace. [`Options::bin_dir`] picks the binaries
//! (the benchmark uses `target/release`).
//!
//! [`TestNode`] owns both guards in the one order that cleans up correctly:
//! skerryd stops first (so it does not react to its containers dying), then
//! containerd takes the shims and containers with it.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::containerd::Containerd;
use crate::http;
pub use crate::netns::NodeNet;

/// The node name every test daemon registers.
pub const NODE_NAME: &str = "sk-node";

/// How long one CLI invocation may take before the test fails.
const CLI_TIMEOUT: Duration = Duration::from_secs(90);

/// `target/debug` (or the profile dir) holding the workspace's binaries: the
/// test executable lives in its `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test executable");
    exe.parent().and_then(Path::parent).expect("test executable has no target dir").to_path_buf()
}

/// Path of a workspace binary; panics when it was not built.
pub fn binary(name: &str) -> PathBuf {
    binary_in(&bin_dir(), name)
}

/// Path of a binary in `dir`; panics when it is not there.
pub fn binary_in(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let build = if dir.ends_with("release") { "cargo build --release --workspace" } else { "cargo build --workspace" };
    assert!(p.is_file(), "{} is missing; run `{build}` first", p.display());
    p
}

/// Where Debian's reference CNI plugins live (`containernetworking-plugins`).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// What a CLI run produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout ---\n{}--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with `stdin`, killing it (by PID) if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            break s;
        }
        if Instant::now() >= deadline {
            kill(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
            let so = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
            let se = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
            panic!("{cmd:?} did not finish within {timeout:?}\n--- stdout ---\n{so}--- stderr ---\n{se}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        stdout: String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned(),
        code: status.code().unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)),
    }
}

fn kill(pid: i32, sig: i32) {
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Which CNI plugins a test node's network configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CniPlugins {
    /// `skerry-cni` (built next to skerryd), CNI 1.1.0 so GC runs at start.
    #[default]
    SkerryCni,
    /// Debian's reference plugins: `bridge` + `host-local` from /usr/lib/cni.
    Reference,
}

/// The pod network every test node uses (one per namespace, so nodes may share it).
pub const POD_CIDR: &str = "10.42.0.0/24";

/// A conflist for `plugins` keeping IPAM allocations in `ipam_dir`.
pub fn conflist(plugins: CniPlugins, ipam_dir: &Path) -> Value {
    match plugins {
        CniPlugins::SkerryCni => {
            // The daemon's own default list, at CNI 1.1 (so GC runs) with a private IPAM dir.
            let mut list = skerryd::net::cni::default_conflist(POD_CIDR);
            list["cniVersion"] = serde_json::json!("1.1.0");
            list["plugins"][0]["ipam"]["dataDir"] = serde_json::json!(ipam_dir);
            list
        }
        CniPlugins::Reference => serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "skerry-ref",
            "plugins": [{
                "type": "bridge",
                "bridge": "skerry0",
                "mtu": 1500,
                "hairpinMode": true,
                "isGateway": true,
                "isDefaultGateway": true,
                "ipam": {"type": "host-local", "subnet": POD_CIDR, "dataDir": ipam_dir}
            }]
        }),
    }
}

/// How to start a [`Skerryd`]; `Default` is the debug binaries, skerry-cni, a fresh namespace.
#[derive(Default)]
pub struct Options {
    /// Directory holding skerryd, skerry, skerry-logger and skerry-cni (default: [`bin_dir`]).
    pub bin_dir: Option<PathBuf>,
    /// Extra flags for skerryd.
    pub args: Vec<String>,
    /// Extra environment for skerryd.
    pub env: Vec<(String, String)>,
    /// The network namespace to run in (default: a new one).
    pub net: Option<NodeNet>,
    pub cni: CniPlugins,
    /// Put the data dir on a tmpfs of this many bytes (a small disk that can fill up).
    pub data_tmpfs: Option<u64>,
    /// `--node-name` (default [`NODE_NAME`]).
    pub node_name: Option<String>,
    /// Use only a part of a containerd shared with other nodes (default: the containerd's own
    /// namespace and cgroup parent, i.e. the node has it to itself).
    pub share: Option<CtdShare>,
    /// A prepared data dir (e.g. one written by an earlier release): its files are copied into
    /// the node's data dir before skerryd first starts.
    pub data_from: Option<PathBuf>,
}

/// One node's part of a shared [`Containerd`]: its own containerd namespace (runc keeps state
/// per namespace name, so it must differ from every other node's) and a cgroup parent below the
/// containerd's, so the containerd guard removes it.
#[derive(Debug, Clone)]
pub struct CtdShare {
    pub namespace: String,
    pub cgroup_parent: String,
}

impl Options {
    pub fn with_args(extra: &[&str]) -> Options {
        Options { args: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }
}

/// Guard owning a running `skerryd` in its own network namespace ([`NodeNet`]). Dropping it
/// stops the daemon (SIGTERM, then SIGKILL, by PID), unmounts the pod namespace files under its
/// data dir, deletes its temp dir and then the namespace and veth pair. Drop it before the
/// [`Containerd`] it uses.
pub struct Skerryd {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    bins: PathBuf,
    cni: CniPlugins,
    node_name: String,
    /// The containerd namespace and cgroup parent it uses.
    share: CtdShare,
    /// Declared last: dropped after `drop()` stopped the daemon.
    net: NodeNet,
}

impl Skerryd {
    /// Starts skerryd against `ctd` and waits until its API answers.
    pub fn start(ctd: &Containerd) -> Skerryd {
        Self::start_with(ctd, &[])
    }

    /// Like [`Skerryd::start`] with extra flags (e.g. `--insecure-registry 127.0.0.1:PORT`).
    pub fn start_with(ctd: &Containerd, extra: &[&str]) -> Skerryd {
        Self::start_opts(ctd, Options::with_args(extra))
    }

    /// Starts skerryd as `opts` says, inside its network namespace, and waits until its API answers.
    pub fn start_opts(ctd: &Containerd, opts: Options) -> Skerryd {
        let bins = opts.bin_dir.unwrap_or_else(bin_dir);
        for b in ["skerryd", "skerry", "skerry-logger", "skerry-cni"] {
            binary_in(&bins, b);
        }
        if opts.cni == CniPlugins::Reference {
            for p in ["bridge", "host-local"] {
                let path = Path::new(REFERENCE_PLUGINS).join(p);
                assert!(
                    path.is_file(),
                    "{} is missing; install it with `apt-get install -y containernetworking-plugins`",
                    path.display()
                );
            }
        }
        assert!(
            Path::new("/usr/sbin/nft").exists(),
            "/usr/sbin/nft is missing; install it with `apt-get install -y nftables`"
        );
        // The namespace first: if anything below panics, dropping it removes it again.
        let net = opts.net.unwrap_or_else(NodeNet::create);
        let dir = tempfile::Builder::new()
            .prefix("sk-skerryd-")
            .tempdir_in("/tmp")
            .expect("creating skerryd temp dir")
            .keep();
        // An empty config file, so a host's /etc/skerry/config.yaml cannot leak in.
        fs::write(dir.join("config.yaml"), "").expect("writing skerryd config");
        // The node's own CNI config and IPAM store: GC on one node never touches another's.
        fs::create_dir_all(dir.join("cni")).expect("creating the CNI config dir");
        fs::create_dir_all(dir.join("ipam")).expect("creating the IPAM dir");
        // The daemon's TMPDIR (exec FIFOs): inside its own dir, so nothing lands in /tmp.
        fs::create_dir_all(dir.join("tmp")).expect("creating the daemon's TMPDIR");
        fs::write(
            dir.join("cni/10-test.conflist"),
            serde_json::to_vec_pretty(&conflist(opts.cni, &dir.join("ipam"))).unwrap(),
        )
        .expect("writing the CNI config");
        if let Some(size) = opts.data_tmpfs {
            let data = dir.join("data");
            fs::create_dir_all(&data).expect("creating the data dir");
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "sk-data", &data.display().to_string()])
                .status()
                .expect("running mount");
            assert!(status.success(), "mounting a tmpfs on {}", data.display());
        }
        if let Some(from) = &opts.data_from {
            copy_tree(from, &dir.join("data"));
        }
        let node_name = opts.node_name.unwrap_or_else(|| NODE_NAME.into());
        let share = opts
            .share
            .unwrap_or_else(|| CtdShare { namespace: ctd.namespace(), cgroup_parent: ctd.cgroup_parent().into() });
        let mut args: Vec<String> = vec![
            "--config".into(),
            dir.join("config.yaml").display().to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--socket".into(),
            dir.join("skerry.sock").display().to_string(),
            "--containerd-socket".into(),
            ctd.socket().display().to_string(),
            "--containerd-namespace".into(),
            share.namespace.clone(),
            "--node-name".into(),
            node_name.clone(),
            // Pods' cgroups go below the containerd guard's parent, which it removes on drop.
            "--cgroup-parent".into(),
            share.cgroup_parent.clone(),
            "--cni-conf-dir".into(),
            dir.join("cni").display().to_string(),
            "--cni-bin-dir".into(),
            format!("{}:{REFERENCE_PLUGINS}", bins.display()),
        ];
        args.extend(opts.args);
        let mut d = Skerryd { child: None, dir, args, env: opts.env, bins, cni: opts.cni, node_name, share, net };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "skerryd is already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("opening skerryd log");
        let mut cmd = self.net.command(binary_in(&self.bins, "skerryd"));
        cmd.args(&self.args)
            .env("SKERRY_LOGGER", binary_in(&self.bins, "skerry-logger"))
            .env("RUST_BACKTRACE", "1")
            .env("TMPDIR", self.dir.join("tmp"))
            // No NO_COLOR: the log is a file, and skerryd must see that by itself.
            .env_remove("NO_COLOR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("spawning skerryd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("polling skerryd") {
                self.child = None;
                panic!("skerryd exited early ({status}); log:\n{}", self.log());
            }
            if let Ok(r) = http::request(&self.socket(), "GET", "/healthz", None) {
                if r.status == 200 {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "skerryd did not answer GET /healthz on {} within 60s; log:\n{}",
                    self.socket().display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("skerry.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The temp dir holding the data dir, socket, log and config.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's CNI config dir (`--cni-conf-dir`).
    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// The IPAM plugin's `dataDir` (allocations live in `<it>/<network name>/`).
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// Which plugins the node's conflist uses.
    pub fn cni_plugins(&self) -> CniPlugins {
        self.cni
    }

    /// `--node-name`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The containerd namespace and cgroup parent this daemon uses.
    pub fn ctd_share(&self) -> &CtdShare {
        &self.share
    }

    /// The node's network namespace.
    pub fn net(&self) -> &NodeNet {
        &self.net
    }

    /// The node's address: `eth0` in its namespace, the source of its default route.
    pub fn node_ip(&self) -> std::net::Ipv4Addr {
        self.net.node_ip()
    }

    /// The directory holding the binaries this daemon runs.
    pub fn bin_dir(&self) -> &Path {
        &self.bins
    }

    /// The log file (stdout and stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("skerryd.log")
    }

    /// skerryd's whole output so far (every run of this guard).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log, for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The `skerry-logger` processes writing into this daemon's data dir, as (pid, argv): the
    /// shims start one per container task, naming its log file under `<data dir>/pods/`.
    pub fn logger_processes(&self) -> Vec<(i32, Vec<String>)> {
        let data = self.data_dir();
        crate::containerd::processes()
            .into_iter()
            .filter(|(_, _, argv)| {
                argv.first().is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "skerry-logger"))
                    && argv.iter().any(|a| Path::new(a).starts_with(&data))
            })
            .map(|(pid, _, argv)| (pid, argv))
            .collect()
    }

    /// The daemon's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops skerryd with SIGTERM (SIGKILL after 20 s) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        kill(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(child.id() as i32, libc::SIGKILL);
        let _ = child.wait();
        panic!("skerryd did not stop within 20s of SIGTERM; log tail:\n{}", self.log_tail(40));
    }

    /// Starts skerryd again after [`Skerryd::stop`], same flags, data dir and socket.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Runs the binaries in `dir` from the next start on (e.g. an upgrade from an older
    /// release's binaries on the same data dir and containerd), `skerry-cni` included;
    /// skerryd must be stopped.
    pub fn switch_binaries(&mut self, dir: &Path) {
        assert!(self.child.is_none(), "stop skerryd before switching its binaries");
        if let Some(i) = self.args.iter().position(|a| a == "--cni-bin-dir") {
            self.args[i + 1] = format!("{}:{REFERENCE_PLUGINS}", dir.display());
        }
        self.bins = dir.to_path_buf();
    }

    /// Stops and starts skerryd with the same data dir and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills skerryd with SIGKILL (no shutdown at all) and reaps it; [`Skerryd::start_again`] restarts it.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        kill(child.id() as i32, libc::SIGKILL);
        let _ = child.wait();
    }

    /// Runs this node's `skerryd` with its own flags and `extra` (e.g. `--cluster-reset`) to
    /// completion inside its namespace; the daemon must be stopped.
    pub fn run_own(&self, extra: &[&str]) -> Output {
        assert!(self.child.is_none(), "stop skerryd before running it to completion");
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(extra);
        self.run_skerryd(&args)
    }

    /// Runs `skerryd ARGS` (e.g. `--cleanup`) to completion inside the node's namespace.
    pub fn run_skerryd(&self, args: &[&str]) -> Output {
        let mut cmd = self.net.command(binary_in(&self.bins, "skerryd"));
        cmd.args(args).env_remove("NO_COLOR");
        run_with_timeout(cmd, None, CLI_TIMEOUT)
    }

    /// The `skerry` command with `SKERRY_SOCKET` pointing at this daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary_in(&self.bins, "skerry"));
        cmd.args(args).env("SKERRY_SOCKET", self.socket()).env_remove("KUBECONFIG");
        cmd
    }

    /// Runs `skerry ARGS` to completion.
    pub fn skerry(&self, args: &[&str]) -> Output {
        run_with_timeout(self.command(args), None, CLI_TIMEOUT)
    }

    /// Runs `skerry ARGS` with `stdin` as its standard input.
    pub fn skerry_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_timeout(self.command(args), Some(stdin), CLI_TIMEOUT)
    }

    /// Runs `skerry ARGS`, panics (with the output and the daemon's log) unless it exits 0; returns stdout.
    pub fn skerry_ok(&self, args: &[&str]) -> String {
        let out = self.skerry(args);
        assert_eq!(out.code, 0, "`skerry {}` failed:\n{out}\nskerryd log tail:\n{}", args.join(" "), self.log_tail(30));
        out.stdout
    }

    /// A raw API request over the socket.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> http::Response {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        http::request(&self.socket(), method, path, bytes.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; skerryd log tail:\n{}", self.log_tail(30)))
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Copies the files and directories below `from` into `to` (created if missing); symlinks and
/// other special files are refused, since a data dir has none.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        let t = e.file_type().unwrap_or_else(|err| panic!("reading the type of {}: {err}", e.path().display()));
        let dest = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            assert!(t.is_file(), "{} is not a plain file or directory", e.path().display());
            fs::copy(e.path(), &dest)
                .unwrap_or_else(|err| panic!("copying {} to {}: {err}", e.path().display(), dest.display()));
        }
    }
}

/// Named pipes at or below `dir` (symlinks are not followed).
pub fn fifos_below(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_fifo() {
                found.push(e.path());
            } else if t.is_dir() {
                todo.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// Detaches every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    for m in mounts_below(dir) {
        let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).unwrap();
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

impl Drop for Skerryd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !exited {
                kill(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("skerryd log tail ({}):\n{}", self.dir.display(), self.log_tail(60));
        }
        unmount_below(&self.dir);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// One node: a containerd (private, or shared by a [`crate::cluster::TestCluster`]'s nodes) and
/// a skerryd using it.
///
/// Field order is drop order: `skerryd` is declared first so it stops (and its
/// namespace mounts go) before `ctd` kills the shims and containers (when this was the last
/// node using it); `work` (manifests written by the test) goes last.
pub struct TestNode {
    pub skerryd: Skerryd,
    pub ctd: Arc<Containerd>,
    pub work: tempfile::TempDir,
}

/// Generous deadline for anything involving containers on a slow CI machine.
pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with(&[])
    }

    /// Starts containerd and skerryd with extra skerryd flags.
    pub fn start_with(extra: &[&str]) -> TestNode {
        Self::start_opts(Options::with_args(extra))
    }

    /// Starts containerd and skerryd as `opts` says.
    pub fn start_opts(opts: Options) -> TestNode {
        Self::start_on(Arc::new(Containerd::start()), opts)
    }

    /// Starts skerryd on `ctd` (the whole of it, or the part [`Options::share`] names).
    pub fn start_on(ctd: Arc<Containerd>, opts: Options) -> TestNode {
        let skerryd = Skerryd::start_opts(&ctd, opts);
        let work = tempfile::Builder::new().prefix("sk-work-").tempdir_in("/tmp").expect("creating work dir");
        TestNode { skerryd, ctd, work }
    }

    /// Whether the node has its containerd to itself (not a part of a shared one).
    pub fn owns_containerd(&self) -> bool {
        self.skerryd.ctd_share().namespace == self.ctd.namespace()
    }

    /// A power loss: SIGKILL to skerryd, to its containerd (only this node's shims, when the
    /// containerd is shared) and to its containers, and the pod namespaces' mounts removed. The
    /// node's network namespace, data dir and images stay; [`TestNode::restart`] boots it.
    pub fn kill9(&mut self) {
        self.skerryd.kill();
        if self.owns_containerd() {
            self.ctd.kill9();
        } else {
            self.ctd.kill9_namespace(&self.skerryd.ctd_share().namespace);
        }
        unmount_below(&self.skerryd.data_dir().join("pods"));
    }

    /// Starts what is not running (containerd after [`TestNode::kill9`], then skerryd); a
    /// running skerryd is stopped (SIGTERM) and started again.
    pub fn restart(&mut self) {
        if self.owns_containerd() && self.ctd.pid().is_none() {
            self.ctd.restart();
        }
        if self.skerryd.pid().is_some() {
            self.skerryd.restart();
        } else {
            self.skerryd.start_again();
        }
    }

    /// The skerryd log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        self.skerryd.log_tail(n)
    }

    /// The node's address (see [`Skerryd::node_ip`]).
    pub fn node_ip(&self) -> std::net::Ipv4Addr {
        self.skerryd.node_ip()
    }

    /// Runs `f` on a thread inside the node's network namespace ("from the node").
    pub fn in_netns<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.skerryd.net().run(f)
    }

    /// `status.podIP` of pod `name` in `default`; panics when it has none.
    pub fn pod_ip(&self, name: &str) -> std::net::Ipv4Addr {
        let pod = self.pod(name);
        pod.pointer("/status/podIP").and_then(Value::as_str).and_then(|ip| ip.parse().ok()).unwrap_or_else(|| {
            panic!("pod {name} has no status.podIP:\n{}", serde_json::to_string_pretty(&pod["status"]).unwrap())
        })
    }

    pub fn skerry(&self, args: &[&str]) -> Output {
        self.skerryd.skerry(args)
    }

    pub fn skerry_ok(&self, args: &[&str]) -> String {
        self.skerryd.skerry_ok(args)
    }

    pub fn skerry_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.skerryd.skerry_stdin(args, stdin)
    }

    /// A raw API request to this node's skerryd.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> crate::http::Response {
        self.skerryd.api(method, path, body)
    }

    /// `skerry apply -f -` with `yaml` on stdin; panics unless it succeeds.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.skerry_stdin(&["apply", "-f", "-"], yaml.as_bytes());
        assert_eq!(
            out.code,
            0,
            "apply failed:\n{out}\nmanifest:\n{yaml}\nskerryd log tail:\n{}",
            self.skerryd.log_tail(30)
        );
        out.stdout
    }

    /// Writes `contents` to `name` in the work dir and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.work.path().join(name);
        fs::write(&p, contents).expect("writing a manifest");
        p
    }

    /// Imports an image archive with `skerry image import`; returns stdout.
    pub fn import(&self, archive: &Path) -> String {
        self.skerry_ok(&["image", "import", archive.to_str().unwrap()])
    }

    /// Builds `builder` as an OCI archive in the work dir and imports it.
    pub fn import_image(&self, builder: &crate::images::ImageBuilder) -> String {
        let file = self.work.path().join(format!("{}.tar", builder.name().replace(['/', ':'], "_")));
        builder.write_oci(&file, false).expect("building a test image");
        self.import(&file)
    }

    /// `get pod NAME -o json` (namespace `ns`), or `None` when it does not exist.
    pub fn pod_in(&self, ns: &str, name: &str) -> Option<Value> {
        let out = self.skerry(&["get", "pod", name, "-n", ns, "-o", "json"]);
        if out.code != 0 {
            assert!(out.stderr.contains("NotFound"), "get pod {name} failed unexpectedly:\n{out}");
            return None;
        }
        Some(serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("get -o json is not JSON ({e}):\n{out}")))
    }

    /// The pod `name` in `default`; panics when it does not exist.
    pub fn pod(&self, name: &str) -> Value {
        self.pod_in("default", name).unwrap_or_else(|| panic!("pod {name} does not exist"))
    }

    /// Polls the pod until `cond` holds (60 s); returns it. Panics with the pod and the log.
    pub fn wait_pod_in(&self, ns: &str, name: &str, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
        let deadline = deadline();
        let mut last = None;
        loop {
            if let Some(p) = self.pod_in(ns, name) {
                if cond(&p) {
                    return p;
                }
                last = Some(p);
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting until pod {ns}/{name} {what}; last seen:\n{}\nskerryd log tail:\n{}",
                    last.map(|p| serde_json::to_string_pretty(&p["status"]).unwrap())
                        .unwrap_or_else(|| "(absent)".into()),
                    self.skerryd.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_pod(&self, name: &str, what: &str, cond: impl FnMut(&Value) -> bool) -> Value {
        self.wait_pod_in("default", name, what, cond)
    }

    /// Waits until every container of the pod is running and ready.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_running_in("default", name)
    }

    pub fn wait_running_in(&self, ns: &str, name: &str) -> Value {
        self.wait_pod_in(ns, name, "is Running and ready", |p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"].as_array().is_some_and(|cs| {
                    !cs.is_empty() && cs.iter().all(|c| c["ready"] == true && c["state"].get("running").is_some())
                })
        })
    }

    /// Waits until the pod no longer exists.
    pub fn wait_gone_in(&self, ns: &str, name: &str) {
        let deadline = deadline();
        while self.pod_in(ns, name).is_some() {
            assert!(
                Instant::now() < deadline,
                "pod {ns}/{name} still exists after 60s:\n{}\nskerryd log tail:\n{}",
                self.skerry(&["get", "pod", name, "-n", ns, "-o", "yaml"]).stdout,
                self.skerryd.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls `skerry ARGS` until its output satisfies `cond`; returns the last output.
    pub fn wait_output(&self, args: &[&str], what: &str, mut cond: impl FnMut(&Output) -> bool) -> Output {
        let deadline = deadline();
        loop {
            let out = self.skerry(args);
            if cond(&out) {
                return out;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting until `skerry {}` {what}; last output:\n{out}\nskerryd log tail:\n{}",
                    args.join(" "),
                    self.skerryd.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One cell of a table printed by `get`: the word that starts under the header
/// `col` in the row whose first word is `row_name`.
pub fn column(table: &str, row_name: &str, col: &str) -> Option<String> {
    let mut lines = table.lines();
    let header = lines.next()?;
    let at = header.match_indices(col).map(|(i, _)| i).find(|&i| {
        (i == 0 || header.as_bytes()[i - 1] == b' ') && header.as_bytes().get(i + col.len()).is_none_or(|b| *b == b' ')
    })?;
    let row = lines.find(|l| l.split_whitespace().next() == Some(row_name))?;
    row.get(at..).and_then(|rest| rest.split_whitespace().next()).map(String::from)
}

/// Checks the socket accepts connections (used where no HTTP is wanted).
pub fn socket_connects(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// The busybox test image every non-conformance pod uses.
pub const BUSYBOX: &str = "skerry-test/busybox:1";

impl TestNode {
    /// Imports the plain busybox test image as [`BUSYBOX`].
    pub fn import_busybox(&self) {
        self.import_image(&crate::images::ImageBuilder::new(BUSYBOX));
    }
}

/// A one-container pod manifest running `command` in [`BUSYBOX`] (`imagePullPolicy: Never`).
pub fn busybox_pod(name: &str, restart_policy: &str, command: &[&str]) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {restart_policy}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: {name}\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: {}\n",
        serde_json::to_string(command).unwrap()
    )
}
