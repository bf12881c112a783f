//! Benchmark of the Service proxy's nftables programming (see `bench/proxy/README.md`): inside a
//! private network namespace, times a full build, one endpoint change, a burst of 100 changes,
//! and the floor — a bare `nft -j -f` transaction adding one map element to the same ruleset.
//!
//! `cargo run --release -p skerry-daemon --example proxy_bench -- [SIZES...]` as root
//! (default sizes: 100 1000 5000 services, 10 endpoints each).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use skerryd::net::proxy::netns::NetNs;

use skerryd::net::proxy::{
    render_full_text, render_update, service_chain_name, Endpoint, NamespaceNft, NftRunner, Protocol, Proxy,
    ProxyState, ServicePort,
};

const ENDPOINTS: usize = 10;
const REPEAT: usize = 5;
/// Fresh TCP connections timed per size in the first-packet latency measurement.
const CONNECTS: usize = 200;

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
        endpoints: (0..ENDPOINTS)
            .map(|e| Endpoint { ip: Ipv4Addr::new(10, 42, hi, lo), port: 8000 + e as u16, ready: true })
            .collect(),
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

/// First-packet latency through a VIP with `n` services programmed: a client namespace holding
/// the proxy, a server namespace behind a veth (10.251.0.2, listening on :8080), and `CONNECTS`
/// fresh TCP connects (SYN out, DNAT, SYN-ACK back) to a ClusterIP whose endpoint is the server.
/// Returns (median through the VIP, median straight to the endpoint).
fn first_packet(n: usize) -> (Duration, Duration) {
    let (client, server) = (NetNs::new().unwrap(), NetNs::new().unwrap());
    skerryd::net::proxy::netns::wire_pair(&client, &server).unwrap();
    let _ok = skerryd::net::proxy::netns::OkServer::start(&server).unwrap();
    let mut st = state(n);
    let target = n / 2;
    st.services[target].endpoints = vec![Endpoint { ip: Ipv4Addr::new(10, 251, 0, 2), port: 8080, ready: true }];
    let vip = SocketAddr::from((st.services[target].cluster_ip.unwrap(), 80));
    let mut proxy = Proxy::with_runner(Arc::new(NamespaceNft { path: client.path().to_path_buf() }));
    proxy.sync_blocking_now(st).expect("build for the latency run");
    let time = |addr: SocketAddr| {
        client
            .run(move || {
                let mut v = Vec::with_capacity(CONNECTS);
                for _ in 0..CONNECTS {
                    let t = Instant::now();
                    let s =
                        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect through the proxy");
                    v.push(t.elapsed());
                    drop(s);
                }
                median(v)
            })
            .unwrap()
    };
    (time(vip), time("10.251.0.2:8080".parse().unwrap()))
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--dump") {
        // The full batch for N services, for timing nft by hand.
        let n = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
        println!("{}", render_full_text(&state(n)));
        return;
    }
    let sizes: Vec<usize> =
        std::env::args().skip(1).map(|a| a.parse().expect("sizes are numbers of services")).collect();
    let sizes = if sizes.is_empty() { vec![100, 1000, 5000] } else { sizes };
    println!("| services × endpoints | full sync ms (render_full_text alone) | 1 endpoint change ms, median of {REPEAT} (render_update alone) | 100 changes, 1 sync ms | 100 changes, 3 syncs ms | floor: bare 1-element nft -j -f ms, median of {REPEAT} |");
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        let ns = NetNs::new().expect("creating a network namespace needs root");
        let nft = NamespaceNft { path: ns.path().to_path_buf() };
        let mut proxy = Proxy::with_runner(Arc::new(nft.clone()));
        let mut st = state(n);

        // What the daemon pays: Proxy::sync end to end (render, then one nft transaction).
        let (r, full) = timed(|| proxy.sync_blocking_now(st.clone()));
        r.expect("full build");
        let (_, full_render) = timed(|| render_full_text(&st));

        let mut generation = 0;
        let (mut one, mut one_render) = (vec![], vec![]);
        for k in 0..REPEAT {
            let old = st.clone();
            generation += 1;
            change(&mut st, (k * 7919) % n, generation);
            one_render.push(timed(|| render_update(&old, &st)).1);
            let (r, d) = timed(|| proxy.sync_blocking_now(st.clone()));
            r.expect("one change");
            one.push(d);
        }

        generation += 1;
        for k in 0..100.min(n) {
            change(&mut st, (k * 37) % n, generation);
        }
        let (r, burst_one) = timed(|| proxy.sync_blocking_now(st.clone()));
        r.expect("burst in one transaction");

        // The same burst size arriving in three slices, each synced as it arrives.
        let mut burst_three = Duration::ZERO;
        generation += 1;
        for slice in 0..3 {
            for k in (slice * 34)..((slice + 1) * 34).min(100).min(n) {
                change(&mut st, (k * 37) % n, generation);
            }
            let (r, d) = timed(|| proxy.sync_blocking_now(st.clone()));
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
            "| {n} × {ENDPOINTS} | {} ({}) | {} ({}) | {} | {} | {} |",
            ms(full),
            ms(full_render),
            ms(median(one)),
            ms(median(one_render)),
            ms(burst_one),
            ms(burst_three),
            ms(median(floor)),
        );
    }
    if std::env::var_os("PROXY_BENCH_NO_LATENCY").is_none() {
        println!();
        println!("| services programmed | first-packet latency through a VIP µs, median of {CONNECTS} fresh TCP connects | straight to the endpoint µs |");
        println!("|---|---|---|");
        for n in [10, 5000] {
            let (through, direct) = first_packet(n);
            println!("| {n} | {} | {} |", us(through), us(direct));
        }
    }
}
