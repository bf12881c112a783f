//! `skerry-bench cluster`: write latency and throughput on one server against three (their
//! leader, and a follower that forwards to it), an agent's time from `skerryd --join` to Ready,
//! and an agent's memory idle and with pods — on real clusters of the e2e harness
//! ([`skerry_tests::cluster::TestCluster`] with the release binaries: each node in its own
//! network namespace on one test switch, with its own containerd, data dir and socket).
//!
//! One cluster runs at a time and is removed (its guard's `Drop`) before the next starts, also
//! on failure; [`crate::abort`] covers a panic inside the harness, which aborts this build. See
//! bench/README.md, "Clusters".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use skerry_tests::cluster::{ClusterBuilder, TestCluster};
use skerry_tests::skerryd::BUSYBOX;
use tokio::task::JoinSet;

use crate::http::{self, Conn};
use crate::sys::{self, Mem};
use crate::{secs, Bins, MemRow, Stats};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
/// The agent of the join clusters (node 2 of `builder(2).servers(1)`).
const AGENT: &str = "sk-node-2";
const JOINING: &str = "joining the cluster";
const JOINED: &str = "joined the cluster";
const REGISTERED: &str = "registered this node";
const LEADING: &str = "leading: scheduler and controllers started";
const LEADERSHIP_LOST: &str = "leadership lost";
const VOTER: &str = "this server is a voter";
/// Writes before each timed series, not counted (connection, caches, the first Raft entries).
const WARM_UP: usize = 20;
const IDLE_TARGET_KIB: u64 = 20 * 1024;
const PODS_TARGET_KIB: u64 = 40 * 1024;

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Sequential writes per latency series (single server, 3-server leader, 3-server follower).
    #[arg(long, default_value_t = 300)]
    writes: usize,
    /// Concurrent writers in the throughput runs, each on its own kept-alive connection.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Writes per writer in the throughput runs.
    #[arg(long, default_value_t = 50)]
    writes_each: usize,
    /// Fresh clusters (one server, one agent) for the join → Ready figure.
    #[arg(long, default_value_t = 3)]
    joins: usize,
    /// Pods pinned to the agent for its memory figure.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Seconds of quiet before each memory reading (a settle, not a measurement threshold).
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Give up on one step after this many seconds (not a measurement threshold).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Where to write the markdown report (it is printed to stdout too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Every skerryd's log filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Copy every node's skerryd log into this directory when its cluster ends (also on failure):
    /// `writes-1-node-1.log`, `writes-3-node-2.log`, `join-2-node-2.log`, ….
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

/// A running test cluster. Dropping it copies the logs (with `--keep-logs`) and removes the
/// cluster; the harness's drop blocks (it stops every skerryd and containerd), so the normal
/// end goes through [`Running::remove`] on a blocking thread.
struct Running {
    cluster: Option<Arc<TestCluster>>,
    name: String,
    keep_logs: Option<PathBuf>,
}

impl Running {
    /// Starts `builder` on a blocking thread (the harness waits for every node's API).
    async fn start(builder: ClusterBuilder, name: &str, args: &ClusterArgs) -> Result<Running> {
        eprintln!("starting cluster {name}");
        let cluster =
            tokio::task::spawn_blocking(move || builder.start()).await.map_err(|e| match e.try_into_panic() {
                Ok(p) => anyhow!("starting cluster {name} failed: {}", crate::panic_text(&p)),
                Err(e) => anyhow!("starting cluster {name} failed: {e}"),
            })?;
        Ok(Running { cluster: Some(Arc::new(cluster)), name: name.to_string(), keep_logs: args.keep_logs.clone() })
    }

    fn get(&self) -> &TestCluster {
        self.cluster.as_ref().expect("present until dropped")
    }

    fn socket(&self, i: u8) -> PathBuf {
        self.get().node(i).skerryd.socket()
    }

    fn log(&self, i: u8) -> String {
        self.get().node(i).skerryd.log()
    }

    /// The last lines of every node's log, for an error message.
    fn logs(&self) -> String {
        let mut s = String::new();
        for n in self.get().nodes() {
            let _ = writeln!(s, "--- {} log tail:\n{}", n.skerryd.node_name(), n.log_tail(15));
        }
        s
    }

    fn pid(&self, i: u8) -> Result<u32> {
        self.get().node(i).skerryd.pid().with_context(|| format!("skerryd of node {i} is not running"))
    }

    fn mem(&self, i: u8) -> Result<Mem> {
        let pid = self.pid(i)?;
        sys::mem_of(pid).with_context(|| format!("reading /proc/{pid}/status of node {i}'s skerryd"))
    }

    /// Runs a blocking harness call on a blocking thread.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&TestCluster) -> T + Send + 'static) -> Result<T> {
        let c = self.cluster.clone().expect("present until dropped");
        tokio::task::spawn_blocking(move || f(&c)).await.map_err(|e| anyhow!("{e}"))
    }

    async fn remove(mut self) {
        self.keep();
        if let Some(c) = self.cluster.take() {
            let _ = tokio::task::spawn_blocking(move || drop(c)).await;
        }
    }

    fn keep(&self) {
        let (Some(dir), Some(c)) = (&self.keep_logs, &self.cluster) else { return };
        let _ = std::fs::create_dir_all(dir);
        for n in c.nodes() {
            let to = dir.join(format!("{}-{}.log", self.name, n.skerryd.node_name().trim_start_matches("sk-")));
            let _ = std::fs::copy(n.skerryd.log_path(), to);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.keep();
    }
}

/// Polls `cond` every `every` until it holds; an error naming `what` after `timeout`.
async fn wait_for<F, Fut>(timeout: Duration, every: Duration, what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {} s waiting until {what}", timeout.as_secs());
        }
        tokio::time::sleep(every).await;
    }
}

/// Whether a Node object has the condition Ready=True.
fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The Ready nodes `socket`'s skerryd lists.
async fn ready_nodes(socket: &Path) -> Result<usize> {
    let (code, body) = http::get(socket, "/api/v1/nodes").await?;
    if code != 200 {
        return Ok(0);
    }
    let list: Value = serde_json::from_slice(&body).context("parsing the node list")?;
    Ok(list["items"].as_array().map(|items| items.iter().filter(|n| is_ready(n)).count()).unwrap_or(0))
}

/// The leader among servers `of`: the last `leading` line of its log is not followed by
/// `leadership lost` (as tests/tests/e2e_cluster.rs finds it).
fn leader(c: &Running, of: &[u8]) -> Option<u8> {
    of.iter().copied().find(|&i| {
        let log = c.log(i);
        let led = log.rfind(LEADING);
        led.is_some() && log.rfind(LEADERSHIP_LOST) < led
    })
}

/// Waits until all `servers` nodes are Ready, the joined ones are voters and one leads.
async fn settled_servers(c: &Running, servers: u8, timeout: Duration) -> Result<u8> {
    let all: Vec<u8> = (1..=servers).collect();
    let socket = c.socket(1);
    wait_for(timeout, Duration::from_millis(100), &format!("{servers} Ready servers, voters, with a leader"), || {
        let socket = socket.clone();
        let all = all.clone();
        let voters = (2..=servers).all(|i| c.log(i).contains(VOTER));
        let led = leader(c, &all).is_some();
        async move { Ok(voters && led && ready_nodes(&socket).await? == all.len()) }
    })
    .await
    .map_err(|e| anyhow!("{e}\n{}", c.logs()))?;
    leader(c, &all).context("the leader went away")
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"key": "value"}})
}

/// Creates ConfigMap `name` over `conn`; an error unless skerryd answers 201 Created.
async fn create(conn: &mut Conn, name: &str) -> Result<Duration> {
    let body = configmap(name);
    let started = Instant::now();
    let (code, answer) = conn.request("POST", CONFIGMAPS, Some(&body)).await?;
    let took = started.elapsed();
    if code != 201 {
        bail!("creating ConfigMap {name}: HTTP {code}: {}", String::from_utf8_lossy(&answer));
    }
    Ok(took)
}

/// `n` sequential creates on one kept-alive connection (after [`WARM_UP`] uncounted ones).
async fn latency(socket: &Path, prefix: &str, n: usize) -> Result<Vec<Duration>> {
    let mut conn = Conn::connect(socket).await?;
    for i in 0..WARM_UP {
        create(&mut conn, &format!("{prefix}-warm-{i}")).await?;
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        times.push(create(&mut conn, &format!("{prefix}-{i}")).await?);
    }
    Ok(times)
}

/// `writers` concurrent writers, `each` creates apiece, each on its own connection (connected
/// and warmed with one write first); returns the wall time of all and every write's latency.
async fn throughput(socket: &Path, prefix: &str, writers: usize, each: usize) -> Result<Throughput> {
    let mut conns = Vec::with_capacity(writers);
    for w in 0..writers {
        let mut conn = Conn::connect(socket).await?;
        create(&mut conn, &format!("{prefix}-warm-{w}")).await?;
        conns.push(conn);
    }
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let prefix = prefix.to_string();
        set.spawn(async move {
            let mut times = Vec::with_capacity(each);
            for i in 0..each {
                times.push(create(&mut conn, &format!("{prefix}-{w}-{i}")).await?);
            }
            anyhow::Ok(times)
        });
    }
    let mut times = Vec::with_capacity(writers * each);
    while let Some(r) = set.join_next().await {
        times.extend(r??);
    }
    Ok(Throughput { wall: started.elapsed(), times })
}

struct Throughput {
    wall: Duration,
    times: Vec<Duration>,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.times.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Median, p90, p99 and max (nearest rank).
#[derive(Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(times: &[Duration]) -> Percentiles {
        let mut t = times.to_vec();
        t.sort();
        let rank = |p: f64| -> Duration {
            if t.is_empty() {
                return Duration::ZERO;
            }
            let k = ((p / 100.0) * t.len() as f64).ceil() as usize;
            t[k.clamp(1, t.len()) - 1]
        };
        Percentiles { p50: rank(50.0), p90: rank(90.0), p99: rank(99.0), max: t.last().copied().unwrap_or_default() }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b.max(1e-12))
}

struct Writes {
    single: Vec<Duration>,
    leader: Vec<Duration>,
    follower: Vec<Duration>,
    leader_node: u8,
    follower_node: u8,
    single_tp: Throughput,
    leader_tp: Throughput,
}

async fn writes(args: &ClusterArgs, bins: &Bins, timeout: Duration) -> Result<Writes> {
    let builder = |n: u8| TestCluster::builder(n).bin_dir(bins.dir.clone()).args(&["--log-level", &args.log_level]);

    let one = Running::start(builder(1), "writes-1", args).await?;
    settled_servers(&one, 1, timeout).await?;
    eprintln!("one server: {} sequential writes", args.writes);
    let single = latency(&one.socket(1), "seq", args.writes).await?;
    eprintln!("one server: {} writers × {} writes", args.writers, args.writes_each);
    let single_tp = throughput(&one.socket(1), "tp", args.writers, args.writes_each).await?;
    one.remove().await;

    let three = Running::start(builder(3).servers(3), "writes-3", args).await?;
    let leader_node = settled_servers(&three, 3, timeout).await?;
    let follower_node = (1..=3).find(|&i| i != leader_node).context("no follower")?;
    eprintln!("three servers: {} sequential writes on the leader (node {leader_node})", args.writes);
    let leader_times = latency(&three.socket(leader_node), "seq-leader", args.writes).await?;
    eprintln!("three servers: {} sequential writes on a follower (node {follower_node})", args.writes);
    let follower = latency(&three.socket(follower_node), "seq-follower", args.writes).await?;
    eprintln!("three servers: {} writers × {} writes on the leader", args.writers, args.writes_each);
    let leader_tp = throughput(&three.socket(leader_node), "tp", args.writers, args.writes_each).await?;
    // Leadership must not have moved during the runs, or leader and follower figures are mixed.
    if leader(&three, &[1, 2, 3]) != Some(leader_node) {
        bail!("the leader changed during the write runs (was node {leader_node}):\n{}", three.logs());
    }
    three.remove().await;
    Ok(Writes { single, leader: leader_times, follower, leader_node, follower_node, single_tp, leader_tp })
}

/// The first log line holding `needle`, and its timestamp (tracing's RFC 3339 UTC prefix).
fn logged_at(log: &str, needle: &str) -> Result<Option<SystemTime>> {
    let Some(line) = log.lines().find(|l| l.contains(needle)) else { return Ok(None) };
    let stamp = line.split_whitespace().next().unwrap_or("");
    let ts: jiff::Timestamp =
        stamp.parse().with_context(|| format!("no timestamp at the start of the log line {line:?}"))?;
    Ok(Some(SystemTime::from(ts)))
}

fn since(later: SystemTime, earlier: SystemTime, what: &str) -> Result<Duration> {
    later.duration_since(earlier).map_err(|_| anyhow!("{what} is before the agent's `{JOINING}` line"))
}

/// One join: times from the agent's `joining the cluster` log line.
struct Join {
    /// To `joined the cluster` (the token exchange; credentials saved).
    joined: Duration,
    /// To `registered this node` (its Node created with Ready=True).
    registered: Duration,
    /// To the first time node 1's API showed the agent's Node Ready.
    ready_on_server: Duration,
}

/// Watches, from a thread of its own, for node 1 of the cluster being started and then for its
/// API to show [`AGENT`] Ready; returns the wall-clock time of the first such sighting. Node 1's
/// socket is found from the process tree (`--node-name sk-node-1 --socket …` of a skerryd this
/// process started), so the watch runs while the harness still starts the agent.
fn watch_ready(stop: Arc<AtomicBool>, timeout: Duration) -> std::thread::JoinHandle<Result<SystemTime>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let me = std::process::id();
        let mut socket: Option<PathBuf> = None;
        let path = format!("/api/v1/nodes/{AGENT}");
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            match &socket {
                None => {
                    socket = sys::descendants(me).into_iter().find_map(|(_, argv)| {
                        let skerryd = argv.first().is_some_and(|a| a.ends_with("/skerryd"));
                        (skerryd && sys::flag_value(&argv, "--node-name") == Some("sk-node-1"))
                            .then(|| sys::flag_value(&argv, "--socket").map(PathBuf::from))
                            .flatten()
                    });
                }
                Some(s) => {
                    if let Ok(r) = skerry_tests::http::request(s, "GET", &path, None) {
                        let seen = SystemTime::now();
                        if r.status == 200 && serde_json::from_slice::<Value>(&r.body).is_ok_and(|n| is_ready(&n)) {
                            return Ok(seen);
                        }
                    }
                }
            }
            // Looking for the process reads all of /proc: less often than the API poll.
            std::thread::sleep(Duration::from_millis(if socket.is_some() { 5 } else { 20 }));
        }
        match socket {
            None => bail!("node 1's skerryd never appeared among this process's children"),
            Some(_) => bail!("node 1 did not show {AGENT} Ready within {} s", timeout.as_secs()),
        }
    })
}

async fn join_once(args: &ClusterArgs, bins: &Bins, rep: usize, timeout: Duration) -> Result<(Join, Running)> {
    let builder = TestCluster::builder(2).servers(1).bin_dir(bins.dir.clone()).args(&["--log-level", &args.log_level]);
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_ready(stop.clone(), timeout);
    let started = Running::start(builder, &format!("join-{rep}"), args).await;
    if started.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let watched = tokio::task::spawn_blocking(move || watch.join()).await?;
    let c = started?;
    let ready_at = watched
        .map_err(|p| anyhow!("the Ready watch failed: {}", crate::panic_text(&p)))?
        .map_err(|e| anyhow!("{e}\n{}", c.logs()))?;
    let mut stamps = None;
    wait_for(timeout, Duration::from_millis(50), &format!("`{REGISTERED}` in the agent's log"), || {
        let log = c.log(2);
        let found = (|| -> Result<Option<_>> {
            let (Some(a), Some(b), Some(r)) =
                (logged_at(&log, JOINING)?, logged_at(&log, JOINED)?, logged_at(&log, REGISTERED)?)
            else {
                return Ok(None);
            };
            Ok(Some((a, b, r)))
        })();
        let done = match found {
            Ok(Some(s)) => {
                stamps = Some(s);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        async move { done }
    })
    .await
    .map_err(|e| anyhow!("{e}\n{}", c.logs()))?;
    let (joining, joined, registered) = stamps.context("checked above")?;
    let join = Join {
        joined: since(joined, joining, JOINED)?,
        registered: since(registered, joining, REGISTERED)?,
        ready_on_server: since(ready_at, joining, "the first Ready sighting on node 1")?,
    };
    Ok((join, c))
}

struct Memory {
    rows: Vec<MemRow>,
    pods: usize,
    /// From the first pod create to all Running on the agent (seen from node 1).
    pods_running: Duration,
}

/// The agent's (and, for comparison, the server's) skerryd memory idle and with `args.pods`
/// pods pinned to the agent.
async fn memory(c: &Running, args: &ClusterArgs, timeout: Duration) -> Result<Memory> {
    let settle = Duration::from_secs(args.settle);
    let mut rows = Vec::new();
    eprintln!("memory: {} s of quiet", args.settle);
    tokio::time::sleep(settle).await;
    let idle = format!("idle, Ready + {} s", args.settle);
    rows.push(MemRow {
        what: "agent skerryd".into(),
        state: idle.clone(),
        mem: c.mem(2)?,
        target: Some(IDLE_TARGET_KIB),
    });
    rows.push(MemRow { what: "server skerryd".into(), state: idle, mem: c.mem(1)?, target: None });

    eprintln!("memory: {} pods on the agent", args.pods);
    c.blocking(|c| c.node(2).import_busybox()).await?;
    let socket = c.socket(1);
    let mut conn = Conn::connect(&socket).await?;
    let started = Instant::now();
    for i in 0..args.pods {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("bench-{i}")},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": AGENT},
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}],
            },
        });
        let (code, body) = conn.request("POST", PODS, Some(&pod)).await?;
        if code != 201 {
            bail!("creating pod bench-{i}: HTTP {code}: {}", String::from_utf8_lossy(&body));
        }
    }
    let want = args.pods;
    wait_for(timeout, Duration::from_millis(100), &format!("{want} pods Running on {AGENT}"), || {
        let socket = socket.clone();
        async move {
            let (code, body) = http::get(&socket, PODS).await?;
            if code != 200 {
                return Ok(false);
            }
            let list: Value = serde_json::from_slice(&body).context("parsing the pod list")?;
            let running = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p.pointer("/spec/nodeName") == Some(&json!(AGENT))
                        && p.pointer("/status/phase") == Some(&json!("Running"))
                })
                .count();
            Ok(running == want)
        }
    })
    .await
    .map_err(|e| anyhow!("{e}\n{}", c.logs()))?;
    let pods_running = started.elapsed();
    tokio::time::sleep(settle).await;
    let state = format!("{} pods Running on the agent + {} s", args.pods, args.settle);
    rows.push(MemRow {
        what: "agent skerryd".into(),
        state: state.clone(),
        mem: c.mem(2)?,
        target: Some(PODS_TARGET_KIB),
    });
    rows.push(MemRow { what: "server skerryd".into(), state, mem: c.mem(1)?, target: None });
    Ok(Memory { rows, pods: args.pods, pods_running })
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_default()
}

fn containerd_version() -> String {
    std::process::Command::new("/usr/bin/containerd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(2).map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    let bins = Bins::find()?;
    let timeout = Duration::from_secs(args.timeout);
    let rev = crate::git_rev();
    let mut loads = vec![format!("{} at the start", load())];
    let w = writes(&args, &bins, timeout).await?;
    loads.push(format!("{} after the write runs", load()));

    let mut joins = Vec::new();
    let mut mem = None;
    for rep in 1..=args.joins.max(1) {
        let (j, c) = join_once(&args, &bins, rep, timeout).await?;
        eprintln!(
            "join {rep}/{}: joined {}, registered {}, Ready on the server {}",
            args.joins,
            ms(j.joined),
            ms(j.registered),
            ms(j.ready_on_server)
        );
        joins.push(j);
        if rep == args.joins.max(1) {
            mem = Some(memory(&c, &args, timeout).await?);
        }
        c.remove().await;
    }
    loads.push(format!("{} at the end", load()));
    let report = render(&args, &rev, &w, &joins, mem.as_ref().context("memory was measured")?, &loads);
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

fn render(args: &ClusterArgs, rev: &str, w: &Writes, joins: &[Join], mem: &Memory, loads: &[String]) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Skerry benchmark: clusters\n");
    let _ = writeln!(r, "- Machine: {}", sys::machine_line(&containerd_version()));
    let _ = writeln!(r, "- Skerry: commit {rev}, release build");
    let _ = writeln!(r, "- Date: {}", jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"));
    let _ = writeln!(r, "- Load average (1 min): {}", loads.join(", "));
    let _ = writeln!(
        r,
        "- Command: `sudo bench/run cluster` ({} sequential writes, {} writers × {} writes, {} joins, {} pods)\n",
        args.writes, args.writers, args.writes_each, args.joins, args.pods
    );
    let _ = writeln!(r, "Every node is a release `skerryd` in its own network namespace on one test switch, with its own containerd, data dir and socket (the e2e harness's `TestCluster`); one cluster runs at a time.\n");

    let _ = writeln!(r, "## Write latency\n");
    let _ = writeln!(r, "Sequential creates of a small ConfigMap (`POST {CONFIGMAPS}`, 201 Created) on one kept-alive HTTP connection to the node's Unix socket, after {WARM_UP} uncounted ones. One server: `builder(1)`, a cluster of one (Raft with itself). Three servers: `builder(3).servers(3)`; a follower forwards the write to the leader and answers once it has applied it.\n");
    let _ = writeln!(r, "| where | writes | median | p90 | p99 | max | median / one server |");
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    let base = Percentiles::of(&w.single).p50.as_secs_f64();
    for (what, times) in [
        ("one server".to_string(), &w.single),
        (format!("three servers: leader (node {})", w.leader_node), &w.leader),
        (format!("three servers: follower (node {}), forwarded", w.follower_node), &w.follower),
    ] {
        let p = Percentiles::of(times);
        let _ = writeln!(
            r,
            "| {what} | {} | {} | {} | {} | {} | {} |",
            times.len(),
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.max),
            ratio(p.p50.as_secs_f64(), base)
        );
    }

    let _ = writeln!(r, "\n## Write throughput\n");
    let _ = writeln!(r, "{} writers at once, each on its own kept-alive connection (connected and warmed with one write first), {} creates each; writes/s = all writes / the wall time from the start until the last answer.\n", args.writers, args.writes_each);
    let _ = writeln!(r, "| where | writes | wall time | writes/s | per-write median | p99 | writes/s / one server |");
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    let base = w.single_tp.per_second();
    for (what, tp) in [
        ("one server".to_string(), &w.single_tp),
        (format!("three servers: leader (node {})", w.leader_node), &w.leader_tp),
    ] {
        let p = Percentiles::of(&tp.times);
        let _ = writeln!(
            r,
            "| {what} | {} | {} | {:.0} | {} | {} | {} |",
            tp.times.len(),
            secs(tp.wall),
            tp.per_second(),
            ms(p.p50),
            ms(p.p99),
            ratio(tp.per_second(), base)
        );
    }

    let _ = writeln!(r, "\n## Agent join → Ready\n");
    let _ = writeln!(r, "`builder(2).servers(1)`, a fresh cluster each run: node 2 starts as `skerryd --join https://<node 1>:6443 --token <agent token>`. Times from the agent's `{JOINING}` log line (its timestamp): to its `{JOINED}` line (token exchange, credentials saved), to its `{REGISTERED}` line (its Node created with Ready=True), and to the first time node 1's API (`GET /api/v1/nodes/{AGENT}`, polled every 5 ms from this process) showed the Node Ready (the same machine's clock).\n");
    let _ = writeln!(r, "| to | median | min | max |");
    let _ = writeln!(r, "|---|---:|---:|---:|");
    for (what, f) in [
        (JOINED, &(|j: &Join| j.joined) as &dyn Fn(&Join) -> Duration),
        (REGISTERED, &|j: &Join| j.registered),
        ("Ready on the server", &|j: &Join| j.ready_on_server),
    ] {
        let s = Stats::of(&joins.iter().map(f).collect::<Vec<_>>());
        let _ = writeln!(r, "| {what} | {} | {} | {} |", ms(s.median), ms(s.min), ms(s.max));
    }
    let fmt = |f: &dyn Fn(&Join) -> Duration| {
        joins.iter().map(|j| format!("{:.1}", f(j).as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        r,
        "\nRuns (ms): joined [{}]; registered [{}]; Ready on the server [{}].",
        fmt(&|j| j.joined),
        fmt(&|j| j.registered),
        fmt(&|j| j.ready_on_server)
    );

    let _ = writeln!(r, "\n## Agent memory\n");
    let _ = writeln!(r, "On the last join run's cluster: `VmRSS`, `VmHWM` (peak since start) and threads from `/proc/PID/status` of the agent's skerryd, and of the server's for comparison; idle once the agent was Ready and {} s passed, then with {} busybox pods (`sleep 3600`, `nodeSelector: {{kubernetes.io/hostname: {AGENT}}}`, image imported on the agent) all Running (seen from node 1) and {} s more. The {} pods took {} from the first create to all Running.\n", args.settle, mem.pods, args.settle, mem.pods, secs(mem.pods_running));
    crate::memory_table(&mut r, &mem.rows);
    let fmt =
        |v: &[Duration]| v.iter().map(|d| format!("{:.2}", d.as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(r, "\nRaw sequential write latencies (ms), in order:\n");
    let _ = writeln!(r, "- one server: [{}]", fmt(&w.single));
    let _ = writeln!(r, "- leader: [{}]", fmt(&w.leader));
    let _ = writeln!(r, "- follower: [{}]", fmt(&w.follower));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let t: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&t);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (
                Duration::from_millis(50),
                Duration::from_millis(90),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
        let one = Percentiles::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99), (Duration::from_millis(7), Duration::from_millis(7)));
    }

    #[test]
    fn log_timestamps_are_read_from_tracing_lines() {
        let log = "2026-12-03T10:00:00.000000Z  INFO skerryd::daemon: starting\n2026-12-03T10:00:01.250000Z  INFO skerryd::daemon: joining the cluster server=https://10.251.7.1:6443\n";
        let at = logged_at(log, JOINING).unwrap().unwrap();
        let start = logged_at(log, "starting").unwrap().unwrap();
        assert_eq!(at.duration_since(start).unwrap(), Duration::from_millis(1250));
        assert!(logged_at(log, REGISTERED).unwrap().is_none());
        assert!(logged_at("garbage joining the cluster", JOINING).is_err());
    }

    #[test]
    fn ready_needs_the_ready_condition_true() {
        assert!(is_ready(&json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})));
        assert!(!is_ready(&json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})));
        assert!(!is_ready(&json!({"metadata": {}})));
    }
}
