//! Benchmark of the Service proxy's nftables programming (see `bench/proxy/README.md`): inside a
//! private network namespace, times a full build, one endpoint change, a burst of 100 changes,
//! and the floor — a bare `nft -j -f` transaction adding one map element to the same ruleset.
//!
//! `cargo run --release -p skerry-daemon --example proxy_bench -- [SIZES...]` as root
//! (default sizes: 100 1000 5000 services, 10 endpoints each).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::json;
use skerryd::net::proxy::netns::NetNs;
use skerryd::net::proxy::{render_full, render_update, service_chain_name, Endpoint, NamespaceNft, NftRunner, Protocol, ProxyState, ServicePort};

const ENDPOINTS: usize = 10;
const REPEAT: usize = 5;

fn service(i: usize) -> ServicePort {
    let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 1);
    ServicePort {
        namespace: "bench".into(),
        service: format!("svc-{i}"),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        cluster_ip: Some(Ipv4Addr::new(10, 43, hi + 1, lo)),
        port: 80,
        node_port: None,
        external_ips: vec![],
        affinity_timeout: None,
        endpoints: (0..ENDPOINTS).map(|e| Endpoint { ip: Ipv4Addr::new(10, 42, hi, lo), port: 8000 + e as u16, ready: true }).collect(),
    }
}

fn state(n: usize) -> ProxyState {
    ProxyState {
        service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
        pod_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
        node_ips: vec![],
        local_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
        services: (0..n).map(service).collect(),
    }
}

/// Moves one endpoint of service `i` to a new port (a new endpoint chain, the old one deleted).
fn change(st: &mut ProxyState, i: usize, generation: u16) {
    let ep = &mut st.services[i].endpoints[0];
    ep.port = 20000 + generation;
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("sizes are numbers of services")).collect();
    let sizes = if sizes.is_empty() { vec![100, 1000, 5000] } else { sizes };
    println!("services x{ENDPOINTS} eps | full: render ms, apply ms | 1 change: render ms, apply ms (median of {REPEAT}) | 100 changes: 1 tx ms, 3 tx ms | floor: 1 element ms (median of {REPEAT})");
    for n in sizes {
        let ns = NetNs::new().expect("creating a network namespace needs root");
        let nft = NamespaceNft { path: ns.path().to_path_buf() };
        let mut st = state(n);

        let (full, full_render) = timed(|| render_full(&st).to_string());
        let (r, full_apply) = timed(|| nft.apply(&full));
        r.expect("full build");

        let mut generation = 0;
        let (mut one_render, mut one_apply) = (vec![], vec![]);
        for k in 0..REPEAT {
            let old = st.clone();
            generation += 1;
            change(&mut st, (k * 7919) % n, generation);
            let (batch, d) = timed(|| render_update(&old, &st).expect("a change").to_string());
            one_render.push(d);
            let (r, d) = timed(|| nft.apply(&batch));
            r.expect("one change");
            one_apply.push(d);
        }

        let old = st.clone();
        generation += 1;
        for k in 0..100.min(n) {
            change(&mut st, (k * 37) % n, generation);
        }
        let (r, burst_one) = timed(|| nft.apply(&render_update(&old, &st).expect("a burst").to_string()));
        r.expect("burst in one transaction");

        // The same burst size delivered in three slices, each synced as it arrives.
        let mut burst_three = Duration::ZERO;
        generation += 1;
        for slice in 0..3 {
            let old = st.clone();
            for k in (slice * 34)..((slice + 1) * 34).min(100).min(n) {
                change(&mut st, (k * 37) % n, generation);
            }
            let Some(batch) = render_update(&old, &st) else { continue };
            let (r, d) = timed(|| nft.apply(&batch.to_string()));
            r.expect("burst slice");
            burst_three += d;
        }

        let target = service_chain_name(&st.services[0]);
        let mut floor = vec![];
        for k in 0..REPEAT {
            let key = json!({"concat": ["10.43.255.254", "tcp", 1000 + k]});
            let add = json!({"nftables": [{"add": {"element": {"family": "inet", "table": "skerry", "name": "service-ips", "elem": [[key, {"goto": {"target": target}}]]}}}]});
            let (r, d) = timed(|| nft.apply(&add.to_string()));
            r.expect("floor");
            floor.push(d);
            let del = json!({"nftables": [{"delete": {"element": {"family": "inet", "table": "skerry", "name": "service-ips", "elem": [key]}}}]});
            nft.apply(&del.to_string()).expect("floor cleanup");
        }

        println!(
            "{n:>5} x{ENDPOINTS} | full {} , {} | 1 change {} , {} | 100 changes {} , {} | floor {}",
            ms(full_render),
            ms(full_apply),
            ms(median(one_render)),
            ms(median(one_apply)),
            ms(burst_one),
            ms(burst_three),
            ms(median(floor)),
        );
    }
}
