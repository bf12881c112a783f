//! `skerry-bench`: pod start latency against the raw-containerd floor, and skerryd's memory;
//! `deploy`: Deployments against the floor and Docker Swarm; `cluster`: write latency and
//! throughput on one server against three, an agent's join and memory, on test clusters;
//! `scheduler`: the cluster scheduler alone, in process (no root, no containerd).
//!
//! Everything runs against a private containerd ([`skerry_tests::containerd::Containerd`]) and a
//! private `skerryd` in its own network namespace ([`skerry_tests::skerryd::Skerryd`], the e2e
//! tests' harness with the release binaries); both are torn down on exit, also on failure or
//! Ctrl-C. `bench/run` builds the release binaries and calls `skerry-bench all`. See
//! bench/README.md for what each figure means.

mod abort;
mod cluster;
mod deploy;
mod http;
mod scheduler;
mod swarm;
mod sys;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;
use skerry_tests::containerd::Containerd;
use skerry_tests::images::ImageBuilder;
use skerryd::runtime::{build_spec, ContainerRun, ContainerdRuntime, SpecInput, TaskState};
use tokio::task::JoinSet;

use sys::Mem;

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// The image every pod and floor container runs (imported beforehand, never pulled).
const IMAGE: &str = "docker.io/library/busybox:bench";
const POD_IMAGE: &str = "busybox:bench";
const POLL: Duration = Duration::from_millis(20);
/// How often a start run looks for Running pods: short, so detection adds little to the figure.
const DETECT: Duration = Duration::from_millis(5);
/// Not a measurement threshold: only how long to wait before declaring the bench stuck.
const STUCK: Duration = Duration::from_secs(300);

#[derive(Parser)]
#[command(name = "skerry-bench", about = "Skerry benchmarks: pod start latency vs raw containerd, and memory")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Pod start latency (skerry and the containerd floor, N=1 and N=50) and memory; prints a
    /// markdown report and writes it to --out.
    All(AllArgs),
    /// Deployments of N replicas (rollout, rolling update, delete) against the floor and, with
    /// --swarm, Docker Swarm; prints a markdown report and writes it to --out.
    Deploy(deploy::DeployArgs),
    /// Test clusters: write latency and throughput on one server and on three (leader and a
    /// forwarding follower), an agent's join → Ready, an agent's memory idle and with pods;
    /// prints a markdown report and writes it to --out.
    Cluster(cluster::ClusterArgs),
    /// The cluster scheduler alone placing N pods on M simulated nodes (in process; no root).
    Scheduler(scheduler::SchedulerArgs),
    /// Only the floor: raw containerd creating and starting N containers in parallel.
    Floor {
        #[arg(long, default_value_t = 50)]
        n: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
}

#[derive(clap::Args)]
struct AllArgs {
    /// Repetitions for N=1.
    #[arg(long, default_value_t = 7)]
    reps1: usize,
    /// Repetitions for N=50.
    #[arg(long, default_value_t = 5)]
    reps50: usize,
    /// Pods running while skerryd's memory is measured.
    #[arg(long, default_value_t = 100)]
    mem_pods: usize,
    /// Where to write the markdown report (it is printed to stdout too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// skerryd's log filter (`debug` shows where time goes, but slows it down).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Also watch the pods during the latency runs and report when they were created, bound
    /// and Running (the watch itself costs skerryd a little).
    #[arg(long)]
    timeline: bool,
    /// Extra environment for skerryd (KEY=VALUE, repeatable), e.g. MALLOC_ARENA_MAX=2 to
    /// check how much of its RSS is allocator arenas.
    #[arg(long = "skerryd-env")]
    skerryd_env: Vec<String>,
    /// Copy skerryd's log here at the end (also on failure).
    #[arg(long)]
    keep_log: Option<PathBuf>,
    /// Run the bench pods with `hostNetwork: true`: no CNI, so the figure is the pod lifecycle
    /// alone (sandbox namespaces, image, containers, status) against the same floor.
    #[arg(long)]
    host_network: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Scheduler(args) = &cli.cmd {
        // Pure computation: no runtime, no prerequisites, no cleanup.
        return scheduler::run(args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        // Dropping the bench future on a signal runs every guard's Drop (cleanup).
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; cleaned up"),
            _ = term.recv() => bail!("terminated; cleaned up"),
            _ = hup.recv() => bail!("hung up; cleaned up"),
        }
    })
}

async fn run(cli: Cli) -> Result<()> {
    check_prerequisites()?;
    // Release builds abort on a panic, before any guard's Drop: clean up from the hook instead.
    abort::install();
    match cli.cmd {
        Cmd::All(args) => all(args).await,
        Cmd::Deploy(args) => deploy::deploy(args).await,
        Cmd::Cluster(args) => cluster::run(args).await,
        Cmd::Scheduler(args) => scheduler::run(&args),
        Cmd::Floor { n, reps } => {
            let env = Env::start().await?;
            let floor = env.floor().await?;
            floor_once(&floor, &env, 1, &SLEEP).await?; // unpacks the image
            let mut times = Vec::new();
            for _ in 0..reps {
                times.push(floor_once(&floor, &env, n, &SLEEP).await?);
            }
            let s = Stats::of(&times);
            println!("floor N={n}: median {} (min {}, max {}, {reps} runs)", secs(s.median), secs(s.min), secs(s.max));
            Ok(())
        }
    }
}

fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("skerry-bench must run as root (it starts containerd, runc and skerryd): sudo bench/run");
    }
    for p in ["/usr/bin/containerd", skerry_tests::images::BUSYBOX] {
        if !Path::new(p).exists() {
            bail!("{p} is missing; install it with `apt-get install -y containerd runc busybox-static`");
        }
    }
    if !["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        bail!("runc is missing; install it with `apt-get install -y runc`");
    }
    Ok(())
}

/// The binaries under test: next to this executable (target/release).
struct Bins {
    dir: PathBuf,
    skerryd: PathBuf,
    skerry: PathBuf,
    logger: PathBuf,
}

impl Bins {
    fn find() -> Result<Bins> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("no parent dir of the executable")?;
        let b = Bins {
            dir: dir.to_path_buf(),
            skerryd: dir.join("skerryd"),
            skerry: dir.join("skerry"),
            logger: dir.join("skerry-logger"),
        };
        let cni = dir.join("skerry-cni");
        for p in [&b.skerryd, &b.skerry, &b.logger, &cni] {
            if !p.is_file() {
                bail!("{} is missing; build with `cargo build --release --workspace` (bench/run does)", p.display());
            }
        }
        Ok(b)
    }
}

/// The private containerd, the scratch dir and the test image. Field order is drop order:
/// containerd goes first (kills shims and containers, removes its cgroups and the runc state of
/// both namespaces), then the scratch dir (archive, manifests, floor logs).
struct Env {
    containerd: Containerd,
    scratch: tempfile::TempDir,
    bins: Bins,
    image_archive: PathBuf,
}

impl Env {
    async fn start() -> Result<Env> {
        let bins = Bins::find()?;
        let scratch = tempfile::Builder::new().prefix("sk-bench-").tempdir_in("/tmp")?;
        let image_archive = scratch.path().join("busybox-bench.tar");
        ImageBuilder::new(IMAGE).cmd(["sleep", "3600"]).write_oci(&image_archive, false)?;
        let containerd = tokio::task::spawn_blocking(Containerd::start).await.context("starting containerd")?;
        containerd.add_namespace(&floor_namespace(&containerd));
        Ok(Env { containerd, scratch, bins, image_archive })
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// A runtime client in the floor's own namespace, with the image imported.
    async fn floor(&self) -> Result<ContainerdRuntime> {
        let rt = ContainerdRuntime::connect(self.containerd.socket(), &floor_namespace(&self.containerd))
            .await?
            .with_logger(self.bins.logger.clone());
        rt.import_archive(&self.image_archive).await?;
        Ok(rt)
    }

    fn shims(&self) -> (Mem, usize) {
        let socket = self.containerd.socket().to_string_lossy().into_owned();
        sys::mem_of_all(|argv| argv[0].contains("containerd-shim") && argv.iter().any(|a| a.contains(&socket)))
    }
}

fn floor_namespace(c: &Containerd) -> String {
    format!("{}-floor", c.namespace())
}

/// The skerryd under test: the e2e harness's node ([`skerry_tests::skerryd::Skerryd`]) with the
/// release binaries — its own network namespace, CNI config, data dir and socket, all removed
/// on drop.
/// A `skerry apply -f` running in the background while a benchmark polls for its effect.
struct Apply {
    child: Option<tokio::process::Child>,
}

impl Apply {
    fn start(skerryd: &Skerryd, manifest: &Path) -> Result<Apply> {
        let child = tokio::process::Command::new(&skerryd.skerry)
            .arg("apply")
            .arg("-f")
            .arg(manifest)
            .env("SKERRY_SOCKET", &skerryd.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running skerry apply")?;
        Ok(Apply { child: Some(child) })
    }

    /// Whether the apply has finished (successfully; a failure is an error with its stderr).
    async fn done(&mut self) -> Result<bool> {
        let Some(child) = self.child.as_mut() else { return Ok(true) };
        let Some(status) = child.try_wait()? else { return Ok(false) };
        let child = self.child.take().expect("checked above");
        if !status.success() {
            let out = child.wait_with_output().await?;
            bail!("skerry apply failed ({status}): {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(true)
    }
}

struct Skerryd {
    node: skerry_tests::skerryd::Skerryd,
    socket: PathBuf,
    log: PathBuf,
    skerry: PathBuf,
    /// Client in skerryd's containerd namespace, to see when pods' containers are gone.
    runtime: ContainerdRuntime,
}

impl Skerryd {
    /// Ends a run: copies the log to `keep_log` (also after a failure) and, after a successful
    /// run, deletes every pod so containerd has nothing left to kill (pods, sandboxes and pod
    /// directories go the normal way).
    async fn finish(self, keep_log: Option<&Path>, succeeded: bool) {
        if let Some(keep) = keep_log {
            if let Some(dir) = keep.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::copy(&self.log, keep);
        }
        if succeeded {
            let _ = self.delete_all().await;
        }
    }

    async fn start(env: &Env, log_level: &str, extra_env: &[String]) -> Result<Skerryd> {
        let mut envs = Vec::new();
        for kv in extra_env {
            let Some((k, v)) = kv.split_once('=') else { bail!("--skerryd-env {kv:?} is not KEY=VALUE") };
            envs.push((k.to_string(), v.to_string()));
        }
        let opts = skerry_tests::skerryd::Options {
            bin_dir: Some(env.bins.dir.clone()),
            args: vec!["--log-level".into(), log_level.into()],
            env: envs,
            ..Default::default()
        };
        // The harness panics with skerryd's log when it does not come up; turn that into an error.
        let ctd = &env.containerd;
        let node = std::thread::scope(|s| s.spawn(|| skerry_tests::skerryd::Skerryd::start_opts(ctd, opts)).join())
            .map_err(|p| anyhow::anyhow!("starting skerryd failed: {}", panic_text(&p)))?;
        let runtime = ContainerdRuntime::connect(env.containerd.socket(), &env.containerd.namespace()).await?;
        Ok(Skerryd { socket: node.socket(), log: node.log_path(), skerry: env.bins.skerry.clone(), runtime, node })
    }

    fn pid(&self) -> u32 {
        self.node.pid().expect("skerryd is running")
    }

    fn logs(&self) -> String {
        self.node.log_tail(40)
    }

    /// Runs the CLI against this skerryd; fails with its stderr.
    async fn cli(&self, args: &[&str]) -> Result<()> {
        let out = tokio::process::Command::new(&self.skerry)
            .args(args)
            .env("SKERRY_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running skerry")?;
        if !out.status.success() {
            bail!("skerry {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    async fn pods(&self) -> Result<Vec<Value>> {
        let (code, body) = http::get(&self.socket, "/api/v1/namespaces/default/pods").await?;
        if code != 200 {
            bail!("listing pods: HTTP {code}: {}", String::from_utf8_lossy(&body));
        }
        let list: Value = serde_json::from_slice(&body).context("parsing the pod list")?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Time from starting `skerry apply -f FILE` until all `n` pods are Running; with
    /// `timeline`, also when each pod was seen created, bound and Running (from a watch).
    async fn start_pods(&self, manifest: &Path, n: usize, timeline: bool) -> Result<(Duration, Option<Timeline>)> {
        let seen: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let watch = if timeline {
            let sink = seen.clone();
            let on_event = move |at: Instant, ev: Value| sink.lock().unwrap_or_else(|e| e.into_inner()).push((at, ev));
            Some(http::watch(&self.socket, "/api/v1/namespaces/default/pods?watch=true", on_event).await?)
        } else {
            None
        };
        let started = Instant::now();
        let mut apply = Apply::start(self, manifest)?;
        loop {
            let applied = apply.done().await?;
            let pods = self.pods().await?;
            let running =
                pods.iter().filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")).count();
            if applied && pods.len() == n && running == n {
                let took = started.elapsed();
                let Some(watch) = watch else { return Ok((took, None)) };
                tokio::time::sleep(Duration::from_millis(100)).await;
                watch.abort();
                let events = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
                return Ok((took, Some(Timeline::from_events(started, &events))));
            }
            if started.elapsed() > STUCK {
                bail!("only {running} of {n} pods Running after {}s:\n{}", STUCK.as_secs(), self.logs());
            }
            tokio::time::sleep(DETECT).await;
        }
    }

    /// Force-deletes every pod and waits until the API and containerd hold none.
    async fn delete_all(&self) -> Result<()> {
        self.cli(&["delete", "pods", "--all", "--grace-period=0", "--force"]).await?;
        let started = Instant::now();
        loop {
            if self.pods().await?.is_empty() && self.runtime.list_containers().await?.is_empty() {
                return Ok(());
            }
            if started.elapsed() > STUCK {
                bail!("pods or their containers are still there {}s after delete:\n{}", STUCK.as_secs(), self.logs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn mem(&self) -> Result<Mem> {
        sys::mem_of(self.pid()).context("reading skerryd's /proc status")
    }
}

/// When pods were first seen created, bound to the node and Running, relative to the start of
/// `skerry apply`.
#[derive(Clone, Debug, Default)]
struct Timeline {
    last_created: Duration,
    last_bound: Duration,
    last_running: Duration,
    /// Per pod: created → bound, bound → Running.
    to_bound: Vec<Duration>,
    to_running: Vec<Duration>,
}

impl Timeline {
    fn from_events(start: Instant, events: &[(Instant, Value)]) -> Timeline {
        let mut pods: HashMap<String, [Option<Instant>; 3]> = HashMap::new();
        for (at, ev) in events {
            let obj = &ev["object"];
            let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) else { continue };
            let slot = pods.entry(name.to_string()).or_default();
            let marks = [
                true,
                obj.pointer("/spec/nodeName").is_some(),
                obj.pointer("/status/phase").and_then(Value::as_str) == Some("Running"),
            ];
            for (i, hit) in marks.into_iter().enumerate() {
                if hit && slot[i].is_none() {
                    slot[i] = Some(*at);
                }
            }
        }
        let mut t = Timeline::default();
        let since = |i: Instant| i.saturating_duration_since(start);
        for [c, b, r] in pods.values() {
            if let (Some(c), Some(b), Some(r)) = (c, b, r) {
                t.last_created = t.last_created.max(since(*c));
                t.last_bound = t.last_bound.max(since(*b));
                t.last_running = t.last_running.max(since(*r));
                t.to_bound.push(b.saturating_duration_since(*c));
                t.to_running.push(r.saturating_duration_since(*b));
            }
        }
        t
    }
}

/// `n` pods of the bench image sleeping, as a multi-document YAML manifest.
fn write_manifest(dir: &Path, n: usize, host_network: bool) -> Result<PathBuf> {
    let mut y = String::new();
    let net = if host_network { "  hostNetwork: true\n" } else { "" };
    for i in 0..n {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{i}\nspec:\n{net}  containers:\n  - name: main\n    image: {POD_IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n"
        );
    }
    let path = dir.join(format!("pods-{n}.yaml"));
    std::fs::write(&path, y)?;
    Ok(path)
}

/// The pod benchmark's command (pods and floor).
const SLEEP: [&str; 2] = ["sleep", "3600"];

/// Raw containerd: create and start `n` containers running `args` concurrently through
/// `ContainerdRuntime::run`, until every task reports Running. Removes them afterwards.
async fn floor_once(rt: &ContainerdRuntime, env: &Env, n: usize, args: &[&str]) -> Result<Duration> {
    let logs = env.dir().join("floor-logs");
    let runs: Vec<ContainerRun> = (0..n)
        .map(|i| {
            let id = format!("floor-{i}");
            let spec = build_spec(&SpecInput {
                args: args.iter().map(|a| a.to_string()).collect(),
                env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
                hostname: id.clone(),
                cgroups_path: format!("{}/{id}", env.containerd.cgroup_parent()),
                ..Default::default()
            });
            ContainerRun {
                log_path: logs.join(format!("{id}.log")),
                id,
                image: IMAGE.into(),
                spec,
                labels: HashMap::new(),
            }
        })
        .collect();
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for r in runs {
        let rt = rt.clone();
        set.spawn(async move {
            rt.run(&r).await?;
            match rt.state(&r.id).await? {
                Some(TaskState::Running { .. }) => Ok(()),
                other => bail!("floor container {} is {other:?} after start", r.id),
            }
        });
    }
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            result = Err(e);
        }
    }
    let elapsed = started.elapsed();
    let mut rm = JoinSet::new();
    for id in ids {
        let rt = rt.clone();
        rm.spawn(async move { rt.remove(&id).await });
    }
    while let Some(r) = rm.join_next().await {
        r??;
    }
    result.map(|_| elapsed)
}

#[derive(Clone, Copy, Debug)]
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(times: &[Duration]) -> Stats {
        let mut t = times.to_vec();
        t.sort();
        let median = if t.is_empty() {
            Duration::ZERO
        } else if t.len() % 2 == 1 {
            t[t.len() / 2]
        } else {
            (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2
        };
        Stats { median, min: t.first().copied().unwrap_or_default(), max: t.last().copied().unwrap_or_default() }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct Latency {
    n: usize,
    skerry: Vec<Duration>,
    floor: Vec<Duration>,
    timelines: Vec<Timeline>,
}

/// One process's memory at one moment, and its target if it has one.
pub(crate) struct MemRow {
    pub what: String,
    pub state: String,
    pub mem: Mem,
    pub target: Option<u64>,
}

/// The memory table every report shows: VmRSS and VmHWM per process and state, met or missed.
pub(crate) fn memory_table(r: &mut String, rows: &[MemRow]) {
    use std::fmt::Write;
    let _ = writeln!(r, "| process | state | VmRSS | VmHWM | threads | target (VmRSS) |");
    let _ = writeln!(r, "|---|---|---:|---:|---:|:---:|");
    for m in rows {
        let target = match m.target {
            Some(t) => format!("≤ {} — {}", mib(t), if m.mem.rss_kib <= t { "met" } else { "**missed**" }),
            None => "—".into(),
        };
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} |",
            m.what,
            m.state,
            mib(m.mem.rss_kib),
            mib(m.mem.hwm_kib),
            m.mem.threads,
            target
        );
    }
}

async fn all(args: AllArgs) -> Result<()> {
    let env = Env::start().await?;
    let floor = env.floor().await?;
    let containerd_version = floor.version().await?;
    let skerryd = Skerryd::start(&env, &args.log_level, &args.skerryd_env).await?;
    let result = measure(&args, &env, &floor, &skerryd, &containerd_version).await;
    skerryd.finish(args.keep_log.as_deref(), result.is_ok()).await;
    let report = result?;
    print!("{report}");
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

async fn measure(
    args: &AllArgs,
    env: &Env,
    floor: &ContainerdRuntime,
    skerryd: &Skerryd,
    containerd_version: &str,
) -> Result<String> {
    let mut mem_rows = Vec::new();
    eprintln!("skerryd is up (pid {}); idle memory", skerryd.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    mem_rows.push(MemRow {
        what: "skerryd".into(),
        state: "idle after start".into(),
        mem: skerryd.mem()?,
        target: Some(20 * 1024),
    });
    if let Some(pid) = env.containerd.pid() {
        if let Some(m) = sys::mem_of(pid) {
            mem_rows.push(MemRow { what: "containerd".into(), state: "idle".into(), mem: m, target: None });
        }
    }
    skerryd.cli(&["image", "import", &env.image_archive.to_string_lossy()]).await?;

    // Warm-up, not counted: unpacks the image's snapshot for both, warms caches and the CLI binary.
    eprintln!("warm-up");
    let m1 = write_manifest(env.dir(), 1, args.host_network)?;
    skerryd.start_pods(&m1, 1, false).await?;
    skerryd.delete_all().await?;
    floor_once(floor, env, 1, &SLEEP).await?;

    let mut lat = Vec::new();
    for (n, reps) in [(1, args.reps1), (50, args.reps50)] {
        let manifest = write_manifest(env.dir(), n, args.host_network)?;
        let mut l = Latency { n, skerry: Vec::new(), floor: Vec::new(), timelines: Vec::new() };
        // Interleaved, so drift on a shared machine hits both alike.
        for rep in 0..reps {
            let (s, timeline) = skerryd.start_pods(&manifest, n, args.timeline).await?;
            l.timelines.extend(timeline);
            skerryd.delete_all().await?;
            let f = floor_once(floor, env, n, &SLEEP).await?;
            eprintln!("N={n} run {}/{reps}: skerry {} floor {}", rep + 1, secs(s), secs(f));
            l.skerry.push(s);
            l.floor.push(f);
        }
        lat.push(l);
    }

    eprintln!("memory with {} pods", args.mem_pods);
    let manifest = write_manifest(env.dir(), args.mem_pods, args.host_network)?;
    let (big_start, _) = skerryd.start_pods(&manifest, args.mem_pods, false).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let label = format!("{} pods running", args.mem_pods);
    mem_rows.push(MemRow {
        what: "skerryd".into(),
        state: label.clone(),
        mem: skerryd.mem()?,
        target: Some(40 * 1024),
    });
    if let Some(pid) = env.containerd.pid() {
        if let Some(m) = sys::mem_of(pid) {
            mem_rows.push(MemRow { what: "containerd".into(), state: label.clone(), mem: m, target: None });
        }
    }
    let (shim_mem, shims) = env.shims();
    mem_rows.push(MemRow {
        what: format!("containerd-shim-runc-v2 ×{shims} (sum)"),
        state: label.clone(),
        mem: shim_mem,
        target: None,
    });
    let logger = env.bins.logger.to_string_lossy().into_owned();
    let (logger_mem, loggers) = sys::mem_of_all(|argv| argv[0] == logger);
    mem_rows.push(MemRow {
        what: format!("skerry-logger ×{loggers} (sum)"),
        state: label,
        mem: logger_mem,
        target: None,
    });

    skerryd.delete_all().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    mem_rows.push(MemRow {
        what: "skerryd".into(),
        state: "idle again, all pods deleted".into(),
        mem: skerryd.mem()?,
        target: None,
    });

    let mut report = render(containerd_version, &lat, (args.mem_pods, big_start), &mem_rows);
    if args.host_network {
        report = report.replacen(
            "- Command: `sudo bench/run`",
            "- Command: `sudo bench/run --host-network` (pods without CNI: the pod lifecycle alone)",
            1,
        );
    }
    Ok(report)
}

fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn render(containerd_version: &str, lat: &[Latency], big: (usize, Duration), mem: &[MemRow]) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Skerry benchmark\n");
    let _ = writeln!(r, "- Machine: {}", sys::machine_line(containerd_version));
    let _ = writeln!(r, "- Skerry: commit {}, release build", git_rev());
    let _ = writeln!(r, "- Date: {}", jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"));
    let _ = writeln!(r, "- Command: `sudo bench/run`\n");
    let _ = writeln!(r, "## Pod start latency\n");
    let _ = writeln!(r, "skerry: `skerry apply -f` of N busybox pods (`sleep 3600`, image imported, IfNotPresent) until all N are `Running` (API polled every 5 ms).");
    let _ = writeln!(r, "floor: the same N containers created and started in parallel straight through containerd (`ContainerdRuntime::run`, new namespaces, no sandbox) until every task is Running. Runs are interleaved; pods are deleted between runs.\n");
    let _ = writeln!(
        r,
        "| N | runs | skerry median | skerry min–max | floor median | floor min–max | skerry / floor | target ≤ 1.3× |"
    );
    let _ = writeln!(r, "|---:|---:|---:|---:|---:|---:|---:|:---:|");
    for l in lat {
        let s = Stats::of(&l.skerry);
        let f = Stats::of(&l.floor);
        let ratio = s.median.as_secs_f64() / f.median.as_secs_f64().max(1e-9);
        let _ = writeln!(
            r,
            "| {} | {} | {} | {}–{} | {} | {}–{} | {:.2}× | {} |",
            l.n,
            l.skerry.len(),
            secs(s.median),
            secs(s.min),
            secs(s.max),
            secs(f.median),
            secs(f.min),
            secs(f.max),
            ratio,
            if ratio <= 1.3 { "met" } else { "**missed**" }
        );
    }
    let _ = writeln!(
        r,
        "\n{} pods (one run, no floor; the memory figures below are taken with them): {} to all Running.\n",
        big.0,
        secs(big.1)
    );
    let _ = writeln!(r, "## Memory\n");
    let _ = writeln!(r, "VmRSS and VmHWM (peak RSS since the process started) from `/proc/PID/status`.\n");
    memory_table(&mut r, mem);
    if lat.iter().any(|l| !l.timelines.is_empty()) {
        let _ = writeln!(r, "\n## Where the time goes (`--timeline`)\n");
        let _ = writeln!(r, "From a pod watch during the runs; times since `skerry apply` started, medians over runs (per-pod steps: median and max over all pods of all runs).\n");
        let _ = writeln!(r, "| N | last pod created (apply done) | last pod bound | last pod Running | created → bound, per pod | bound → Running, per pod |");
        let _ = writeln!(r, "|---:|---:|---:|---:|---:|---:|");
        for l in lat.iter().filter(|l| !l.timelines.is_empty()) {
            let med =
                |f: &dyn Fn(&Timeline) -> Duration| Stats::of(&l.timelines.iter().map(f).collect::<Vec<_>>()).median;
            let pooled = |f: &dyn Fn(&Timeline) -> &Vec<Duration>| {
                let all: Vec<Duration> = l.timelines.iter().flat_map(|t| f(t).iter().copied()).collect();
                let s = Stats::of(&all);
                format!("{} (max {})", secs(s.median), secs(s.max))
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} | {} |",
                l.n,
                secs(med(&|t| t.last_created)),
                secs(med(&|t| t.last_bound)),
                secs(med(&|t| t.last_running)),
                pooled(&|t| &t.to_bound),
                pooled(&|t| &t.to_running)
            );
        }
    }
    let _ = writeln!(r, "\nRaw runs (seconds):\n");
    for l in lat {
        let fmt = |v: &[Duration]| v.iter().map(|d| format!("{:.3}", d.as_secs_f64())).collect::<Vec<_>>().join(", ");
        let _ = writeln!(r, "- N={}: skerry [{}]; floor [{}]", l.n, fmt(&l.skerry), fmt(&l.floor));
    }
    r
}
