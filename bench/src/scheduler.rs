//! `skerry-bench scheduler`: the cluster scheduler alone (`skerryd::scheduler`) placing N pods
//! on M simulated nodes, in process — no containerd, no skerryd, no root.
//!
//! Nodes and pods are generated from a fixed seed (a mix of sizes, labels, taints, cordons,
//! NotReady nodes, GPUs; owners with 50 replicas each, node selectors, affinities,
//! tolerations, host ports, init containers), so every run places the same pods the same way;
//! the report prints a checksum of the placements to show it. Timed: building the snapshot
//! (`Cluster::new`) and placing every pod in order (`Cluster::place`). Nothing is asserted.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skerryd::scheduler::{Cluster, Volumes};

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to place (in owners of 50 replicas).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Timed repetitions (each on a fresh snapshot).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// The generator's seed.
    #[arg(long, default_value_t = 12)]
    seed: u64,
}

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ZONES: u64 = 10;
const SITES: u64 = 100;
const REPLICAS: usize = 50;

fn gen_nodes(rng: &mut Rng, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let size = 1u64 << rng.below(4); // 1, 2, 4, 8
            let mut allocatable = json!({"cpu": (4 * size).to_string(), "memory": format!("{}Gi", 8 * size),
                "ephemeral-storage": "100Gi", "pods": "110"});
            if rng.chance(10) {
                allocatable["nvidia.com/gpu"] = json!("4");
            }
            let mut taints = Vec::new();
            if rng.chance(5) {
                taints.push(json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"}));
            }
            if rng.chance(10) {
                taints.push(json!({"key": "spot", "value": "true", "effect": "PreferNoSchedule"}));
            }
            let ready = if rng.chance(1) { "False" } else { "True" };
            let name = format!("node-{i:04}");
            json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                    "topology.kubernetes.io/zone": format!("zone-{}", rng.below(ZONES)), "site": format!("site-{}", rng.below(SITES))}},
                "spec": {"unschedulable": rng.chance(2), "taints": taints},
                "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": ready}]}})
        })
        .collect()
}

/// One owner's pod template.
fn gen_template(rng: &mut Rng, owner: usize) -> Value {
    let cpu = 100 + 50 * rng.below(19); // 100m..1000m
    let memory = 128 * (1 + rng.below(16)); // 128Mi..2Gi
    let mut container = json!({"name": "app", "image": "registry.local/app:1",
        "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": format!("{memory}Mi")}}});
    let mut spec = json!({"containers": [], "tolerations": []});
    if rng.chance(2) {
        container["resources"]["requests"]["nvidia.com/gpu"] = json!("1");
    }
    if rng.chance(2) {
        container["ports"] = json!([{"containerPort": 8080, "hostPort": 8000 + owner, "protocol": "TCP"}]);
    }
    if rng.chance(10) {
        spec["initContainers"] = json!([{"name": "init", "image": "registry.local/init:1",
            "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}]);
    }
    if rng.chance(20) {
        spec["nodeSelector"] = json!({"topology.kubernetes.io/zone": format!("zone-{}", rng.below(ZONES))});
    }
    let mut node_affinity = serde_json::Map::new();
    if rng.chance(5) {
        let zones: Vec<String> = (0..3).map(|_| format!("zone-{}", rng.below(ZONES))).collect();
        node_affinity.insert(
            "requiredDuringSchedulingIgnoredDuringExecution".into(),
            json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones}]}]}),
        );
    }
    if rng.chance(15) {
        node_affinity.insert("preferredDuringSchedulingIgnoredDuringExecution".into(), json!([
            {"weight": 1 + rng.below(100), "preference": {"matchExpressions": [
                {"key": "site", "operator": "In", "values": [format!("site-{}", rng.below(SITES)), format!("site-{}", rng.below(SITES))]}]}},
            {"weight": 1 + rng.below(100), "preference": {"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": [format!("zone-{}", rng.below(ZONES))]}]}}]));
    }
    if !node_affinity.is_empty() {
        spec["affinity"] = json!({"nodeAffinity": node_affinity});
    }
    if rng.chance(5) {
        spec["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
    }
    if rng.chance(10) {
        spec["tolerations"].as_array_mut().expect("an array").push(json!({"key": "spot", "operator": "Exists"}));
    }
    spec["containers"] = json!([container]);
    spec
}

fn gen_pods(rng: &mut Rng, n: usize) -> Vec<Value> {
    let mut pods = Vec::with_capacity(n);
    for owner in 0..n.div_ceil(REPLICAS) {
        let spec = gen_template(rng, owner);
        let uid = format!("rs-uid-{owner:04}");
        for r in 0..REPLICAS.min(n - pods.len()) {
            pods.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("app-{owner:04}-{r:02}"), "namespace": "default", "uid": format!("{uid}-{r}"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{owner:04}"), "uid": uid, "controller": true}]},
                "spec": spec}));
        }
    }
    // Owners are created one after the other, but their pods reach the scheduler mixed.
    for i in (1..pods.len()).rev() {
        pods.swap(i, rng.below(i as u64 + 1) as usize);
    }
    pods
}

struct Run {
    snapshot: Duration,
    place: Duration,
    placed: usize,
    checksum: u64,
    first_error: Option<String>,
}

fn run_once(nodes: &[Value], pods: &[Value]) -> Run {
    let start = Instant::now();
    let mut cluster = Cluster::new(nodes, &[], Volumes::default());
    let snapshot = start.elapsed();
    let start = Instant::now();
    let results: Vec<_> = pods.iter().map(|p| cluster.place(p)).collect();
    let place = start.elapsed();
    // FNV-1a over the placements: equal across runs when placement is deterministic.
    let mut checksum: u64 = 0xcbf2_9ce4_8422_2325;
    for r in &results {
        let text = match r {
            Ok(node) => node.clone(),
            Err(e) => e.to_string(),
        };
        for b in text.bytes().chain([0]) {
            checksum = (checksum ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Run {
        snapshot,
        place,
        placed: results.iter().filter(|r| r.is_ok()).count(),
        checksum,
        first_error: results.iter().find_map(|r| r.as_ref().err().map(ToString::to_string)),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: &SchedulerArgs) -> Result<()> {
    if args.reps == 0 || args.nodes == 0 {
        bail!("--reps and --nodes must be at least 1");
    }
    let mut rng = Rng(args.seed);
    let nodes = gen_nodes(&mut rng, args.nodes);
    let pods = gen_pods(&mut rng, args.pods);
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with `cargo run --release -p skerry-bench -- scheduler` for the figure");
    }
    let runs: Vec<Run> = (0..args.reps).map(|_| run_once(&nodes, &pods)).collect();
    let checksums: Vec<u64> = runs.iter().map(|r| r.checksum).collect();
    let mut place: Vec<Duration> = runs.iter().map(|r| r.place).collect();
    place.sort();
    let mut snapshot: Vec<Duration> = runs.iter().map(|r| r.snapshot).collect();
    snapshot.sort();
    let median = place[place.len() / 2];
    let first = &runs[0];
    println!("scheduler: {} pods on {} nodes (seed {}), {} runs", args.pods, args.nodes, args.seed, args.reps);
    println!(
        "  place all pods: median {} (min {}, max {}) — {:.1} µs per pod",
        ms(median),
        ms(place[0]),
        ms(place[place.len() - 1]),
        median.as_secs_f64() * 1e6 / args.pods.max(1) as f64
    );
    println!("  snapshot (Cluster::new): median {}", ms(snapshot[snapshot.len() / 2]));
    println!("  placed {}, unschedulable {}", first.placed, args.pods - first.placed);
    if let Some(e) = &first.first_error {
        println!("  first unschedulable pod: {e}");
    }
    let same = checksums.iter().all(|c| *c == checksums[0]);
    println!(
        "  placements checksum {:016x} ({})",
        checksums[0],
        if same { "identical in every run" } else { "DIFFERS between runs" }
    );
    Ok(())
}
