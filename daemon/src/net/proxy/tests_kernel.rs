//! Kernel tests (root; they fail, never skip, without it): the proxy applied through real `nft`
//! in network namespaces the tests create, and real connections through it. Traffic stays
//! inside those namespaces; every namespace is removed by its guard.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::netns::NetNs;
use super::render::tests::{dns, ip, state, web};
use super::*;

fn namespace() -> NetNs {
    NetNs::new().expect("creating a network namespace needs root (run the tests as root)")
}

/// What a table holds, in a form both a listing and a rendered batch can be reduced to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    chains: BTreeSet<String>,
    sets: BTreeSet<String>,
    /// Map → `key : target` lines.
    elements: BTreeMap<String, BTreeSet<String>>,
    /// Chain → number of rules.
    rules: BTreeMap<String, usize>,
}

fn element_line(e: &Value) -> String {
    let key = if e[0].get("elem").is_some() { &e[0]["elem"]["val"] } else { &e[0] };
    let parts: Vec<String> =
        key["concat"].as_array().unwrap().iter().map(|p| p.to_string().trim_matches('"').to_string()).collect();
    format!("{} : {}", parts.join(" . "), e[1]["goto"]["target"].as_str().unwrap())
}

fn summarize_listing(listing: &Value) -> Summary {
    let mut s = Summary::default();
    for item in listing["nftables"].as_array().unwrap() {
        if let Some(c) = item.get("chain") {
            s.chains.insert(c["name"].as_str().unwrap().to_string());
        } else if let Some(set) = item.get("set") {
            s.sets.insert(set["name"].as_str().unwrap().to_string());
        } else if let Some(m) = item.get("map") {
            let lines = s.elements.entry(m["name"].as_str().unwrap().to_string()).or_default();
            for e in m["elem"].as_array().into_iter().flatten() {
                lines.insert(element_line(e));
            }
        } else if let Some(r) = item.get("rule") {
            *s.rules.entry(r["chain"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    s
}

fn summarize_batch(batch: &Value) -> Summary {
    let mut s = Summary::default();
    for c in batch["nftables"].as_array().unwrap() {
        let Some(add) = c.get("add") else { continue };
        if let Some(ch) = add.get("chain") {
            s.chains.insert(ch["name"].as_str().unwrap().to_string());
        } else if let Some(set) = add.get("set") {
            s.sets.insert(set["name"].as_str().unwrap().to_string());
        } else if let Some(m) = add.get("map") {
            s.elements.entry(m["name"].as_str().unwrap().to_string()).or_default();
        } else if let Some(e) = add.get("element") {
            let lines = s.elements.entry(e["name"].as_str().unwrap().to_string()).or_default();
            for el in e["elem"].as_array().unwrap() {
                lines.insert(element_line(el));
            }
        } else if let Some(r) = add.get("rule") {
            *s.rules.entry(r["chain"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    s
}

fn listed(runner: &NamespaceNft) -> Value {
    runner.list_table().unwrap().expect("table inet skerry exists")
}

fn assert_holds(runner: &NamespaceNft, st: &ProxyState, step: &str) {
    assert_eq!(summarize_listing(&listed(runner)), summarize_batch(&render_full(st)), "after {step}");
}

#[test]
fn updates_leave_the_table_as_a_full_build_would() {
    let ns = namespace();
    let runner = NamespaceNft { path: ns.path().to_path_buf() };
    let mut proxy = Proxy::with_runner(Arc::new(runner.clone()));

    let mut st = state(vec![web(&[("10.42.0.5", true)]), dns()]);
    proxy.sync_blocking_now(st.clone()).unwrap();
    assert_holds(&runner, &st, "the first (full) sync");

    type Step<'a> = (&'a str, Box<dyn Fn(&mut ProxyState)>);
    let mut steps: Vec<Step> = vec![
        (
            "adding a service",
            Box::new(|s| {
                let mut other = web(&[("10.42.1.5", true), ("10.42.1.6", true)]);
                other.service = "api".into();
                other.cluster_ip = Some(ip("10.43.0.40"));
                other.node_port = Some(30090);
                other.external_ips = vec![ip("192.0.2.40")];
                s.services.push(other);
            }),
        ),
        (
            "adding an endpoint",
            Box::new(|s| s.services[0].endpoints.push(Endpoint { ip: ip("10.42.0.6"), port: 8080, ready: true })),
        ),
        ("an endpoint becoming unready", Box::new(|s| s.services[0].endpoints[0].ready = false)),
        ("the last endpoint becoming unready", Box::new(|s| s.services[0].endpoints[1].ready = false)),
        ("an endpoint of an affinity service moving", Box::new(|s| s.services[1].endpoints[0].ip = ip("10.42.0.19"))),
        ("an affinity timeout changing", Box::new(|s| s.services[1].affinity_timeout = Some(30))),
        (
            "removing a service",
            Box::new(|s| {
                s.services.remove(1);
            }),
        ),
        ("the local addresses changing", Box::new(|s| s.local_ips = vec![ip("10.43.0.10"), ip("10.43.0.11")])),
        ("endpoints coming back", Box::new(|s| s.services[0].endpoints.iter_mut().for_each(|e| e.ready = true))),
        ("removing everything", Box::new(|s| s.services.clear())),
    ];
    for (step, change) in steps.drain(..) {
        change(&mut st);
        proxy.sync_blocking_now(st.clone()).unwrap_or_else(|e| panic!("{step}: {e}"));
        // An add-only update may leave garbage: everything wanted is there, and after collecting,
        // exactly that.
        let (got, want) = (summarize_listing(&listed(&runner)), summarize_batch(&render_full(&st)));
        assert!(got.chains.is_superset(&want.chains), "after {step}");
        assert_eq!(got.elements, want.elements, "after {step}");
        proxy.collect_garbage_blocking().unwrap();
        assert_holds(&runner, &st, step);
    }
    // Nothing changed: no transaction (a runner that fails would tell).
    proxy.sync_blocking_now(st.clone()).unwrap();

    // A restarted daemon rebuilds over what the last one left, affinity sets included.
    st.services = vec![dns(), web(&[("10.42.0.7", true)])];
    proxy.sync_blocking_now(st.clone()).unwrap();
    let mut restarted = Proxy::with_runner(Arc::new(runner.clone()));
    st.services[1].endpoints[0].ip = ip("10.42.0.8");
    restarted.sync_blocking_now(st.clone()).unwrap();
    assert_holds(&runner, &st, "a resync over a table left by another process");

    // Without affinity sets, render_full alone is idempotent.
    st.services.retain(|s| s.affinity_timeout.is_none());
    restarted.sync_blocking_now(st.clone()).unwrap();
    runner.apply(&render_full(&st).to_string()).unwrap();
    runner.apply(&render_full(&st).to_string()).unwrap();
    assert_holds(&runner, &st, "render_full applied twice");
}

/// A server namespace with a listener on 10.251.0.2:8080 answering `ok`, and a client namespace
/// (10.251.0.1/30, default route to the server) that holds the proxy.
struct Pair {
    client: NetNs,
    /// Dropped before the namespace it serves in.
    _ok: super::netns::OkServer,
    _server: NetNs,
}

impl Pair {
    fn new() -> Pair {
        let (client, server) = (namespace(), namespace());
        super::netns::wire_pair(&client, &server).unwrap();
        let ok = super::netns::OkServer::start(&server).unwrap();
        Pair { client, _ok: ok, _server: server }
    }

    /// Connects from the client namespace; `Ok(reply)` or the error's kind.
    fn connect(&self, addr: &str) -> Result<String, ErrorKind> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.client
            .run(move || {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.kind())?;
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reply = String::new();
                s.read_to_string(&mut reply).map_err(|e| e.kind())?;
                Ok(reply)
            })
            .unwrap()
    }
}

fn vip_service(ready: bool, affinity: Option<u32>) -> ServicePort {
    ServicePort {
        namespace: "default".into(),
        service: "echo".into(),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        cluster_ip: Some(ip("10.43.7.1")),
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        affinity_timeout: affinity,
        endpoints: vec![Endpoint { ip: ip("10.251.0.2"), port: 8080, ready }],
    }
}

#[test]
fn connections_reach_endpoints_or_are_refused_at_once() {
    let pair = Pair::new();
    let runner = NamespaceNft { path: pair.client.path().to_path_buf() };
    let mut proxy = Proxy::with_runner(Arc::new(runner.clone()));
    let mut st = state(vec![vip_service(true, None)]);
    st.pod_cidr = (ip("10.42.0.0"), 16);
    proxy.sync_blocking_now(st.clone()).unwrap();

    assert_eq!(pair.connect("10.251.0.2:8080"), Ok("ok".into()), "the server answers directly");
    assert_eq!(pair.connect("10.43.7.1:80"), Ok("ok".into()), "the VIP reaches the endpoint");
    assert_eq!(
        pair.connect("10.251.0.1:30080"),
        Ok("ok".into()),
        "the NodePort on a local address reaches the endpoint"
    );
    assert_eq!(pair.connect("10.43.7.1:81"), Err(ErrorKind::ConnectionRefused), "a port the VIP does not serve");
    assert_eq!(pair.connect("10.43.9.9:80"), Err(ErrorKind::ConnectionRefused), "an unallocated service address");

    st.services = vec![vip_service(false, None)];
    proxy.sync_blocking_now(st.clone()).unwrap();
    assert_eq!(pair.connect("10.43.7.1:80"), Err(ErrorKind::ConnectionRefused), "no ready endpoints");
    assert_eq!(
        pair.connect("10.251.0.1:30080"),
        Err(ErrorKind::ConnectionRefused),
        "no ready endpoints behind the NodePort"
    );

    st.services = vec![vip_service(true, Some(600))];
    proxy.sync_blocking_now(st.clone()).unwrap();
    assert_eq!(pair.connect("10.43.7.1:80"), Ok("ok".into()), "with ClientIP affinity");
    let set = affinity_set_name(&st.services[0], &st.services[0].endpoints[0], 600);
    let listing = listed(&runner);
    let remembered = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["set"]["name"] == set.as_str())
        .expect("affinity set listed");
    assert!(remembered["set"]["elem"].to_string().contains("10.251.0.1"), "the client is remembered: {remembered}");

    // A port with no endpoints never reaches a server, even one that listens there.
    st.services = vec![];
    proxy.sync_blocking_now(st).unwrap();
    assert_eq!(pair.connect("10.43.7.1:80"), Err(ErrorKind::ConnectionRefused), "a removed service");
    let _ = Ipv4Addr::LOCALHOST;
}

#[test]
fn garbage_of_add_only_updates_is_collected_by_the_next_deleting_one() {
    let ns = namespace();
    let runner = NamespaceNft { path: ns.path().to_path_buf() };
    let mut proxy = Proxy::with_runner(Arc::new(runner.clone()));
    let mut st = state(vec![web(&[("10.42.0.5", true)]), dns()]);
    proxy.sync_blocking_now(st.clone()).unwrap();
    // Add-only: a new endpoint, then one moving (its old chain becomes garbage).
    st.services[0].endpoints.push(Endpoint { ip: ip("10.42.0.6"), port: 8080, ready: true });
    proxy.sync_blocking_now(st.clone()).unwrap();
    st.services[0].endpoints[0].ip = ip("10.42.0.7");
    proxy.sync_blocking_now(st.clone()).unwrap();
    let got = summarize_listing(&listed(&runner));
    assert!(got.rules[&service_chain_name(&st.services[0])] > 2, "dead rules stay until collected");
    // The old endpoint comes back while its chain is garbage: collected, then re-added.
    st.services[0].endpoints[0].ip = ip("10.42.0.5");
    proxy.sync_blocking_now(st.clone()).unwrap();
    assert_holds(&runner, &st, "an endpoint coming back from the garbage");
    st.services[0].endpoints[1].port = 9090;
    proxy.sync_blocking_now(st.clone()).unwrap();
    // A deletion (a service goes): everything is collected in the same transaction.
    st.services.remove(1);
    proxy.sync_blocking_now(st.clone()).unwrap();
    assert_holds(&runner, &st, "a deleting update after add-only ones");
}
