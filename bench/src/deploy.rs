//! The `deploy` scenario: a Deployment of N replicas to all available, its rolling update and its
//! deletion, against the raw-containerd floor for the same N containers and, with `--swarm`,
//! Docker Swarm's `docker service create/update/rm` on the same machine.
//!
//! Skerry and floor runs are interleaved on the bench's own containerd and skerryd (as the pod
//! benchmark); Swarm runs afterwards, when they are gone, on its own dockerd and containerd
//! ([`crate::swarm::Swarm`]). See bench/README.md, "Deployments".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use skerry_tests::images::ImageBuilder;

use crate::swarm::{HostNet, Swarm};
use crate::{floor_once, http, secs, Apply, Env, Skerryd, Stats, Timeline, DETECT, IMAGE, POD_IMAGE};

/// The second tag of the bench image: the rolling update changes the template's image to it.
const IMAGE2: &str = "docker.io/library/busybox:bench2";
const POD_IMAGE2: &str = "busybox:bench2";
/// Every replica, floor container and Swarm task runs this: long-running, and it exits at once
/// on SIGTERM (a bare `sleep` as PID 1 ignores it and would make every stop wait out the grace
/// period, on both sides).
pub const COMMAND: [&str; 3] = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/bench";

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Replica counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    sizes: Vec<usize>,
    /// Repetitions per size (Skerry and floor, interleaved).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also measure Docker Swarm (installs Debian's docker.io when missing).
    #[arg(long, env = "SKERRY_BENCH_SWARM", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    swarm: bool,
    /// Only Swarm (no skerryd, no floor): for checking the Swarm side alone.
    #[arg(long)]
    swarm_only: bool,
    /// Repetitions per size for Swarm (default: --reps).
    #[arg(long)]
    swarm_reps: Option<usize>,
    /// Swarm's default rolling update (one task at a time, with its 2 s gossip delay per stop)
    /// is measured in every repetition up to this many replicas, and once above it.
    #[arg(long, default_value_t = 10)]
    swarm_default_update_every_rep_max: usize,
    /// Give up on one step after this many seconds (not a measurement threshold).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Where to write the markdown report (it is printed to stdout too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// skerryd's log filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Copy skerryd's log here at the end (also on failure).
    #[arg(long)]
    keep_log: Option<PathBuf>,
    /// Record `perf record -a -e cpu-clock` (system-wide samples) around the first create and
    /// floor run of each size into this directory (`create-N.data`, `floor-N.data`); read them
    /// with `perf report -i FILE --sort comm` to see which processes the time goes to.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// Also watch the pods during the create runs and report when the last one was created,
    /// bound and Running (the watch costs skerryd a little).
    #[arg(long)]
    timeline: bool,
}

/// Skerry, floor and Swarm figures for one replica count.
#[derive(Default)]
struct Size {
    n: usize,
    create: Vec<Duration>,
    update: Vec<Duration>,
    delete: Vec<Duration>,
    floor: Vec<Duration>,
    swarm_create: Vec<Duration>,
    swarm_update_default: Vec<Duration>,
    swarm_update_all: Vec<Duration>,
    swarm_delete: Vec<Duration>,
    timelines: Vec<Timeline>,
}

/// The 1-minute load average now: the machine is often shared, and Swarm runs after Skerry.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_default()
}

struct SwarmInfo {
    version: String,
    /// What the Swarm run left in the root namespace (links, nftables), compared with before.
    teardown: Vec<String>,
    /// What of its own namespace, veth, directories, processes and cgroups is still there.
    leftovers: Vec<String>,
    error: Option<String>,
}

pub async fn deploy(args: DeployArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    // At the start: HEAD may move during a long run on a shared tree.
    let rev = crate::git_rev();
    let mut sizes: Vec<Size> = args.sizes.iter().map(|&n| Size { n, ..Default::default() }).collect();
    let mut containerd_version = String::new();
    let mut loads = Vec::new();
    if !args.swarm_only {
        loads.push(format!("{} at the start of the Skerry runs", load()));
        let env = Env::start().await?;
        let floor = env.floor().await?;
        containerd_version = floor.version().await?;
        let skerryd = Skerryd::start(&env, &args.log_level, &[]).await?;
        let result = measure_skerry(&args, &env, &floor, &skerryd, &mut sizes, timeout).await;
        skerryd.finish(args.keep_log.as_deref(), result.is_ok()).await;
        drop(floor);
        drop(env);
        result?;
    }
    let swarm = if args.swarm || args.swarm_only {
        loads.push(format!("{} at the start of the Swarm runs", load()));
        let rootfs_dir = tempfile::Builder::new().prefix("sk-bench-rootfs-").tempdir_in("/tmp")?;
        let rootfs = rootfs_dir.path().join("rootfs.tar");
        // The same one-layer busybox rootfs Skerry and the floor run, as `docker import` takes it.
        std::fs::write(&rootfs, ImageBuilder::new(IMAGE).build()?.layer)?;
        Some(measure_swarm(&args, &rootfs, &mut sizes, timeout).await)
    } else {
        None
    };
    loads.push(format!("{} at the end", load()));
    let report = render(&args, &rev, &containerd_version, &sizes, swarm.as_ref(), &loads);
    print!("{report}");
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    if let Some(SwarmInfo { error: Some(e), .. }) = &swarm {
        bail!("the Swarm side failed: {e}");
    }
    Ok(())
}

async fn measure_skerry(
    args: &DeployArgs,
    env: &Env,
    floor: &skerryd::runtime::ContainerdRuntime,
    skerryd: &Skerryd,
    sizes: &mut [Size],
    timeout: Duration,
) -> Result<()> {
    eprintln!("skerryd is up (pid {}); importing the images", skerryd.pid());
    let archive2 = env.dir().join("busybox-bench2.tar");
    ImageBuilder::new(IMAGE2).cmd(["sleep", "3600"]).write_oci(&archive2, false)?;
    for a in [&env.image_archive, &archive2] {
        skerryd.cli(&["image", "import", &a.to_string_lossy()]).await?;
    }
    // Warm-up, not counted: unpacks the snapshot, warms the CLI binary and the controllers.
    eprintln!("warm-up");
    let (w1, w2) = write_manifests(env.dir(), 2)?;
    deploy_create(skerryd, &w1, 2, timeout).await?;
    deploy_update(skerryd, &w2, 2, timeout).await?;
    deploy_delete(skerryd, timeout).await?;
    floor_once(floor, env, 2, &COMMAND).await?;
    for size in sizes.iter_mut() {
        let n = size.n;
        let (v1, v2) = write_manifests(env.dir(), n)?;
        for rep in 0..args.reps {
            let seen: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
            let watch = if args.timeline {
                let sink = seen.clone();
                let on_event =
                    move |at: Instant, ev: Value| sink.lock().unwrap_or_else(|e| e.into_inner()).push((at, ev));
                Some(http::watch(&skerryd.socket, "/api/v1/namespaces/default/pods?watch=true", on_event).await?)
            } else {
                None
            };
            let perf =
                if rep == 0 { Perf::start(args.perf_dir.as_deref(), &format!("create-{n}")).await? } else { None };
            let started = Instant::now();
            let c = deploy_create(skerryd, &v1, n, timeout).await;
            drop(perf);
            let c = c?;
            if let Some(watch) = watch {
                tokio::time::sleep(Duration::from_millis(100)).await;
                watch.abort();
                let events = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
                size.timelines.push(Timeline::from_events(started, &events));
            }
            let u = deploy_update(skerryd, &v2, n, timeout).await?;
            let d = deploy_delete(skerryd, timeout).await?;
            let perf =
                if rep == 0 { Perf::start(args.perf_dir.as_deref(), &format!("floor-{n}")).await? } else { None };
            let f = floor_once(floor, env, n, &COMMAND).await;
            drop(perf);
            let f = f?;
            eprintln!(
                "N={n} run {}/{}: skerry create {} update {} delete {}; floor {}",
                rep + 1,
                args.reps,
                secs(c),
                secs(u),
                secs(d),
                secs(f)
            );
            size.create.push(c);
            size.update.push(u);
            size.delete.push(d);
            size.floor.push(f);
        }
    }
    Ok(())
}

/// A running `perf record -a`; dropping it stops it (SIGINT by PID) and waits until it wrote
/// its file.
struct Perf(std::process::Child);

impl Perf {
    async fn start(dir: Option<&Path>, name: &str) -> Result<Option<Perf>> {
        let Some(dir) = dir else { return Ok(None) };
        std::fs::create_dir_all(dir)?;
        let child = std::process::Command::new("perf")
            .args(["record", "-a", "-q", "-e", "cpu-clock", "-F", "997", "-o"])
            .arg(dir.join(format!("{name}.data")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("running perf (apt-get install linux-perf)")?;
        // perf needs a moment to open its events; this is outside the measured time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Some(Perf(child)))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// A Deployment `bench` of `n` replicas, with the template's image at tag `bench` (v1) and
/// `bench2` (v2); no probes, default strategy (RollingUpdate, 25 % surge and unavailable).
fn write_manifests(dir: &Path, n: usize) -> Result<(PathBuf, PathBuf)> {
    let cmd = COMMAND.iter().map(|a| serde_json::to_string(a).expect("a string")).collect::<Vec<_>>().join(", ");
    let doc = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bench\nspec:\n  replicas: {n}\n  selector:\n    matchLabels:\n      app: bench\n  template:\n    metadata:\n      labels:\n        app: bench\n    spec:\n      containers:\n      - name: main\n        image: {image}\n        imagePullPolicy: IfNotPresent\n        command: [{cmd}]\n"
        )
    };
    let v1 = dir.join(format!("deploy-{n}-v1.yaml"));
    let v2 = dir.join(format!("deploy-{n}-v2.yaml"));
    std::fs::write(&v1, doc(POD_IMAGE))?;
    std::fs::write(&v2, doc(POD_IMAGE2))?;
    Ok((v1, v2))
}

async fn get_deployment(skerryd: &Skerryd) -> Result<Option<Value>> {
    let (code, body) = http::get(&skerryd.socket, DEPLOYMENT).await?;
    match code {
        200 => Ok(Some(serde_json::from_slice(&body).context("parsing the Deployment")?)),
        404 => Ok(None),
        _ => bail!("GET {DEPLOYMENT}: HTTP {code}: {}", String::from_utf8_lossy(&body)),
    }
}

fn int(d: &Value, p: &str) -> i64 {
    d.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// kubectl's `rollout status` for a Deployment: the controller saw the current generation,
/// every replica is updated and available, and no old replica is left.
fn rollout_complete(d: &Value, n: usize) -> bool {
    let n = n as i64;
    int(d, "/status/observedGeneration") >= int(d, "/metadata/generation")
        && int(d, "/spec/replicas") == n
        && int(d, "/status/updatedReplicas") == n
        && int(d, "/status/replicas") == n
        && int(d, "/status/availableReplicas") == n
}

/// Pods of the bench Deployment that are not being deleted: (total, Running).
async fn bench_pods(skerryd: &Skerryd) -> Result<(usize, usize)> {
    let (code, body) = http::get(&skerryd.socket, "/api/v1/namespaces/default/pods?labelSelector=app%3Dbench").await?;
    if code != 200 {
        bail!("listing pods: HTTP {code}: {}", String::from_utf8_lossy(&body));
    }
    let list: Value = serde_json::from_slice(&body)?;
    let live: Vec<&Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let running = live.iter().filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")).count();
    Ok((live.len(), running))
}

/// Runs `skerry apply -f manifest` (timed from its start) and polls the Deployment every 5 ms
/// until a generation newer than `after_generation` has rolled out to `n` available replicas
/// and all `n` live pods are Running.
async fn apply_until_rolled_out(
    skerryd: &Skerryd,
    manifest: &Path,
    n: usize,
    after_generation: i64,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut apply = Apply::start(skerryd, manifest)?;
    let mut last = Value::Null;
    loop {
        let applied = apply.done().await?;
        if let Some(d) = get_deployment(skerryd).await? {
            if applied && int(&d, "/metadata/generation") > after_generation && rollout_complete(&d, n) {
                // The Deployment's counts come from its ReplicaSets; the pods must agree.
                let (live, running) = bench_pods(skerryd).await?;
                if live == n && running == n {
                    return Ok(started.elapsed());
                }
            }
            last = d;
        }
        if started.elapsed() > timeout {
            bail!(
                "Deployment bench ({n} replicas) not rolled out after {}s; status: {}\n{}",
                timeout.as_secs(),
                last.get("status").cloned().unwrap_or(Value::Null),
                skerryd.logs()
            );
        }
        tokio::time::sleep(DETECT).await;
    }
}

async fn deploy_create(skerryd: &Skerryd, manifest: &Path, n: usize, timeout: Duration) -> Result<Duration> {
    if get_deployment(skerryd).await?.is_some() {
        bail!("Deployment bench exists before the run");
    }
    apply_until_rolled_out(skerryd, manifest, n, 0, timeout).await
}

async fn deploy_update(skerryd: &Skerryd, manifest: &Path, n: usize, timeout: Duration) -> Result<Duration> {
    let generation =
        get_deployment(skerryd).await?.map(|d| int(&d, "/metadata/generation")).context("Deployment bench is gone")?;
    apply_until_rolled_out(skerryd, manifest, n, generation, timeout).await
}

/// `skerry delete deployment bench` until the Deployment, its ReplicaSets and pods are gone from
/// the API and their containers from containerd.
async fn deploy_delete(skerryd: &Skerryd, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    skerryd.cli(&["delete", "deployment", "bench"]).await?;
    loop {
        let (code, body) =
            http::get(&skerryd.socket, "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3Dbench")
                .await?;
        let rs_left = if code == 200 {
            serde_json::from_slice::<Value>(&body)?["items"].as_array().map_or(0, Vec::len)
        } else {
            bail!("listing ReplicaSets: HTTP {code}: {}", String::from_utf8_lossy(&body));
        };
        if rs_left == 0
            && get_deployment(skerryd).await?.is_none()
            && skerryd.pods().await?.is_empty()
            && skerryd.runtime.list_containers().await?.is_empty()
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "Deployment bench: {rs_left} ReplicaSets, pods or containers still there {}s after delete:\n{}",
                timeout.as_secs(),
                skerryd.logs()
            );
        }
        tokio::time::sleep(DETECT).await;
    }
}

async fn measure_swarm(args: &DeployArgs, rootfs: &Path, sizes: &mut [Size], timeout: Duration) -> SwarmInfo {
    if let Err(e) = crate::swarm::ensure_installed() {
        return SwarmInfo {
            version: String::new(),
            teardown: Vec::new(),
            leftovers: Vec::new(),
            error: Some(format!("{e:#}")),
        };
    }
    let before = HostNet::read();
    let (version, leftovers, error) = match Swarm::start(rootfs, POD_IMAGE, POD_IMAGE2).await {
        Err(e) => (String::new(), Vec::new(), Some(format!("{e:#}"))),
        Ok(swarm) => {
            eprintln!("swarm is up (dockerd {}, pid {})", swarm.version, swarm.pid().unwrap_or(0));
            let r = swarm_runs(args, &swarm, sizes, timeout).await;
            let version = swarm.version.clone();
            let footprint = swarm.footprint();
            drop(swarm);
            (version, footprint.leftovers(), r.err().map(|e| format!("{e:#}")))
        }
    };
    let teardown = HostNet::diff(&before, &HostNet::read());
    SwarmInfo { version, teardown, leftovers, error }
}

async fn swarm_runs(args: &DeployArgs, swarm: &Swarm, sizes: &mut [Size], timeout: Duration) -> Result<()> {
    // Warm-up, not counted: the first service also creates Swarm's own state.
    swarm.create("warmup", 2, POD_IMAGE, &COMMAND, timeout).await?;
    swarm.remove("warmup", timeout).await?;
    let reps = args.swarm_reps.unwrap_or(args.reps);
    for size in sizes.iter_mut() {
        let n = size.n;
        let all = n.to_string();
        for rep in 0..reps {
            let c = swarm.create("bench", n, POD_IMAGE, &COMMAND, timeout).await?;
            let mut image = POD_IMAGE;
            let mut line = format!("swarm N={n} run {}/{reps}: create {}", rep + 1, secs(c));
            if n <= args.swarm_default_update_every_rep_max || rep == 0 {
                let u = swarm.update("bench", n, POD_IMAGE2, &[], timeout).await?;
                image = POD_IMAGE2;
                let _ = write!(line, ", update (defaults) {}", secs(u));
                size.swarm_update_default.push(u);
            }
            let next = if image == POD_IMAGE { POD_IMAGE2 } else { POD_IMAGE };
            let u = swarm.update("bench", n, next, &["--update-parallelism", &all], timeout).await?;
            let d = swarm.remove("bench", timeout).await?;
            let _ = write!(line, ", update (parallelism {n}) {}, rm {}", secs(u), secs(d));
            eprintln!("{line}");
            size.swarm_create.push(c);
            size.swarm_update_all.push(u);
            size.swarm_delete.push(d);
        }
    }
    Ok(())
}

fn med(v: &[Duration]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let s = Stats::of(v);
    if v.len() == 1 {
        secs(s.median)
    } else {
        format!("{} ({}–{})", secs(s.median), secs(s.min), secs(s.max))
    }
}

fn ratio(a: &[Duration], b: &[Duration]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    Some(Stats::of(a).median.as_secs_f64() / Stats::of(b).median.as_secs_f64().max(1e-9))
}

fn render(
    args: &DeployArgs,
    rev: &str,
    containerd_version: &str,
    sizes: &[Size],
    swarm: Option<&SwarmInfo>,
    loads: &[String],
) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Skerry benchmark: Deployments\n");
    let _ = writeln!(
        r,
        "- Machine: {}",
        crate::sys::machine_line(if containerd_version.is_empty() { "(not started)" } else { containerd_version })
    );
    let _ = writeln!(r, "- Skerry: commit {rev}, release build");
    if let Some(s) = swarm {
        let v = if s.version.is_empty() {
            "not started".to_string()
        } else {
            format!("dockerd {} (Debian's docker.io)", s.version)
        };
        let _ = writeln!(r, "- Swarm: {v}");
    }
    let _ = writeln!(r, "- Date: {}", jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"));
    let _ = writeln!(r, "- Load average (1 min): {}", loads.join(", "));
    let swarm_flag = if args.swarm || args.swarm_only { " --swarm" } else { "" };
    let _ = writeln!(
        r,
        "- Command: `sudo bench/run deploy{swarm_flag}` (sizes {:?}, {} runs each)\n",
        args.sizes, args.reps
    );
    let _ = writeln!(r, "Every replica, floor container and Swarm task runs the same one-layer busybox image (imported, never pulled) with `sh -c \"trap 'exit 0' TERM; sleep 3600 & wait\"`.\n");

    let _ = writeln!(r, "## Rollout: from the request to all N replicas available\n");
    let _ = writeln!(r, "skerry: `skerry apply -f` of a Deployment (no probes, default strategy) until `observedGeneration ≥ generation`, `updatedReplicas == replicas == availableReplicas == N` and all N pods `Running` (Deployment polled every 5 ms over the Unix socket).");
    let _ = writeln!(r, "floor: the same N containers created and started in parallel straight through containerd until every task is Running (runs interleaved with skerry's).");
    let _ = writeln!(r, "swarm: `docker service create --detach --replicas N --network host` until N tasks are running (tasks polled every 20 ms; `--detach=false` would add the CLI's 5 s stability wait).\n");
    let _ = writeln!(r, "Medians (min–max).\n");
    let _ = writeln!(
        r,
        "| N | skerry | floor | skerry / floor | target ≤ 1.5× | swarm | swarm / skerry | target ≥ 5× (N = 10) |"
    );
    let _ = writeln!(r, "|---:|---:|---:|---:|:---:|---:|---:|:---:|");
    for s in sizes {
        let f = ratio(&s.create, &s.floor);
        let w = ratio(&s.swarm_create, &s.create);
        let fmt = |x: Option<f64>| x.map_or("—".into(), |x| format!("{x:.2}×"));
        let met = |ok: Option<bool>| match ok {
            None => "—",
            Some(true) => "met",
            Some(false) => "**missed**",
        };
        let swarm_target = if s.n == 10 { met(w.map(|w| w >= 5.0)) } else { "—" };
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.n,
            med(&s.create),
            med(&s.floor),
            fmt(f),
            met(f.map(|f| f <= 1.5)),
            med(&s.swarm_create),
            fmt(w),
            swarm_target
        );
    }

    if sizes.iter().any(|s| !s.timelines.is_empty()) {
        let _ = writeln!(r, "\nWhere skerry's create time goes (`--timeline`: a pod watch during the runs; times since `skerry apply` started, medians over runs):\n");
        let _ = writeln!(r, "| N | last pod created | last pod bound | last pod Running | created → bound, per pod (median, max) | bound → Running, per pod (median, max) |");
        let _ = writeln!(r, "|---:|---:|---:|---:|---:|---:|");
        for s in sizes.iter().filter(|s| !s.timelines.is_empty()) {
            let m = |f: &dyn Fn(&Timeline) -> Duration| {
                secs(Stats::of(&s.timelines.iter().map(f).collect::<Vec<_>>()).median)
            };
            let pooled = |f: &dyn Fn(&Timeline) -> &Vec<Duration>| {
                let st = Stats::of(&s.timelines.iter().flat_map(|t| f(t).iter().copied()).collect::<Vec<_>>());
                format!("{}, {}", secs(st.median), secs(st.max))
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} | {} |",
                s.n,
                m(&|t| t.last_created),
                m(&|t| t.last_bound),
                m(&|t| t.last_running),
                pooled(&|t| &t.to_bound),
                pooled(&|t| &t.to_running)
            );
        }
    }

    let _ = writeln!(r, "\n## Rolling update: from the request to the rollout complete\n");
    let _ = writeln!(r, "skerry: `skerry apply -f` of the same Deployment with the template's image changed (`busybox:bench` → `busybox:bench2`, the same content), until kubectl's `rollout status` would say done (new generation observed, all replicas updated and available, no old replica left) and all N pods are Running. Default strategy: maxSurge 25 %, maxUnavailable 25 %.");
    let _ = writeln!(r, "swarm: `docker service update --detach --image …` until N tasks of the new image run and none of the old one does (Swarm's own `UpdateStatus` turns `completed` only after a further 5 s monitor). Defaults: `--update-parallelism 1 --update-order stop-first --update-delay 0s`; each stop also waits Swarm's 2 s gossip delay. The second column is the fair variant `--update-parallelism N` (all at once).\n");
    let _ = writeln!(r, "| N | skerry | swarm (defaults) | swarm (parallelism N) | swarm defaults / skerry | swarm parallelism N / skerry |");
    let _ = writeln!(r, "|---:|---:|---:|---:|---:|---:|");
    for s in sizes {
        let fmt = |x: Option<f64>| x.map_or("—".into(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} |",
            s.n,
            med(&s.update),
            med(&s.swarm_update_default),
            med(&s.swarm_update_all),
            fmt(ratio(&s.swarm_update_default, &s.update)),
            fmt(ratio(&s.swarm_update_all, &s.update))
        );
    }

    let _ = writeln!(r, "\n## Delete: until nothing is left\n");
    let _ = writeln!(r, "skerry: `skerry delete deployment bench` until the Deployment, its ReplicaSets and pods are gone from the API and their containers from containerd. swarm: `docker service rm` until none of the service's containers exists.\n");
    let _ = writeln!(r, "| N | skerry | swarm |");
    let _ = writeln!(r, "|---:|---:|---:|");
    for s in sizes {
        let _ = writeln!(r, "| {} | {} | {} |", s.n, med(&s.delete), med(&s.swarm_delete));
    }

    if let Some(sw) = swarm {
        let _ = writeln!(r, "\n## Swarm setup and teardown\n");
        let _ = writeln!(r, "A private dockerd (`--data-root`, `--exec-root`, `--pidfile`, socket and empty `--config-file` under `/tmp/sk-swarm-*`, `--iptables=false --ip6tables=false --bridge=none`) on a private containerd, inside a network namespace of its own without a default route; `docker swarm init --advertise-addr 127.0.0.1`; the busybox rootfs loaded with `docker import`; `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1` and `--no-resolve-image`, so Swarm never tries a registry (it would before every task start otherwise).");
        if let Some(e) = &sw.error {
            let _ = writeln!(r, "\n**Swarm could not be measured:** {e}");
        }
        if sw.version.is_empty() {
            // Nothing was started.
        } else if sw.leftovers.is_empty() {
            let _ = writeln!(r, "\nTeardown: after `docker swarm leave --force` and the drop, none of what the run made is left (its network namespace and veth, `/tmp/sk-swarm-*` and `/tmp/sk-ctrd-*`, processes naming them, cgroups, `/run/docker`).");
        } else {
            let _ = writeln!(r, "\nTeardown **left**:\n");
            for l in &sw.leftovers {
                let _ = writeln!(r, "- `{l}`");
            }
        }
        if sw.teardown.is_empty() {
            let _ = writeln!(
                r,
                "The root namespace's links and nftables ruleset are the same after the Swarm run as before it."
            );
        } else {
            let _ = writeln!(r, "The root namespace's links or nftables ruleset changed during the Swarm run (other work on the machine, e.g. e2e tests, makes `sk…` links too):\n");
            for l in &sw.teardown {
                let _ = writeln!(r, "- `{l}`");
            }
        }
    }

    let _ = writeln!(r, "\nRaw runs (seconds):\n");
    let fmt = |v: &[Duration]| v.iter().map(|d| format!("{:.3}", d.as_secs_f64())).collect::<Vec<_>>().join(", ");
    for s in sizes {
        let _ = writeln!(
            r,
            "- N={}: skerry create [{}], update [{}], delete [{}]; floor [{}]; swarm create [{}], update defaults [{}], update parallelism N [{}], rm [{}]",
            s.n,
            fmt(&s.create),
            fmt(&s.update),
            fmt(&s.delete),
            fmt(&s.floor),
            fmt(&s.swarm_create),
            fmt(&s.swarm_update_default),
            fmt(&s.swarm_update_all),
            fmt(&s.swarm_delete)
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::rollout_complete;

    fn deployment(generation: i64, observed: i64, replicas: i64, updated: i64, available: i64) -> serde_json::Value {
        json!({
            "metadata": {"generation": generation},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated, "availableReplicas": available}
        })
    }

    #[test]
    fn rollout_status_as_kubectl() {
        assert!(rollout_complete(&deployment(2, 2, 3, 3, 3), 3));
        // Not yet observed, old replicas left, not all available.
        assert!(!rollout_complete(&deployment(2, 1, 3, 3, 3), 3));
        assert!(!rollout_complete(&deployment(2, 2, 4, 3, 3), 3));
        assert!(!rollout_complete(&deployment(2, 2, 3, 3, 2), 3));
        assert!(!rollout_complete(&deployment(2, 2, 3, 2, 3), 3));
    }
}
