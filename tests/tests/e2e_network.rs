//! Pod networking end to end (issue 3): pod ↔ pod, node ↔ pod and pod → itself by pod IP,
//! hostPorts from the root namespace and their conflicts, the reference CNI plugins in place of
//! skerry-cni, nothing left behind after deletes and crashes, and `skerryd --cleanup`.
//!
//! Every node runs in its own network namespace (`skerry_tests::netns`); the tests send traffic
//! only to pod IPs and to the node's veth address, both inside namespaces they created.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::netns::http_get;
use skerry_tests::skerryd::{
    busybox_pod, column, deadline, run_with_timeout, CniPlugins, Options, Output, TestNode, BUSYBOX, NODE_NAME,
};

/// A pod serving its own hostname as `/` with busybox httpd on port 80, optionally published
/// on `host_port`.
fn web_pod(name: &str, host_port: Option<u16>) -> String {
    let ports = match host_port {
        Some(h) => format!("    ports:\n    - containerPort: 80\n      hostPort: {h}\n"),
        None => "    ports:\n    - containerPort: 80\n".into(),
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www\"]\n{ports}"
    )
}

fn client_pod(name: &str) -> String {
    busybox_pod(name, "Always", &["sleep", "3600"])
}

/// Polls `get` (an HTTP fetch) until it returns `want`; panics with the last error at the deadline.
fn wait_body(what: &str, want: &str, mut get: impl FnMut() -> Result<String, String>) {
    let deadline = deadline();
    let mut last;
    loop {
        match get() {
            Ok(body) if body == want => return,
            Ok(body) => last = format!("answered {body:?}"),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("{what}: no {want:?} within 60 s; last: {last}\n{}", foreign_drop_hint());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A forwarded packet can die in a foreign table of the root namespace only if it is forwarded
/// there; ours never are, but say so when a DROP policy is present (FIELD-NOTES).
fn foreign_drop_hint() -> String {
    let out = Command::new("iptables").args(["-S", "FORWARD"]).output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("-P FORWARD DROP") => {
            "note: the root namespace's iptables FORWARD policy is DROP (dockerd?); node traffic is not forwarded there, but check".into()
        }
        _ => String::new(),
    }
}

/// `exec POD -- wget -qO- URL` as a fetch for [`wait_body`], bounded by busybox `timeout`
/// (Debian's busybox 1.35 `wget -T` segfaults).
fn pod_wget(node: &TestNode, pod: &str, url: &str) -> Result<String, String> {
    let out = node.skerry(&["exec", pod, "--", "timeout", "10", "wget", "-qO-", url]);
    if out.code == 0 {
        Ok(out.stdout)
    } else {
        Err(format!("{out}"))
    }
}

/// `nft ARGS` inside the node's namespace.
fn nft(node: &TestNode, args: &[&str]) -> Output {
    let mut cmd = node.skerryd.net().command("/usr/sbin/nft");
    cmd.args(args);
    run_with_timeout(cmd, None, Duration::from_secs(30))
}

/// The rules of the node's hostport chain that DNAT (empty when the table is absent).
fn hostport_rules(node: &TestNode) -> Vec<String> {
    let out = nft(node, &["list", "table", "inet", "skerry"]);
    if out.code != 0 {
        return Vec::new();
    }
    out.stdout
        .lines()
        .filter(|l| l.contains(" dnat ip to ") || l.contains(" dnat to "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn ip_of(pod: &Value) -> Ipv4Addr {
    pod.pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("pod has no podIP:\n{}", serde_json::to_string_pretty(&pod["status"]).unwrap()))
}

fn in_pod_cidr(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10 && o[1] == 42 && o[2] == 0 && o[3] != 0 && o[3] != 255
}

/// The addresses of a running pod are what Kubernetes reports: podIP(s) from the pod network,
/// hostIP(s) the node's address.
fn check_addresses(node: &TestNode, pod: &Value) -> Ipv4Addr {
    let ip = ip_of(pod);
    assert!(in_pod_cidr(ip), "podIP {ip} is outside the pod network 10.42.0.0/24");
    assert_eq!(pod["status"]["podIPs"], serde_json::json!([{"ip": ip.to_string()}]), "podIPs");
    let node_ip = node.node_ip().to_string();
    // The daemon found the node's address itself: the interface holding its default route.
    assert_eq!(pod["status"]["hostIP"], node_ip.as_str(), "hostIP is the node's eth0 address");
    assert_eq!(pod["status"]["hostIPs"], serde_json::json!([{"ip": node_ip}]), "hostIPs");
    ip
}

#[test]
fn pods_reach_each_other_the_node_and_themselves() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&web_pod("web", None));
    node.apply(&client_pod("client"));
    let web = node.wait_running("web");
    let client = node.wait_running("client");
    let web_ip = check_addresses(&node, &web);
    let client_ip = check_addresses(&node, &client);
    assert_ne!(web_ip, client_ip, "two pods got the same address");
    assert_eq!(node.pod_ip("web"), web_ip);

    // Pod → pod.
    wait_body("client fetching from web by pod IP", "web\n", || {
        pod_wget(&node, "client", &format!("http://{web_ip}/"))
    });
    // Pod → itself through its own address.
    wait_body("web fetching from its own pod IP", "web\n", || pod_wget(&node, "web", &format!("http://{web_ip}/")));
    // Node → pod.
    let web_addr = SocketAddr::from((web_ip, 80));
    node.in_netns(|| {
        wait_body("the node fetching from web", "web\n", || {
            http_get(web_addr, "/", Duration::from_secs(5)).map_err(|e| e.to_string())
        })
    });
    // Pod → node: a listener on the node's address inside the node's namespace.
    let node_ip = node.node_ip();
    let listener = node.in_netns(|| TcpListener::bind((node_ip, 0)).expect("listening on the node's address"));
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let served = std::thread::scope(|s| {
        let server = s.spawn(|| {
            use std::io::{Read, Write};
            let stop = deadline();
            while Instant::now() < stop {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nfrom the node");
                        return Some(peer);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            None
        });
        wait_body("client fetching from the node's address", "from the node", || {
            pod_wget(&node, "client", &format!("http://{node_ip}:{port}/"))
        });
        server.join().unwrap()
    });
    let peer = served.expect("the node's listener saw the pod's connection");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(client_ip),
        "pod → node traffic keeps the pod's source address (no masquerade inside the node)"
    );

    // get -o wide: IP and NODE.
    let wide = node.skerry_ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(column(&wide, "web", "IP").as_deref(), Some(web_ip.to_string().as_str()), "{wide}");
    assert_eq!(column(&wide, "client", "IP").as_deref(), Some(client_ip.to_string().as_str()), "{wide}");
    assert_eq!(column(&wide, "web", "NODE").as_deref(), Some(NODE_NAME), "{wide}");

    // The pod's files: /etc/hosts names it at its address, /etc/hostname and /etc/resolv.conf exist.
    let hosts = node.skerry_ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&web_ip.to_string().as_str()) && f[1..].contains(&"web")
        }),
        "/etc/hosts maps web to {web_ip}:\n{hosts}"
    );
    assert!(
        hosts.lines().any(|l| l.split_whitespace().next() == Some("127.0.0.1")),
        "/etc/hosts has localhost:\n{hosts}"
    );
    assert_eq!(node.skerry_ok(&["exec", "web", "--", "cat", "/etc/hostname"]).trim(), "web");
    let out = node.skerry(&["exec", "web", "--", "test", "-f", "/etc/resolv.conf"]);
    assert_eq!(out.code, 0, "/etc/resolv.conf exists in the pod:\n{out}");
    // The pod's eth0 holds its address.
    let addr = node.skerry_ok(&["exec", "web", "--", "ip", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {web_ip}/")), "{addr}");
}

const HOST_PORT: u16 = 30080;

/// Fetches `/` from the node's hostPort from the ROOT namespace (over the veth pair).
fn root_fetch(node_ip: Ipv4Addr) -> Result<String, String> {
    http_get(SocketAddr::from((node_ip, HOST_PORT)), "/", Duration::from_secs(3)).map_err(|e| e.to_string())
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod.pointer("/status/conditions").and_then(Value::as_array)?.iter().find(|c| c["type"] == kind)
}

#[test]
fn host_port_answers_on_the_node_address_and_conflicts_wait() {
    let node = TestNode::start();
    node.import_busybox();
    let node_ip = node.node_ip();
    node.apply(&web_pod("hp1", Some(HOST_PORT)));
    let hp1 = node.wait_running("hp1");
    let hp1_ip = ip_of(&hp1);
    wait_body("a client in the root namespace fetching node_ip:30080", "hp1\n", || root_fetch(node_ip));
    let rules = hostport_rules(&node);
    assert!(
        rules.iter().any(|r| r.contains(&HOST_PORT.to_string()) && r.contains(&hp1_ip.to_string())),
        "a DNAT rule for the hostPort: {rules:#?}"
    );

    // The same hostPort again: the pod waits, unscheduled, and says why.
    node.apply(&web_pod("hp2", Some(HOST_PORT)));
    let hp2 = node.wait_pod("hp2", "is Unschedulable", |p| {
        condition(p, "PodScheduled").is_some_and(|c| c["status"] == "False" && c["reason"] == "Unschedulable")
    });
    assert_eq!(hp2["status"]["phase"], "Pending", "{}", hp2["status"]);
    assert!(hp2.pointer("/spec/nodeName").is_none(), "hp2 is not bound: {}", hp2["spec"]);
    let d = node.wait_output(&["describe", "pod", "hp2"], "shows a FailedScheduling event", |o| {
        o.stdout.contains("FailedScheduling")
    });
    assert!(d.stdout.contains("Warning  FailedScheduling"), "{}", d.stdout);
    assert_eq!(root_fetch(node_ip).as_deref(), Ok("hp1\n"), "hp1 still owns the hostPort");

    // hp1 goes: its rule goes, hp2 gets the node and the port.
    node.skerry_ok(&["delete", "pod", "hp1"]);
    node.wait_gone_in("default", "hp1");
    let hp2 = node.wait_running("hp2");
    let hp2_ip = ip_of(&hp2);
    wait_body("node_ip:30080 answered by hp2", "hp2\n", || root_fetch(node_ip));
    let rules = hostport_rules(&node);
    assert_eq!(
        rules.iter().filter(|r| r.contains(&HOST_PORT.to_string())).count(),
        1,
        "one rule for the hostPort: {rules:#?}"
    );
    assert!(rules.iter().any(|r| r.contains(&hp2_ip.to_string())), "{rules:#?}");
    assert!(condition(&hp2, "PodScheduled").is_some_and(|c| c["status"] == "True"), "{}", hp2["status"]);

    // hp2 goes too: no rule, and the port is closed (refused or timed out, bounded).
    node.skerry_ok(&["delete", "pod", "hp2"]);
    node.wait_gone_in("default", "hp2");
    skerry_tests::wait_until(deadline(), "the hostPort rule is gone", || hostport_rules(&node).is_empty());
    let started = Instant::now();
    let r = root_fetch(node_ip);
    assert!(r.is_err(), "nothing answers on the hostPort after both pods went: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn reference_plugins_wire_pods_too() {
    let node = TestNode::start_opts(Options { cni: CniPlugins::Reference, ..Default::default() });
    node.import_busybox();
    node.apply(&web_pod("web", None));
    node.apply(&client_pod("client"));
    let web_ip = check_addresses(&node, &node.wait_running("web"));
    let client_ip = check_addresses(&node, &node.wait_running("client"));
    assert_ne!(web_ip, client_ip);
    // host-local keeps its allocations in the node's own data dir.
    let store = node.skerryd.ipam_dir().join("skerry-ref");
    for ip in [web_ip, client_ip] {
        assert!(
            store.join(ip.to_string()).is_file(),
            "host-local recorded {ip} in {}: {:?}",
            store.display(),
            allocations(&store)
        );
    }
    wait_body("client fetching from web (reference plugins)", "web\n", || {
        pod_wget(&node, "client", &format!("http://{web_ip}/"))
    });
    let web_addr = SocketAddr::from((web_ip, 80));
    node.in_netns(|| {
        wait_body("the node fetching from web", "web\n", || {
            http_get(web_addr, "/", Duration::from_secs(5)).map_err(|e| e.to_string())
        })
    });
    // The default route the reference bridge gives with isDefaultGateway: pod → node address.
    let route = node.skerry_ok(&["exec", "client", "--", "ip", "route"]);
    assert!(route.lines().any(|l| l.starts_with("default via 10.42.0.1")), "{route}");
    node.skerry_ok(&["delete", "pod", "web", "client"]);
    node.wait_gone_in("default", "web");
    node.wait_gone_in("default", "client");
    skerry_tests::wait_until(deadline(), "host-local released both addresses", || allocations(&store).is_empty());
}

/// Files of an IPAM store (skerry-cni's and host-local's layout) named after an address.
fn allocations(store: &Path) -> Vec<String> {
    std::fs::read_dir(store)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect()
}

/// What pods left behind on the node: IPAM allocations, host-side veths (`sk` + 11 hex),
/// sandbox directories under the data dir, hostPort rules, `skerry-logger` processes writing
/// into the data dir, shims of the node's containerd and FIFOs (runc's `exec.fifo`, the shims'
/// `log`, exec stdio) in the node's, containerd's and runc's directories.
fn leftovers(node: &TestNode) -> Vec<String> {
    let mut found = Vec::new();
    let store = node.skerryd.ipam_dir().join("skerry");
    found.extend(allocations(&store).into_iter().map(|a| format!("IPAM allocation {}", store.join(a).display())));
    for l in node.skerryd.net().links() {
        if l.len() == 13 && l.starts_with("sk") && l[2..].chars().all(|c| c.is_ascii_hexdigit()) {
            found.push(format!("host veth {l}"));
        }
    }
    let pods = node.skerryd.data_dir().join("pods");
    for e in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        found.push(format!("sandbox dir {}", e.path().display()));
    }
    for m in skerry_tests::skerryd::mounts_below(&pods) {
        found.push(format!("mount {}", m.display()));
    }
    found.extend(hostport_rules(node).into_iter().map(|r| format!("nft rule {r}")));
    for (pid, argv) in node.skerryd.logger_processes() {
        found.push(format!("skerry-logger {pid}: {}", argv.join(" ")));
    }
    let ns = &node.skerryd.ctd_share().namespace;
    for pid in node.ctd.shim_pids(Some(ns)) {
        found.push(format!("containerd shim {pid}"));
    }
    let runc = skerry_tests::containerd::Containerd::runc_state_dir(ns);
    for dir in [node.skerryd.dir().to_path_buf(), node.ctd.dir().to_path_buf(), runc] {
        found.extend(skerry_tests::skerryd::fifos_below(&dir).iter().map(|f| format!("FIFO {}", f.display())));
    }
    found
}

fn assert_nothing_left(node: &TestNode, when: &str) {
    let deadline = deadline();
    loop {
        let left = leftovers(node);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{when}: left behind after 60 s:\n{}\nskerryd log tail:\n{}",
                left.join("\n"),
                node.skerryd.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLs skerryd `after` it created the FIFOs of a new exec, that is while it asks the
/// shim to start it.
fn kill_while_an_exec_starts(node: &mut TestNode, after: Duration) {
    let dirs = [node.skerryd.dir().join("tmp"), node.skerryd.data_dir().join("exec")];
    let execs = || -> Vec<std::ffi::OsString> {
        dirs.iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("skerry-exec-"))
            .collect()
    };
    let before = execs();
    let deadline = deadline();
    while execs().iter().all(|e| before.contains(e)) {
        assert!(Instant::now() < deadline, "no exec started within 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(after);
    node.skerryd.kill();
}

fn pod_with_host_port(name: &str) -> String {
    web_pod(name, Some(30081))
}

#[test]
fn deleted_and_crashed_pods_leave_nothing_behind() {
    let rounds: usize = std::env::var("SKERRY_LEAK_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(10);
    let mut node = TestNode::start();
    node.import_busybox();
    for i in 0..rounds {
        let name = format!("leak-{i}");
        node.apply(&pod_with_host_port(&name));
        node.wait_running(&name);
        assert!(!leftovers(&node).is_empty(), "round {i}: a running pod holds an address, a veth and a rule");
        node.skerry_ok(&["delete", "pod", &name]);
        node.wait_gone_in("default", &name);
        assert_nothing_left(&node, &format!("round {i}"));
    }

    // skerryd killed right after the apply (mid-sandbox or mid-ADD, or before), restarted,
    // then the pod deleted normally.
    node.apply(&pod_with_host_port("crash-early"));
    node.skerryd.kill();
    node.skerryd.start_again();
    node.wait_running("crash-early");
    node.skerry_ok(&["delete", "pod", "crash-early"]);
    node.wait_gone_in("default", "crash-early");
    assert_nothing_left(&node, "after a SIGKILL right after apply");

    // skerryd killed while the pod runs, restarted, the pod deleted.
    node.apply(&pod_with_host_port("crash-running"));
    let ip = ip_of(&node.wait_running("crash-running"));
    node.skerryd.kill();
    node.skerryd.start_again();
    let again = node.wait_running("crash-running");
    assert_eq!(ip_of(&again), ip, "a restart keeps the pod's address");
    // The GC at start kept the running pod's allocation, and its hostPort still answers.
    let store = node.skerryd.ipam_dir().join("skerry");
    assert_eq!(
        allocations(&store),
        [ip.to_string()],
        "after the restart's CNI GC, only the running pod's address is allocated"
    );
    let node_ip = node.node_ip();
    wait_body("node_ip:30081 after skerryd was killed and restarted", "crash-running\n", || {
        http_get(SocketAddr::from((node_ip, 30081)), "/", Duration::from_secs(3)).map_err(|e| e.to_string())
    });
    let pod_addr = SocketAddr::from((ip, 80));
    node.in_netns(|| {
        wait_body("the node fetching from the pod after the restart", "crash-running\n", || {
            http_get(pod_addr, "/", Duration::from_secs(3)).map_err(|e| e.to_string())
        })
    });
    node.skerry_ok(&["delete", "pod", "crash-running"]);
    node.wait_gone_in("default", "crash-running");
    assert_nothing_left(&node, "after a SIGKILL while the pod ran");

    // skerryd killed while exec probes run, restarted, the pods deleted. A kill while a shim
    // is starting an exec leaves it blocked opening the exec's FIFOs (FIELD-NOTES); unreleased,
    // it answers nothing, so the task, the shim and its logger stayed behind.
    let probed: Vec<String> = (0..4).map(|i| format!("probed-{i}")).collect();
    let probe =
        "    readinessProbe:\n      exec:\n        command: [\"sh\", \"-c\", \"sleep 0.2\"]\n      periodSeconds: 1\n";
    let yaml: String = probed.iter().map(|n| format!("{}{probe}---\n", client_pod(n))).collect();
    node.apply(&yaml);
    for after in [25, 50, 80] {
        for n in &probed {
            node.wait_running(n);
        }
        kill_while_an_exec_starts(&mut node, Duration::from_millis(after));
        node.skerryd.start_again();
    }
    for n in &probed {
        node.wait_running(n);
    }
    let mut delete = vec!["delete", "pod"];
    delete.extend(probed.iter().map(String::as_str));
    node.skerry_ok(&delete);
    for n in &probed {
        node.wait_gone_in("default", n);
    }
    assert_nothing_left(&node, "after SIGKILLs while exec probes ran");
}

#[test]
fn cleanup_removes_the_table() {
    let mut node = TestNode::start();
    let config = node.skerryd.dir().join("config.yaml");
    skerry_tests::wait_until(deadline(), "skerryd programmed inet skerry", || {
        nft(&node, &["list", "table", "inet", "skerry"]).code == 0
    });
    node.skerryd.stop();
    let out = node.skerryd.run_skerryd(&["--cleanup", "--config", config.to_str().unwrap()]);
    assert_eq!(out.code, 0, "skerryd --cleanup:\n{out}");
    let listed = nft(&node, &["list", "table", "inet", "skerry"]);
    assert_ne!(listed.code, 0, "the table is gone:\n{listed}");
    // Cleaning up twice is fine.
    let out = node.skerryd.run_skerryd(&["--cleanup", "--config", config.to_str().unwrap()]);
    assert_eq!(out.code, 0, "a second --cleanup:\n{out}");
    node.skerryd.start_again();
}

#[test]
fn host_network_pods_use_the_node_address() {
    let node = TestNode::start();
    node.import_busybox();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostnet\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: skerry-test/busybox:1\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n";
    node.apply(manifest);
    let pod = node.wait_running("hostnet");
    let node_ip = node.node_ip().to_string();
    assert_eq!(
        pod["status"]["podIP"],
        node_ip.as_str(),
        "a hostNetwork pod's podIP is the node's address: {}",
        pod["status"]
    );
    assert_eq!(pod["status"]["hostIP"], node_ip.as_str());
    // It sees the node's interfaces and got no pod network (no address, no veth).
    let addr = node.skerry_ok(&["exec", "hostnet", "--", "ip", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {node_ip}/30")), "{addr}");
    assert!(allocations(&node.skerryd.ipam_dir().join("skerry")).is_empty(), "no pod address for a hostNetwork pod");
    node.skerry_ok(&["delete", "pod", "hostnet"]);
    node.wait_gone_in("default", "hostnet");
}

#[test]
fn each_node_is_its_own_namespace_and_leaves_the_root_one_alone() {
    let root_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let root_has_bridge =
        || Command::new("ip").args(["link", "show", "dev", "skerry0"]).output().is_ok_and(|o| o.status.success());
    let root_bridge_before = root_has_bridge();
    let (name, veth, root_ip);
    {
        let node = TestNode::start();
        let net = node.skerryd.net();
        (name, veth, root_ip) = (net.name().to_string(), net.root_veth().to_string(), net.root_ip());
        assert_eq!(u32::from(net.node_ip()), u32::from(root_ip) + 1);
        assert!(name.starts_with("sk-n") && name.len() == 10, "{name}");
        // skerryd turned forwarding on in its namespace only.
        let fwd = node.in_netns(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap());
        assert_eq!(fwd.trim(), "1", "net.ipv4.ip_forward in the node's namespace");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            root_forward,
            "the root namespace's ip_forward is untouched"
        );
        // The root namespace holds nothing but the connected /30 towards the node.
        let routes = Command::new("ip").args(["-4", "route", "show", "dev", &veth]).output().unwrap();
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        assert_eq!(routes.lines().count(), 1, "{routes}");
        assert!(routes.starts_with(&format!("{}/30 ", Ipv4Addr::from(u32::from(root_ip) - 1))), "{routes}");
        let default = net.ip(&["-4", "route", "show", "default"]);
        assert!(default.contains(&format!("via {root_ip} dev eth0")), "{default}");
        // The skerry0 bridge appears in the node's namespace once a pod is wired, never in the root one.
        node.import_busybox();
        node.apply(&client_pod("c"));
        node.wait_running("c");
        assert!(net.links().iter().any(|l| l == "skerry0"), "{:?}", net.links());
        assert_eq!(root_has_bridge(), root_bridge_before, "the node's pod left the root namespace's bridges alone");
    }
    // Dropping the node removed its namespace and veth pair.
    assert!(!Path::new("/run/netns").join(&name).exists(), "{name} is still there");
    let gone = Command::new("ip").args(["link", "show", &veth]).output().unwrap();
    assert!(!gone.status.success(), "{veth} is still there");
}
