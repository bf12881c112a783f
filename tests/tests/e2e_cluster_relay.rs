//! Clusters, part 1, end to end: `logs` (also `-f` and `--previous`), `exec` (also `-it`), `top`
//! and `describe node` from one server's socket for pods on the other nodes, relayed over the
//! cluster port with mutual TLS; a node cut off the LAN is a clear error in bounded time.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use skerry_tests::cluster::TestCluster;
use skerry_tests::pty::Pty;
use skerry_tests::skerryd::{busybox_pod, run_with_timeout, TestNode};
use skerry_tests::wait_until;

const DEADLINE: Duration = Duration::from_secs(90);
const T: Duration = Duration::from_secs(30);

/// A busybox pod running `command`, bound to `node` by `spec.nodeName`.
fn pinned(name: &str, node: &str, restart: &str, command: &[&str]) -> String {
    busybox_pod(name, restart, command).replacen("spec:\n", &format!("spec:\n  nodeName: {node}\n"), 1)
}

fn nodes_ready(node: &TestNode, want: usize) -> bool {
    let out = node.skerry(&["get", "nodes", "--no-headers"]);
    out.code == 0 && out.stdout.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() == want
}

/// The names in the first column of a table's rows.
fn first_column(table: &str) -> Vec<String> {
    table.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

#[test]
fn logs_exec_top_and_describe_reach_pods_on_every_node() {
    let cluster = TestCluster::builder(3).servers(3).start();
    let n1 = cluster.node(1);
    wait_until(Instant::now() + DEADLINE, "three Ready nodes", || nodes_ready(n1, 3));
    for node in cluster.nodes() {
        node.import_busybox();
    }
    let ticker = ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done"];
    n1.apply(&pinned("ticker", "sk-node-2", "Always", &ticker));
    n1.apply(&pinned("crash", "sk-node-2", "Always", &["sh", "-c", "echo crashing; sleep 1; exit 1"]));
    n1.apply(&pinned("shell", "sk-node-3", "Always", &["sleep", "3600"]));
    n1.apply(&pinned("home", "sk-node-1", "Always", &["sleep", "3600"]));
    for pod in ["ticker", "shell", "home"] {
        n1.wait_running(pod);
    }

    // Logs, relayed to the pod's node.
    let out =
        n1.wait_output(&["logs", "ticker"], "shows node 2's pod's log", |o| o.code == 0 && o.stdout.contains("tick 1"));
    assert!(out.stdout.starts_with("tick 0\ntick 1\n"), "{out}");
    let out = n1.wait_output(&["logs", "ticker", "--tail", "1"], "shows one line", |o| o.code == 0);
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    // --previous: the crashed run's output.
    n1.wait_pod("crash", "has restarted", |p| p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1));
    let out = n1.wait_output(&["logs", "crash", "--previous"], "shows the previous run", |o| o.code == 0);
    assert_eq!(out.stdout, "crashing\n", "{out}");

    // logs -f streams: new lines keep arriving through the relay.
    let mut follow = n1
        .skerryd
        .command(&["logs", "-f", "ticker", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning skerry logs -f");
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("skerry logs -f showed only {seen:?} within {T:?}"),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let numbers: Vec<u64> = seen.iter().map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "consecutive ticks as they come: {seen:?}");

    // Exec on node 3 from node 1: output and exit codes.
    let out = n1.skerry(&["exec", "shell", "--", "echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out}");
    let out = n1.skerry(&["exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!((out.code, out.stderr.as_str()), (3, "oops\ncommand terminated with exit code 3\n"), "{out}");
    let out = run_with_timeout(n1.skerryd.command(&["exec", "-i", "shell", "--", "cat"]), Some(b"piped through\n"), T);
    assert_eq!((out.code, out.stdout.as_str()), (0, "piped through\n"), "stdin reaches the remote pod: {out}");
    let mut sh = Pty::spawn(n1.skerryd.command(&["exec", "-it", "shell", "--", "sh"]), 30, 90);
    sh.expect("# ", T);
    sh.send(b"echo relayed-$((40+2)); stty size\r");
    sh.expect("relayed-42", T);
    sh.expect("30 90", T);
    sh.send(b"exit 4\r");
    assert_eq!(sh.wait(T), 4, "{}", sh.output());

    // top: pods of every node, every node.
    let out = n1.wait_output(&["top", "pods"], "lists the pods of all three nodes", |o| {
        let names = first_column(&o.stdout);
        o.code == 0 && ["home", "shell", "ticker"].iter().all(|p| names.iter().any(|n| n == p))
    });
    assert_eq!(
        out.stdout.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CPU(cores)", "MEMORY(bytes)"],
        "{out}"
    );
    let out = n1.wait_output(&["top", "nodes"], "lists all three nodes with metrics", |o| {
        o.code == 0 && o.stdout.lines().skip(1).filter(|l| !l.contains("<unknown>")).count() == 3
    });
    assert_eq!(first_column(&out.stdout), ["sk-node-1", "sk-node-2", "sk-node-3"], "{out}");
    let out = n1.skerry(&["top", "node", "sk-node-3"]);
    assert_eq!((out.code, first_column(&out.stdout)), (0, vec!["sk-node-3".to_string()]), "{out}");

    // describe node: node 2's pods, from node 1.
    let text = n1.skerry_ok(&["describe", "node", "sk-node-2"]);
    let pods = text.split("Non-terminated Pods:").nth(1).unwrap_or_else(|| panic!("{text}"));
    let pods = pods.split("Allocated resources:").next().unwrap();
    assert!(pods.contains("ticker") && pods.contains("crash"), "{text}");
    assert!(!pods.contains("shell") && !pods.contains("home"), "{text}");

    // A node cut off the LAN: a clear error in bounded time, never a hang.
    cluster.cut(3);
    for args in [&["logs", "shell"][..], &["exec", "shell", "--", "true"][..]] {
        let out = n1.skerry(args);
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains("unable to reach node \"sk-node-3\""), "{out}");
        assert!(out.stderr.contains(&cluster.node_ip(3).to_string()), "names the address: {out}");
        assert!(out.stderr.contains("the node may be down"), "{out}");
    }
    let out = n1.skerry(&["top", "nodes"]);
    assert_eq!(out.code, 0, "{out}");
    let row = out.stdout.lines().find(|l| l.starts_with("sk-node-3 ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("<unknown>"), "a node that does not answer has unknown metrics: {out}");
    assert!(out.stderr.contains("Warning: metrics of node \"sk-node-3\" are missing"), "{out}");
    // The other nodes' pods still answer.
    assert_eq!(n1.skerry_ok(&["logs", "crash", "--previous"]), "crashing\n");
    cluster.heal(3);
}

#[test]
fn a_server_reaches_pods_on_an_agent() {
    let cluster = TestCluster::builder(2).servers(1).start();
    let (server, agent) = (cluster.node(1), cluster.node(2));
    wait_until(Instant::now() + DEADLINE, "two Ready nodes", || nodes_ready(server, 2));
    agent.import_busybox();
    server.apply(&pinned("edge", "sk-node-2", "Always", &["sh", "-c", "echo from the agent; sleep 3600"]));
    server.wait_running("edge");
    server.wait_output(&["logs", "edge"], "shows the agent's pod's log", |o| {
        o.code == 0 && o.stdout == "from the agent\n"
    });
    let out = server.skerry(&["exec", "edge", "--", "sh", "-c", "echo hi; exit 5"]);
    assert_eq!((out.code, out.stdout.as_str()), (5, "hi\n"), "{out}");
    server
        .wait_output(&["top", "pods"], "shows the agent's pod", |o| o.code == 0 && first_column(&o.stdout) == ["edge"]);
    server.wait_output(&["top", "nodes"], "shows both nodes with metrics", |o| {
        o.code == 0 && first_column(&o.stdout) == ["sk-node-1", "sk-node-2"] && !o.stdout.contains("<unknown>")
    });
}
