//! Resource usage of running containers and of the node, as metrics-server reports it: CPU as a
//! rate over a window between two cumulative samples, memory as the working set.
//!
//! Containers are read from their cgroups (`<cgroup-parent>/pod<uid>/<container-id>`), on cgroup
//! v1 (`cpuacct.usage`, `memory.usage_in_bytes` − `total_inactive_file`) or v2 (`cpu.stat`
//! `usage_usec`, `memory.current` − `inactive_file`) — per controller, so hybrid hosts work; the
//! node from `/proc/stat` (busy time) and `/proc/meminfo` (`MemTotal` − `MemAvailable`).
//! The parsers and the rate are pure; [`Sampler`] keeps the last few cumulative CPU samples per
//! cgroup so that a request only reads "now" and divides by the time since an earlier sample.
//! Written by hand: a handful of small kernel files needs no crate (cAdvisor's job is far wider).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{cgroups, container_id, Context};
use crate::objects::{meta, resource};

/// How often the background task samples every running container and the node.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// The shortest window a rate is computed over; with no earlier sample a request waits this long
/// between two reads.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Samples kept per cgroup (enough to always have one at least [`MIN_WINDOW`] old).
const HISTORY: usize = 3;
/// The history key of the node's own counters.
const NODE_KEY: &str = "/proc/stat";

/// One cumulative reading of a cgroup or the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// CPU time used since the cgroup (or the machine) started, in nanoseconds.
    pub cpu_ns: u64,
    /// Working-set memory in bytes.
    pub memory: u64,
}

/// A cumulative CPU counter at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub cpu_ns: u64,
    pub at: Instant,
}

/// Usage over a window: what one container or the node used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub nanocores: u64,
    pub memory: u64,
    pub window: Duration,
}

/// CPU use between two samples in nanocores (nanoseconds of CPU per second); `None` when the
/// counter went backwards (the cgroup was recreated by a restart) or no time passed.
pub fn cpu_rate(prev: Sample, now: Sample) -> Option<u64> {
    let elapsed = now.at.checked_duration_since(prev.at)?.as_nanos();
    let used = now.cpu_ns.checked_sub(prev.cpu_ns)? as u128;
    if elapsed == 0 {
        return None;
    }
    Some(u64::try_from(used * 1_000_000_000 / elapsed).unwrap_or(u64::MAX))
}

/// The newest sample at least [`MIN_WINDOW`] older than `now` whose counter is not ahead of it.
pub fn pick_previous(history: &VecDeque<Sample>, now: Sample) -> Option<Sample> {
    history
        .iter()
        .rev()
        .find(|s| now.at.checked_duration_since(s.at).is_some_and(|d| d >= MIN_WINDOW) && s.cpu_ns <= now.cpu_ns)
        .copied()
}

/// Working set as kubelet (cAdvisor) computes it: usage minus inactive file pages, floored at 0.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// A `key value` line of a flat-keyed cgroup file (`memory.stat`, `cpu.stat`).
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A file holding one number (`cpuacct.usage`, `memory.usage_in_bytes`, `memory.current`).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// cgroup v1: CPU nanoseconds from `cpuacct.usage`.
pub fn v1_cpu_ns(cpuacct_usage: &str) -> Option<u64> {
    single_value(cpuacct_usage)
}

/// cgroup v1: working set from `memory.usage_in_bytes` and `memory.stat` (`total_inactive_file`,
/// which counts the cgroup's descendants too, as `usage_in_bytes` does).
pub fn v1_working_set(usage_in_bytes: &str, memory_stat: &str) -> Option<u64> {
    let usage = single_value(usage_in_bytes)?;
    let inactive = stat_field(memory_stat, "total_inactive_file").unwrap_or(0);
    Some(working_set(usage, inactive))
}

/// cgroup v2: CPU nanoseconds from `cpu.stat` (`usage_usec`).
pub fn v2_cpu_ns(cpu_stat: &str) -> Option<u64> {
    stat_field(cpu_stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// cgroup v2: working set from `memory.current` and `memory.stat` (`inactive_file`).
pub fn v2_working_set(memory_current: &str, memory_stat: &str) -> Option<u64> {
    let usage = single_value(memory_current)?;
    let inactive = stat_field(memory_stat, "inactive_file").unwrap_or(0);
    Some(working_set(usage, inactive))
}

/// What `/proc/stat` says about the whole machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Busy time of all CPUs in clock ticks: everything but `idle` and `iowait` (`guest` time is
    /// already inside `user`/`nice`).
    pub busy_ticks: u64,
    /// Online CPUs (`cpuN` lines).
    pub cpus: u64,
}

pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let mut busy = None;
    let mut cpus = 0;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                let v: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                // user nice system idle iowait irq softirq steal [guest guest_nice]
                busy = Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7));
            }
            Some(name) if name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) => cpus += 1,
            _ => {}
        }
    }
    Some(ProcStat { busy_ticks: busy?, cpus })
}

/// What `/proc/meminfo` says, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
}

impl MemInfo {
    /// The node's memory usage as metrics-server's working set approximates it.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    Some(MemInfo { total: field("MemTotal")?, available: field("MemAvailable")? })
}

/// Where each controller's hierarchy is mounted. v1 controllers win over the unified tree on
/// hybrid hosts (that is where runc puts the limits and the accounting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

impl Layout {
    /// From the text of `/proc/self/mountinfo`.
    pub fn from_mountinfo(text: &str) -> Layout {
        let mut layout = Layout::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mount) = left.split(' ').nth(4) else { continue };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or("");
            let options = right.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => layout.unified = Some(PathBuf::from(mount)),
                "cgroup" => {
                    for opt in options.split(',') {
                        match opt {
                            "cpuacct" => layout.cpuacct = Some(PathBuf::from(mount)),
                            "memory" => layout.memory = Some(PathBuf::from(mount)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        layout
    }

    pub fn detect() -> Layout {
        Layout::from_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Reads one cgroup (`relative` to every hierarchy's root); `None` when it is not there (yet).
    pub fn read(&self, relative: &str) -> Option<Reading> {
        let rel = relative.trim_start_matches('/');
        let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(rel).join(file)).ok();
        let cpu_ns = match (&self.cpuacct, &self.unified) {
            (Some(root), _) => v1_cpu_ns(&read(root, "cpuacct.usage")?)?,
            (None, Some(root)) => v2_cpu_ns(&read(root, "cpu.stat")?)?,
            (None, None) => return None,
        };
        let memory = match (&self.memory, &self.unified) {
            (Some(root), _) => v1_working_set(&read(root, "memory.usage_in_bytes")?, &read(root, "memory.stat")?)?,
            (None, Some(root)) => v2_working_set(&read(root, "memory.current")?, &read(root, "memory.stat")?)?,
            (None, None) => return None,
        };
        Some(Reading { cpu_ns, memory })
    }
}

/// The node's counters now, and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReading {
    pub reading: Reading,
    pub cpus: u64,
    pub memory_total: u64,
}

/// Reads `/proc/stat` and `/proc/meminfo`.
pub fn read_node() -> Option<NodeReading> {
    let stat = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mem = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    let cpu_ns = stat.busy_ticks.saturating_mul(1_000_000_000 / hz);
    Some(NodeReading { reading: Reading { cpu_ns, memory: mem.used() }, cpus: stat.cpus, memory_total: mem.total })
}

/// The recent cumulative CPU samples per cgroup (and the node), shared by the background task
/// and requests.
#[derive(Debug, Default)]
pub struct Sampler {
    history: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl Sampler {
    /// Remembers `sample` for `key`, keeping the newest few.
    pub fn record(&self, key: &str, sample: Sample) {
        let mut h = self.history.lock().expect("sampler lock");
        let q = h.entry(key.to_string()).or_default();
        if q.back().is_some_and(|last| sample.cpu_ns < last.cpu_ns) {
            q.clear(); // The counter restarted: the cgroup is a new one.
        }
        q.push_back(sample);
        while q.len() > HISTORY {
            q.pop_front();
        }
    }

    /// Forgets every key not in `keep` (containers that are gone).
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.history.lock().expect("sampler lock").retain(|k, _| keep.contains(k) || k == NODE_KEY);
    }

    /// The rate from a remembered sample to `now`, if one is old enough.
    pub fn rate(&self, key: &str, now: Sample) -> Option<(u64, Duration)> {
        let h = self.history.lock().expect("sampler lock");
        let prev = pick_previous(h.get(key)?, now)?;
        Some((cpu_rate(prev, now)?, now.at - prev.at))
    }

    /// Rates for `keys`, read by `read` now. Keys without an earlier sample are read again after
    /// [`MIN_WINDOW`] (once for all of them); keys that cannot be read are left out.
    pub async fn rates<F>(&self, keys: Vec<String>, read: F) -> HashMap<String, Rate>
    where
        F: Fn(&[String]) -> Vec<Option<Reading>> + Send + Sync + Clone + 'static,
    {
        let (first, at) = read_batch(&keys, read.clone()).await;
        let mut out = HashMap::new();
        let mut again = Vec::new();
        for (key, reading) in keys.iter().zip(first) {
            let Some(r) = reading else { continue };
            let now = Sample { cpu_ns: r.cpu_ns, at };
            match self.rate(key, now) {
                Some((nanocores, window)) => {
                    out.insert(key.clone(), Rate { nanocores, memory: r.memory, window });
                }
                None => {
                    self.record(key, now);
                    again.push(key.clone());
                }
            }
        }
        if again.is_empty() {
            return out;
        }
        tokio::time::sleep(MIN_WINDOW).await;
        let (second, at) = read_batch(&again, read).await;
        for (key, reading) in again.iter().zip(second) {
            let Some(r) = reading else { continue };
            let now = Sample { cpu_ns: r.cpu_ns, at };
            if let Some((nanocores, window)) = self.rate(key, now) {
                out.insert(key.clone(), Rate { nanocores, memory: r.memory, window });
            }
        }
        out
    }
}

async fn read_batch<F>(keys: &[String], read: F) -> (Vec<Option<Reading>>, Instant)
where
    F: Fn(&[String]) -> Vec<Option<Reading>> + Send + Sync + 'static,
{
    let owned = keys.to_vec();
    let readings = tokio::task::spawn_blocking(move || read(&owned)).await.unwrap_or_else(|_| vec![None; keys.len()]);
    // Taken here, on the runtime's clock (paused in tests), right after the reads.
    (readings, Instant::now())
}

/// The daemon's sampler and cgroup layout. Process-wide because what they mirror is: kernel
/// counters keyed by absolute cgroup path (one `skerryd` per process).
pub fn shared() -> &'static (Sampler, Layout) {
    static SHARED: OnceLock<(Sampler, Layout)> = OnceLock::new();
    SHARED.get_or_init(|| (Sampler::default(), Layout::detect()))
}

/// A running container of a pod on this node: its name and cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub container: String,
    pub cgroup: String,
}

/// The running containers of `pod` (by its status) and their cgroups; empty unless the pod runs
/// on `node`.
pub fn targets(pod: &Value, node: &str, cgroup_parent: &str) -> Vec<Target> {
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node)
        || pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running")
    {
        return Vec::new();
    }
    let uid = meta::uid(pod);
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.pointer("/state/running").is_some())
        .filter_map(|c| c["name"].as_str())
        .map(|name| Target {
            container: name.to_string(),
            cgroup: cgroups::container_path(cgroup_parent, uid, &container_id(uid, name)),
        })
        .collect()
}

/// The reader requests and the background task use: the shared layout, or `/proc` for the node.
pub fn read_keys(keys: &[String]) -> Vec<Option<Reading>> {
    let layout = &shared().1;
    keys.iter().map(|k| if k == NODE_KEY { read_node().map(|n| n.reading) } else { layout.read(k) }).collect()
}

/// The node's usage over a window.
pub async fn node_rate() -> Option<Rate> {
    shared().0.rates(vec![NODE_KEY.to_string()], read_keys).await.get(NODE_KEY).copied()
}

/// Samples every running container on this node and the node itself every [`SAMPLE_PERIOD`]
/// until `shutdown`, so that requests find an earlier sample.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok((pods, _)) = ctx.store.list(&resource::PODS.key(), None).await else { continue };
        let mut keys: Vec<String> =
            pods.iter().flat_map(|p| targets(p, &ctx.node_name, &ctx.cgroup_parent)).map(|t| t.cgroup).collect();
        let keep = keys.iter().cloned().collect();
        keys.push(NODE_KEY.to_string());
        let (readings, at) = read_batch(&keys, read_keys).await;
        let sampler = &shared().0;
        sampler.retain(&keep);
        for (key, reading) in keys.iter().zip(readings) {
            if let Some(r) = reading {
                sampler.record(key, Sample { cpu_ns: r.cpu_ns, at });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V1_MEMORY_STAT: &str = "cache 4096000\nrss 1200000\ninactive_file 100\nactive_file 200\n\
        total_cache 4096000\ntotal_rss 1200000\ntotal_inactive_file 3000000\ntotal_active_file 1000000\n";
    const V2_CPU_STAT: &str = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n";
    const V2_MEMORY_STAT: &str =
        "anon 1200000\nfile 4096000\nkernel_stack 16384\ninactive_anon 0\nactive_anon 1200000\n\
        inactive_file 3000000\nactive_file 1096000\n";

    #[test]
    fn cgroup_v1_files() {
        assert_eq!(v1_cpu_ns("987654321\n"), Some(987_654_321));
        assert_eq!(v1_cpu_ns("junk"), None);
        // usage 5 MB − total_inactive_file (not the cgroup-only inactive_file) 3 MB.
        assert_eq!(v1_working_set("5000000\n", V1_MEMORY_STAT), Some(2_000_000));
        // More inactive file pages than usage (the counters are read apart): floored at 0.
        assert_eq!(v1_working_set("1000\n", V1_MEMORY_STAT), Some(0));
        assert_eq!(v1_working_set("5000000\n", ""), Some(5_000_000));
        assert_eq!(v1_working_set("", V1_MEMORY_STAT), None);
    }

    #[test]
    fn cgroup_v2_files() {
        assert_eq!(v2_cpu_ns(V2_CPU_STAT), Some(1_234_567_000));
        assert_eq!(v2_cpu_ns("user_usec 5\n"), None);
        assert_eq!(v2_working_set("5300000\n", V2_MEMORY_STAT), Some(2_300_000));
        assert_eq!(v2_working_set("100\n", V2_MEMORY_STAT), Some(0));
        // `inactive_file` must not match `inactive_anon` or a longer key.
        assert_eq!(stat_field("inactive_filex 9\ninactive_file 7\n", "inactive_file"), Some(7));
    }

    #[test]
    fn proc_files() {
        let stat =
            "cpu  100 20 30 5000 40 5 6 7 50 0\ncpu0 50 10 15 2500 20 2 3 3 25 0\ncpu1 50 10 15 2500 20 3 3 4 25 0\n\
            intr 12345 0 0\nctxt 999\nbtime 1700000000\nprocs_running 1\n";
        // user + nice + system + irq + softirq + steal; not idle, iowait or guest (inside user).
        assert_eq!(parse_proc_stat(stat), Some(ProcStat { busy_ticks: 100 + 20 + 30 + 5 + 6 + 7, cpus: 2 }));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        let meminfo =
            "MemTotal:        8041888 kB\nMemFree:          512000 kB\nMemAvailable:    6000000 kB\nBuffers: 1 kB\n";
        let m = parse_meminfo(meminfo).unwrap();
        assert_eq!(m, MemInfo { total: 8_041_888 * 1024, available: 6_000_000 * 1024 });
        assert_eq!(m.used(), 2_041_888 * 1024);
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn layouts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Layout::from_mountinfo(hybrid),
            Layout {
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                memory: Some("/sys/fs/cgroup/memory".into()),
                unified: Some("/sys/fs/cgroup/unified".into()),
            }
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(Layout::from_mountinfo(v2), Layout { unified: Some("/sys/fs/cgroup".into()), ..Layout::default() });
    }

    #[test]
    fn layout_reads_v1_and_v2_trees() {
        let dir = tempfile::tempdir().unwrap();
        let write = |p: &str, s: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        };
        write("cpuacct/sk/podu/c/cpuacct.usage", "2000000000\n");
        write("memory/sk/podu/c/memory.usage_in_bytes", "5000000\n");
        write("memory/sk/podu/c/memory.stat", V1_MEMORY_STAT);
        write("unified/sk/podu/c/cpu.stat", V2_CPU_STAT);
        write("unified/sk/podu/c/memory.current", "5300000\n");
        write("unified/sk/podu/c/memory.stat", V2_MEMORY_STAT);
        let v1 = Layout {
            cpuacct: Some(dir.path().join("cpuacct")),
            memory: Some(dir.path().join("memory")),
            unified: Some(dir.path().join("unified")),
        };
        assert_eq!(v1.read("/sk/podu/c"), Some(Reading { cpu_ns: 2_000_000_000, memory: 2_000_000 }));
        let v2 = Layout { unified: Some(dir.path().join("unified")), ..Layout::default() };
        assert_eq!(v2.read("/sk/podu/c"), Some(Reading { cpu_ns: 1_234_567_000, memory: 2_300_000 }));
        assert_eq!(v2.read("/sk/podu/gone"), None);
        assert_eq!(Layout::default().read("/sk/podu/c"), None);
    }

    #[test]
    fn rates() {
        let t0 = Instant::now();
        let s = |cpu_ns, ms| Sample { cpu_ns, at: t0 + Duration::from_millis(ms) };
        // Half a CPU over 10 s; two CPUs over 1 s; idle.
        assert_eq!(cpu_rate(s(1_000, 0), s(5_000_001_000, 10_000)), Some(500_000_000));
        assert_eq!(cpu_rate(s(0, 0), s(2_000_000_000, 1_000)), Some(2_000_000_000));
        assert_eq!(cpu_rate(s(7, 0), s(7, 1_000)), Some(0));
        // A restarted counter or no time passed: no rate.
        assert_eq!(cpu_rate(s(9_000, 0), s(1_000, 1_000)), None);
        assert_eq!(cpu_rate(s(0, 1_000), s(5, 1_000)), None);
        assert_eq!(cpu_rate(s(0, 2_000), s(5, 1_000)), None);

        let history: VecDeque<Sample> = [s(0, 0), s(100, 10_000), s(200, 20_000)].into();
        // The newest sample at least a second old.
        assert_eq!(pick_previous(&history, s(250, 20_500)), Some(s(100, 10_000)));
        assert_eq!(pick_previous(&history, s(250, 21_000)), Some(s(200, 20_000)));
        assert_eq!(pick_previous(&history, s(50, 21_000)), Some(s(0, 0)));
        assert_eq!(pick_previous(&history, s(250, 500)), None);
    }

    #[test]
    fn sampler_keeps_a_short_history_and_resets_on_restart() {
        let t0 = Instant::now();
        let s = |cpu_ns, secs| Sample { cpu_ns, at: t0 + Duration::from_secs(secs) };
        let sampler = Sampler::default();
        assert_eq!(sampler.rate("/c", s(10, 1)), None, "nothing sampled yet");
        for i in 0..5 {
            sampler.record("/c", s(i * 1_000_000_000, i * 10));
        }
        assert_eq!(sampler.history.lock().unwrap()["/c"].len(), HISTORY);
        // 1 CPU-second per 10 s since the sample at 40 s.
        assert_eq!(sampler.rate("/c", s(5_000_000_000, 50)), Some((100_000_000, Duration::from_secs(10))));
        sampler.record("/c", s(5, 51));
        assert_eq!(
            sampler.history.lock().unwrap()["/c"],
            VecDeque::from([s(5, 51)]),
            "a smaller counter is a new cgroup"
        );
        sampler.retain(&["/other".to_string()].into());
        assert!(sampler.history.lock().unwrap().get("/c").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_history_reads_twice() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let sampler = Sampler::default();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        // Each read finds 0.25 CPU-seconds more; "/gone" never reads.
        let read = move |keys: &[String]| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            keys.iter().map(|k| (k != "/gone").then_some(Reading { cpu_ns: n * 250_000_000, memory: 42 })).collect()
        };
        let rates = sampler.rates(vec!["/c".into(), "/gone".into()], read.clone()).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let r = rates["/c"];
        assert!(r.window >= MIN_WINDOW, "{r:?}");
        assert!((200_000_000..=250_000_000).contains(&r.nanocores), "about a quarter core: {r:?}");
        assert_eq!(r.memory, 42);
        assert!(!rates.contains_key("/gone"));
        // Later, one read suffices: the first sample of the last request is remembered.
        tokio::time::advance(Duration::from_secs(5)).await;
        let rates = sampler.rates(vec!["/c".into()], read).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(rates["/c"].window >= Duration::from_secs(5));
    }

    #[test]
    fn targets_are_running_containers_of_pods_here() {
        let pod = json!({
            "metadata": {"uid": "0b7c54a2-1d3e-4f5a-9b6c-7d8e9f0a1b2c"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"running": {}}},
                {"name": "done", "state": {"terminated": {}}}
            ]}
        });
        assert_eq!(
            targets(&pod, "n1", "/skerry"),
            [Target {
                container: "app".into(),
                cgroup: "/skerry/pod0b7c54a2-1d3e-4f5a-9b6c-7d8e9f0a1b2c/0b7c54a21d3e-app".into()
            }]
        );
        assert!(targets(&pod, "n2", "/skerry").is_empty());
        let mut pending = pod.clone();
        pending["status"]["phase"] = json!("Pending");
        assert!(targets(&pending, "n1", "/skerry").is_empty());
    }
}
