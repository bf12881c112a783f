//! The cluster harness itself (Clusters, part 1): three real nodes on one test switch each run a
//! pod, reach each other on their node addresses and nothing outside their /24, a cut node is
//! unreachable until healed, a killed node boots again, and nothing of the cluster is left after
//! it is dropped.
//!
//! Traffic goes only to listeners the test starts inside the cluster's node namespaces; the
//! connection to 192.0.2.1 (TEST-NET-1) must fail before any packet is sent (no route).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use skerry_tests::cluster::{remains, TestCluster};
use skerry_tests::skerryd::{busybox_pod, TestNode};
use skerry_tests::wait_until;

/// Long enough for a connection on a LAN of veths, short enough to keep a cut's check quick.
const CONNECT: Duration = Duration::from_millis(500);

/// A TCP connection from inside `node`'s namespace to `to`.
fn connect_from(node: &TestNode, to: SocketAddr) -> std::io::Result<TcpStream> {
    node.in_netns(move || TcpStream::connect_timeout(&to, CONNECT))
}

/// A listener on `node`'s address (a port the kernel picks), made inside its namespace.
fn listen_on(node: &TestNode) -> (TcpListener, SocketAddr) {
    let ip = node.node_ip();
    let l = node.in_netns(move || TcpListener::bind((ip, 0))).expect("listening on the node address");
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Accepts the connection just made to `l` and checks it came from `from`.
fn assert_accepted_from(l: &TcpListener, from: Ipv4Addr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match l.accept() {
            Ok((_, peer)) => {
                assert_eq!(peer.ip(), from, "the connection came from {peer}, not from node 1");
                return;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("accepting on {:?}: {e}", l.local_addr()),
        }
    }
}

fn no_default_route(node: &TestNode) -> bool {
    node.skerryd.net().ip(&["-4", "route", "show", "default"]).trim().is_empty()
}

#[test]
fn three_nodes_reach_each_other_and_nothing_else_and_leave_nothing() {
    let t0 = Instant::now();
    let cluster = TestCluster::start(3);
    let booted = t0.elapsed();
    let tag = cluster.tag().to_string();
    assert_eq!(remains(&tag).iter().filter(|r| r.starts_with("netns")).count(), 4, "{:?}", remains(&tag));
    assert!(remains(&tag).iter().all(|r| !r.starts_with("link")), "the root namespace got links: {:?}", remains(&tag));

    // Every node is its own daemon with its own name, address and a running pod.
    std::thread::scope(|s| {
        for (k, node) in cluster.nodes().iter().enumerate() {
            s.spawn(move || {
                let want = format!("sk-node-{}", k + 1);
                assert_eq!(node.skerryd.node_name(), want);
                node.import_busybox();
                node.apply(&busybox_pod("idle", "Always", &["sleep", "3600"]));
                let pod = node.wait_running("idle");
                assert_eq!(pod["spec"]["nodeName"], want.as_str());
                assert_eq!(pod["status"]["hostIP"], node.node_ip().to_string().as_str());
            });
        }
    });
    let ips: Vec<Ipv4Addr> = (1..=3).map(|i| cluster.node_ip(i)).collect();
    let (net, _) = cluster.subnet();
    assert_eq!(ips, (1..=3).map(|i| Ipv4Addr::from(u32::from(net) + i)).collect::<Vec<_>>());
    assert!(cluster.nodes().iter().all(no_default_route), "a node has a default route");

    // Node 1 reaches listeners on nodes 2 and 3.
    let n1 = cluster.node(1);
    let (l2, a2) = listen_on(cluster.node(2));
    let (l3, a3) = listen_on(cluster.node(3));
    for (l, a) in [(&l2, a2), (&l3, a3)] {
        connect_from(n1, a).unwrap_or_else(|e| panic!("node 1 → {a}: {e}"));
        assert_accepted_from(l, ips[0]);
    }

    // Nothing outside the /24 is routed: the connect fails at once, before any packet is sent.
    let outside: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let t = Instant::now();
    let err = connect_from(n1, outside).expect_err("node 1 reached 192.0.2.1");
    assert_eq!(err.kind(), ErrorKind::NetworkUnreachable, "node 1 → {outside}: {err}");
    assert!(t.elapsed() < Duration::from_millis(200), "the unreachable connect took {:?}", t.elapsed());

    // A cut node is unreachable (and cannot reach out); others are not affected; heal restores it.
    cluster.cut(2);
    let err = connect_from(n1, a2).expect_err("node 1 reached node 2 while it was cut");
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "node 1 → cut node 2 failed unexpectedly: {err}"
    );
    let err = connect_from(cluster.node(2), a3).expect_err("cut node 2 reached node 3");
    assert!(matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::HostUnreachable), "node 2 → node 3: {err}");
    connect_from(n1, a3).unwrap_or_else(|e| panic!("node 1 → node 3 while node 2 is cut: {e}"));
    assert_accepted_from(&l3, ips[0]);
    cluster.heal(2);
    wait_until(Instant::now() + Duration::from_secs(10), "node 1 reaches node 2 again after heal", || {
        connect_from(n1, a2).is_ok()
    });
    assert_accepted_from(&l2, ips[0]);
    // The daemons and pods were not disturbed by any of it.
    for node in cluster.nodes() {
        assert_eq!(node.pod("idle")["status"]["phase"], "Running", "{}", node.log_tail(20));
    }

    drop((l2, l3));
    drop(cluster);
    assert_eq!(remains(&tag), Vec::<String>::new(), "the cluster left these behind");
    eprintln!("cluster of 3 booted in {booted:?}; whole test {:?}", t0.elapsed());
}

#[test]
fn shared_containerd_node_survives_power_loss_and_restart() {
    let mut cluster = TestCluster::builder(2).shared_containerd().start();
    let tag = cluster.tag().to_string();
    for node in cluster.nodes() {
        assert!(!node.owns_containerd(), "nodes of a shared-containerd cluster must not own it");
        node.import_busybox();
        node.apply(&busybox_pod("idle", "Always", &["sleep", "3600"]));
    }
    let started = |p: &serde_json::Value| p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let before = started(&cluster.node(2).wait_running("idle"));
    cluster.node(1).wait_running("idle");
    // startedAt counts whole seconds: let one pass so a new start shows.
    std::thread::sleep(Duration::from_millis(1100));

    cluster.kill9(2);
    assert!(cluster.node(2).skerryd.pid().is_none());
    assert!(cluster.node(2).ctd.pid().is_some(), "a node's power loss must not kill the shared containerd");
    cluster.restart(2);
    // The pod's container died with the node and is started again.
    cluster.node(2).wait_pod("idle", "runs again after the power loss", |p| {
        let now = started(p);
        now.is_string() && now.as_str() > before.as_str()
    });
    // Node 1 saw nothing of it.
    assert_eq!(cluster.node(1).pod("idle")["status"]["containerStatuses"][0]["restartCount"], 0);

    drop(cluster);
    assert_eq!(remains(&tag), Vec::<String>::new(), "the cluster left these behind");
}
