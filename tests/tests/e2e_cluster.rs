//! Clusters, part 1, end to end: real `skerryd`s in their own network namespaces on one test
//! switch join one cluster with tokens over mutual TLS, replicate one state with Raft, and place
//! pods on each other.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::cluster::TestCluster;
use skerry_tests::skerryd::{TestNode, BUSYBOX};
use skerry_tests::wait_until;

const DEADLINE: Duration = Duration::from_secs(90);

fn nodes_ready(node: &TestNode, want: usize) -> bool {
    let out = node.skerry(&["get", "nodes", "--no-headers"]);
    out.code == 0 && out.stdout.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() == want
}

fn json(node: &TestNode, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&node.skerry_ok(&all)).expect("skerry -o json prints JSON")
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {BUSYBOX}\n        imagePullPolicy: Never\n        command: [sleep, '3600']\n"
    )
}

#[test]
fn three_servers_join_with_tokens_share_one_state_and_spread_a_deployment() {
    let cluster = TestCluster::builder(3).servers(3).start();
    let (n1, n2, n3) = (cluster.node(1), cluster.node(2), cluster.node(3));
    wait_until(Instant::now() + DEADLINE, "three Ready nodes, seen from every server", || {
        cluster.nodes().iter().all(|n| nodes_ready(n, 3))
    });
    // kubectl's columns; every server is a control-plane node.
    let table = n2.skerry_ok(&["get", "nodes"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{table}");
    for i in 1..=3 {
        let row = table.lines().find(|l| l.starts_with(&format!("sk-node-{i} "))).unwrap_or_else(|| panic!("{table}"));
        assert!(row.contains("control-plane"), "{row}");
    }
    let wide = n3.skerry_ok(&["get", "nodes", "-o", "wide"]);
    for i in 1..=3 {
        assert!(wide.contains(&cluster.node_ip(i).to_string()), "node {i}'s address missing:\n{wide}");
    }

    // The leader gives every node its own pod network.
    wait_until(Instant::now() + DEADLINE, "three distinct pod CIDRs", || {
        let nodes = json(n2, &["get", "nodes"]);
        let mut cidrs: Vec<String> = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["spec"]["podCIDR"].as_str().map(str::to_string))
            .collect();
        cidrs.sort();
        cidrs == ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]
    });

    // Tokens: made on node 1, listed on any server, secrets never shown.
    let tokens = n3.skerry_ok(&["token", "list"]);
    assert_eq!(
        tokens.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "ROLE", "TTL", "EXPIRES", "USES", "DESCRIPTION"]
    );
    assert_eq!(tokens.lines().count(), 3, "{tokens}");
    assert!(tokens.contains("server") && tokens.contains("agent"), "{tokens}");

    // A write through a follower is acknowledged once applied there, and every server has it.
    for node in cluster.nodes() {
        node.import_busybox();
    }
    n2.apply(&deployment("web", 6));
    assert_eq!(json(n2, &["get", "deployment", "web"])["spec"]["replicas"], 6);
    for node in [n1, n3] {
        wait_until(Instant::now() + DEADLINE, "the deployment replicated", || {
            node.skerry(&["get", "deployment", "web"]).code == 0
        });
    }

    // The leader spreads the six replicas over the three nodes; each node runs its own.
    wait_until(Instant::now() + DEADLINE, "six running replicas", || {
        let pods = json(n1, &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 6 && items.iter().all(|p| p["status"]["phase"] == "Running")
    });
    let pods = json(n3, &["get", "pods", "-l", "app=web"]);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods["items"].as_array().unwrap() {
        let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
        let host_ip = p["status"]["hostIP"].as_str().unwrap().to_string();
        let i: u8 = node.trim_start_matches("sk-node-").parse().unwrap();
        assert_eq!(host_ip, cluster.node_ip(i).to_string(), "{node} reported another node's address");
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{per_node:?}");
    eprintln!("{table}{wide}{tokens}{per_node:?}");

    // A pod that fits nowhere stays Pending with kube-scheduler's words.
    let big = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: main\n    image: skerry-test/busybox:1\n    imagePullPolicy: Never\n    resources:\n      requests:\n        memory: 100Ti\n";
    n3.apply(big);
    wait_until(Instant::now() + DEADLINE, "the scheduler's FailedScheduling message", || {
        let pod = json(n1, &["get", "pod", "huge"]);
        pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "PodScheduled"
                && c["message"].as_str().unwrap_or("").starts_with("0/3 nodes are available: 3 Insufficient memory.")
        })
    });

    // `delete node` of a server takes it out of the Raft group.
    n1.skerry_ok(&["delete", "node", "sk-node-3"]);
    wait_until(Instant::now() + DEADLINE, "the leader removes sk-node-3 from the Raft group", || {
        cluster.nodes().iter().any(|n| n.skerryd.log().contains("removed a deleted server from the Raft group"))
    });
}

/// Runs `skerryd --join` to completion from node `from`'s namespace with a fresh data dir, as
/// node `name`; returns its output.
fn join_attempt(from: &TestNode, server: &TestNode, name: &str, token: &str) -> skerry_tests::skerryd::Output {
    let dir = tempfile::Builder::new().prefix("sk-join-").tempdir_in("/tmp").unwrap();
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    let (config, data, socket) =
        (dir.path().join("config.yaml"), dir.path().join("data"), dir.path().join("skerry.sock"));
    let url = format!("https://{}:6443", server.node_ip());
    let ip = from.node_ip().to_string();
    from.skerryd.run_skerryd(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "--node-name",
        name,
        "--node-ip",
        &ip,
        "--join",
        &url,
        "--token",
        token,
    ])
}

/// Runs a join that must fail with `want` in its message, and never print the secret.
fn assert_refused(joiner: &TestNode, server: &TestNode, name: &str, token: &str, want: &str) {
    let out = join_attempt(joiner, server, name, token);
    assert_ne!(out.code, 0, "the join should have failed:\n{out}");
    assert!(out.stderr.contains(want), "expected {want:?} in:\n{out}");
    if let Some(secret) = token.split('.').nth(3) {
        assert!(!out.stderr.contains(secret), "the secret reached the output:\n{out}");
    }
}

/// Every way a join can be refused gets its own clear message on the joining side, and the
/// server records nothing: no Node, no use of a token spent.
#[test]
fn every_join_refusal_is_clear_and_records_nothing() {
    let cluster = TestCluster::builder(2).start();
    let (server, joiner) = (cluster.node(1), cluster.node(2));
    let token = |args: &[&str]| {
        let mut all = vec!["token", "create"];
        all.extend(args);
        server.skerry_ok(&all).trim().to_string()
    };
    let good = token(&["--role", "agent", "--uses", "5"]);
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(parts.len(), 4, "{good}");

    // Malformed: refused before anything is sent.
    assert_refused(joiner, server, "j1", "SKR1.abc", "a join token has four parts");
    // Another cluster's CA hash: refused before the secret is sent.
    let other_ca = format!("SKR1.{}.{}.{}", "0".repeat(64), parts[2], parts[3]);
    assert_refused(joiner, server, "j1", &other_ca, "does not match the token's CA hash");
    // A wrong secret and an unknown id get the same answer.
    let wrong_secret = format!("SKR1.{}.{}.{}", parts[1], parts[2], "x".repeat(32));
    let unknown_id = format!("SKR1.{}.{}.{}", parts[1], "zzzzzz", parts[3]);
    let not_valid = "the join token is not valid: no token has this id and secret";
    assert_refused(joiner, server, "j1", &wrong_secret, not_valid);
    assert_refused(joiner, server, "j1", &unknown_id, not_valid);
    // A deleted token is unknown.
    let deleted = token(&["--role", "agent"]);
    let deleted_id = deleted.split('.').nth(2).unwrap().to_string();
    server.skerry_ok(&["token", "delete", &deleted_id]);
    assert_refused(joiner, server, "j1", &deleted, not_valid);
    // A node name that is taken.
    assert_refused(joiner, server, "sk-node-1", &good, "a node named \"sk-node-1\" is already in the cluster");
    // An expired token.
    let expiring = token(&["--role", "agent", "--ttl", "1s"]);
    wait_until(Instant::now() + DEADLINE, "the token to expire", || {
        server.skerry_ok(&["token", "list"]).contains("expired")
    });
    assert_refused(joiner, server, "j1", &expiring, "expired at");

    // Nothing was recorded: no node, and the good token still has all its uses.
    let nodes = server.skerry_ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(nodes.lines().count(), 1, "{nodes}");
    let uses = |id: &str| {
        let list = server.skerry_ok(&["token", "list"]);
        list.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{list}"))
            .split_whitespace()
            .nth(4)
            .unwrap()
            .to_string()
    };
    assert_eq!(uses(parts[2]), "5");

    // A token of one use: the first join takes it, the second is refused as used up.
    let once = token(&["--role", "agent", "--uses", "1"]);
    let once_id = once.split('.').nth(2).unwrap().to_string();
    let first = join_attempt(joiner, server, "j-once", &once);
    assert!(first.stderr.contains("joined the cluster"), "the first join should have succeeded:\n{first}");
    assert_eq!(uses(&once_id), "0");
    assert_refused(joiner, server, "j-twice", &once, "has no uses left");
}

/// The node whose log says it leads now: the last `leading:` line not followed by a
/// `leadership lost` line, among running nodes.
fn leader(cluster: &TestCluster, alive: &[u8]) -> Option<u8> {
    alive.iter().copied().find(|&i| {
        let log = cluster.node(i).skerryd.log();
        let led = log.rfind("leading: scheduler and controllers started");
        let lost = log.rfind("leadership lost");
        led.is_some() && lost < led
    })
}

fn count(node: &TestNode, kind: &str, selector: &str) -> Option<usize> {
    let out = node.skerry(&["get", kind, "-l", selector, "-o", "json"]);
    if out.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["items"].as_array().map(Vec::len)
}

/// Power loss of the leader under a Deployment scale-up: the others elect a new leader, whose
/// controllers finish the scale-up with no pod doubled; every acknowledged write survives, and
/// the old leader comes back as a follower with all of it.
#[test]
fn the_leaders_power_loss_loses_nothing_and_doubles_nothing() {
    let mut cluster = TestCluster::builder(3).servers(3).start();
    wait_until(Instant::now() + DEADLINE, "three Ready nodes", || nodes_ready(cluster.node(1), 3));
    for node in cluster.nodes() {
        node.import_busybox();
    }
    let first = leader(&cluster, &[1, 2, 3]).expect("a leader among the servers");
    let survivors: Vec<u8> = (1..=3).filter(|&i| i != first).collect();
    let (a, b) = (survivors[0], survivors[1]);
    cluster.node(a).apply(&deployment("web", 3));
    wait_until(Instant::now() + DEADLINE, "three web pods", || count(cluster.node(a), "pods", "app=web") == Some(3));

    // Scale up, then the leader loses power at once.
    cluster.node(a).skerry_ok(&["scale", "deployment", "web", "--replicas", "9"]);
    cluster.kill9(first);
    // Writes acknowledged by the survivors while (and after) they elect a new leader.
    let mut acknowledged = Vec::new();
    for k in 0..10 {
        let node = cluster.node(if k % 2 == 0 { a } else { b });
        let out = node.skerry(&["create", "namespace", &format!("ack-{k}")]);
        if out.code == 0 {
            acknowledged.push(format!("ack-{k}"));
        } else {
            eprintln!("write {k} not acknowledged:\n{out}");
        }
    }
    wait_until(Instant::now() + DEADLINE, "a new leader among the survivors", || {
        leader(&cluster, &survivors).is_some()
    });
    // The new leader's controllers finish the scale-up: exactly nine pods, never more.
    wait_until(Instant::now() + DEADLINE, "nine web pods", || count(cluster.node(b), "pods", "app=web") == Some(9));
    let rs = json(cluster.node(a), &["get", "replicasets", "-l", "app=web"]);
    assert_eq!(rs["items"].as_array().unwrap().len(), 1, "one ReplicaSet: {rs}");
    assert_eq!(rs["items"][0]["spec"]["replicas"], 9);

    // The old leader boots again, follows, and has every acknowledged write and no extra pod.
    cluster.restart(first);
    for i in 1..=3 {
        let node = cluster.node(i);
        wait_until(Instant::now() + DEADLINE, "every acknowledged write on every server", || {
            acknowledged.iter().all(|name| node.skerry(&["get", "namespace", name]).code == 0)
        });
        assert_eq!(count(node, "pods", "app=web"), Some(9), "node {i}");
    }
    assert!(acknowledged.len() >= 8, "only {acknowledged:?} of 10 writes were acknowledged during the failover");
}

/// Every server stops and all start again together: the cluster elects a leader, keeps every
/// object and revision, and no running container is restarted.
#[test]
fn the_whole_cluster_restarts_with_its_state_and_running_pods() {
    let mut cluster = TestCluster::builder(3).servers(3).start();
    wait_until(Instant::now() + DEADLINE, "three Ready nodes", || nodes_ready(cluster.node(1), 3));
    for node in cluster.nodes() {
        node.import_busybox();
    }
    cluster.node(2).apply(&deployment("web", 3));
    let running = |node: &TestNode| {
        let pods = json(node, &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 3 && items.iter().all(|p| p["status"]["phase"] == "Running")).then_some(items)
    };
    wait_until(Instant::now() + DEADLINE, "three running replicas", || running(cluster.node(1)).is_some());
    let fingerprint = |items: Vec<Value>| {
        let mut v: Vec<(String, String, String, String)> = items
            .iter()
            .map(|p| {
                let c = &p["status"]["containerStatuses"][0];
                (
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    p["spec"]["nodeName"].as_str().unwrap().to_string(),
                    c["restartCount"].to_string(),
                    c["state"]["running"]["startedAt"].to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = fingerprint(running(cluster.node(1)).unwrap());
    let deployment_before = json(cluster.node(3), &["get", "deployment", "web"]);
    let rv = |d: &Value| d["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();

    cluster.restart_all();
    wait_until(Instant::now() + DEADLINE, "three Ready nodes after the restart", || {
        cluster.nodes().iter().all(|n| nodes_ready(n, 3))
    });
    for i in 1..=3 {
        let node = cluster.node(i);
        wait_until(Instant::now() + DEADLINE, "the replicas still running", || running(node).is_some());
        assert_eq!(fingerprint(running(node).unwrap()), before, "node {i}: a pod was replaced or restarted");
        // The same object (controllers may have written its status since; revisions only go on).
        let deployment = json(node, &["get", "deployment", "web"]);
        assert_eq!(deployment["metadata"]["uid"], deployment_before["metadata"]["uid"], "node {i}");
        assert_eq!(deployment["metadata"]["generation"], deployment_before["metadata"]["generation"], "node {i}");
        assert!(rv(&deployment) >= rv(&deployment_before), "node {i}: the revision went back");
    }
    // The cluster takes writes again.
    cluster.node(3).skerry_ok(&["create", "namespace", "after-restart"]);
    wait_until(Instant::now() + DEADLINE, "the new namespace on node 1", || {
        cluster.node(1).skerry(&["get", "namespace", "after-restart"]).code == 0
    });
}

/// Three servers and two agents: agents join with an agent token, register, run the pods placed
/// on them from their mirror and write their status through the servers; their socket reads
/// the mirror and refuses changes, naming the servers.
#[test]
fn agents_run_pods_from_their_mirror_and_refuse_changes() {
    let cluster = TestCluster::builder(5).servers(3).start();
    let (n1, n4, n5) = (cluster.node(1), cluster.node(4), cluster.node(5));
    wait_until(Instant::now() + DEADLINE, "five Ready nodes", || nodes_ready(n1, 5));
    let table = n1.skerry_ok(&["get", "nodes"]);
    for i in 4..=5 {
        let row = table.lines().find(|l| l.starts_with(&format!("sk-node-{i} "))).unwrap_or_else(|| panic!("{table}"));
        assert_eq!(row.split_whitespace().nth(2), Some("<none>"), "an agent has no role: {row}");
    }
    for node in cluster.nodes() {
        node.import_busybox();
    }
    // A pod with a nodeSelector lands on the labelled agent and runs there.
    n1.skerry_ok(&["label", "node", "sk-node-4", "site=shop-12"]);
    let pinned = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pinned\nspec:\n  nodeSelector: {{site: shop-12}}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n"
    );
    n1.apply(&pinned);
    wait_until(Instant::now() + DEADLINE, "the pinned pod running on sk-node-4", || {
        let pod = json(n1, &["get", "pod", "pinned"]);
        pod["spec"]["nodeName"] == "sk-node-4" && pod["status"]["phase"] == "Running"
    });
    assert_eq!(json(n1, &["get", "pod", "pinned"])["status"]["hostIP"], cluster.node_ip(4).to_string().as_str());
    // The agent's socket reads its mirror: its own pod is there.
    wait_until(Instant::now() + DEADLINE, "the pinned pod in node 4's mirror", || {
        n4.skerry(&["get", "pod", "pinned"]).code == 0
    });
    // Required node affinity (In on the hostname label) places a pod on that node.
    let affine = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: affine\nspec:\n  terminationGracePeriodSeconds: 1\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {{key: kubernetes.io/hostname, operator: In, values: [sk-node-5]}}\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n"
    );
    n1.apply(&affine);
    wait_until(Instant::now() + DEADLINE, "the affine pod running on sk-node-5", || {
        let pod = json(n1, &["get", "pod", "affine"]);
        pod["spec"]["nodeName"] == "sk-node-5" && pod["status"]["phase"] == "Running"
    });
    // Changes on an agent's socket are refused, naming the servers.
    let out = n5.skerry(&["create", "namespace", "from-agent"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("sk-node-5 is an agent"), "{out}");
    assert!(out.stderr.contains(&format!("https://{}:6443", cluster.node_ip(1))), "{out}");

    // A Deployment spreads over all five nodes.
    n1.apply(&deployment("web", 5));
    wait_until(Instant::now() + DEADLINE, "five running replicas", || {
        let pods = json(n1, &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 5 && items.iter().all(|p| p["status"]["phase"] == "Running")
    });
    let pods = json(n1, &["get", "pods", "-l", "app=web"]);
    let mut nodes: Vec<&str> =
        pods["items"].as_array().unwrap().iter().map(|p| p["spec"]["nodeName"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["sk-node-1", "sk-node-2", "sk-node-3", "sk-node-4", "sk-node-5"]);

    // A taint keeps new pods off sk-node-5; draining sk-node-4 moves its replica elsewhere.
    n1.skerry_ok(&["taint", "node", "sk-node-5", "dedicated=cam:NoSchedule"]);
    n1.skerry_ok(&["drain", "sk-node-4", "--force", "--grace-period", "1", "--timeout", "60s"]);
    let cordoned = n1.skerry_ok(&["get", "node", "sk-node-4", "--no-headers"]);
    assert_eq!(cordoned.split_whitespace().nth(1), Some("Ready,SchedulingDisabled"), "{cordoned}");
    wait_until(Instant::now() + DEADLINE, "five running replicas again, none on sk-node-4 or sk-node-5", || {
        let pods = json(n1, &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 5
            && items.iter().all(|p| p["status"]["phase"] == "Running")
            && items.iter().filter(|p| p["spec"]["nodeName"] == "sk-node-4").count() == 0
    });
    let pods = json(n1, &["get", "pods", "-l", "app=web"]);
    let on_5 = pods["items"].as_array().unwrap().iter().filter(|p| p["spec"]["nodeName"] == "sk-node-5").count();
    assert_eq!(on_5, 1, "the replica placed before the taint stays (NoSchedule does not evict)");
    // A pod that fits nowhere: kube-scheduler's words, over all five nodes.
    let picky = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: picky\nspec:\n  nodeSelector: {{site: nowhere}}\n  containers:\n  - name: main\n    image: {BUSYBOX}\n"
    );
    n1.apply(&picky);
    wait_until(Instant::now() + DEADLINE, "FailedScheduling over five nodes", || {
        let pod = json(n1, &["get", "pod", "picky"]);
        pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "PodScheduled" && c["message"].as_str().unwrap_or("").starts_with("0/5 nodes are available: ")
        })
    });
    let pod = json(n1, &["get", "pod", "picky"]);
    let message = pod["status"]["conditions"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("1 node(s) had untolerated taint(s)"), "{message}");
    assert!(message.contains("1 node(s) were unschedulable"), "{message}");
    assert!(message.contains("3 node(s) didn't match Pod's node affinity/selector"), "{message}");
}

/// Two of three servers are lost for good: the survivor refuses writes with a message naming
/// `--cluster-reset`; after it, the survivor — a server that had joined — is a cluster of one
/// with every object it had, and takes writes.
#[test]
fn a_survivor_of_a_lost_quorum_is_reset_into_a_cluster_of_one() {
    let mut cluster = TestCluster::builder(3).servers(3).start();
    wait_until(Instant::now() + DEADLINE, "three Ready nodes", || nodes_ready(cluster.node(1), 3));
    cluster.node(2).skerry_ok(&["create", "namespace", "kept"]);
    wait_until(Instant::now() + DEADLINE, "the namespace on node 3", || {
        cluster.node(3).skerry(&["get", "namespace", "kept"]).code == 0
    });
    cluster.kill9(1);
    cluster.kill9(3);
    let out = cluster.node(2).skerry(&["create", "namespace", "lost"]);
    assert_ne!(out.code, 0, "a write without a quorum: {out}");
    assert!(out.stderr.contains("--cluster-reset"), "{out}");

    let survivor = &mut cluster.node_mut(2).skerryd;
    survivor.stop();
    let reset = survivor.run_own(&["--cluster-reset"]);
    assert_eq!(reset.code, 0, "{reset}");
    assert!(reset.stderr.contains("is now a cluster of one"), "{reset}");
    survivor.start_again();
    let node = cluster.node(2);
    node.skerry_ok(&["get", "namespace", "kept"]);
    node.skerry_ok(&["create", "namespace", "after-reset"]);
    node.skerry_ok(&["get", "namespace", "after-reset"]);
}

/// An agent's own certificate, from its data dir, against a server's cluster port from the
/// agent's namespace: it may read a Secret a pod of its node uses and its own things, and
/// nothing else; it cannot create a pod or change another node. A certificate of another
/// cluster is refused at the handshake.
#[test]
fn an_agents_certificate_can_do_what_a_kubelet_can_and_no_more() {
    use skerryd::cluster::identity::{Ca, Credentials, Role};
    use skerryd::cluster::mirror::http::{HttpSource, RemoteProposer, Servers, Timeouts};
    use skerryd::cluster::mirror::Source;
    use skerryd::objects::resource;
    use skerryd::store::{Command, Propose, Rejection, StoreError};

    let cluster = TestCluster::builder(3).servers(1).start();
    let (server, agent) = (cluster.node(1), cluster.node(2));
    wait_until(Instant::now() + DEADLINE, "three Ready nodes", || nodes_ready(server, 3));
    agent.import_busybox();
    for name in ["used", "unused"] {
        server.apply(&format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  k: v\n"));
    }
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: user\nspec:\n  nodeName: sk-node-2\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n    env:\n    - name: K\n      valueFrom: {{secretKeyRef: {{name: used, key: k}}}}\n"
    );
    server.apply(&pod);
    let url = format!("https://{}:6443", cluster.node_ip(1));
    let pki = agent.skerryd.data_dir().join("pki");
    let other_node = json(server, &["get", "node", "sk-node-3"]);
    let own_node = json(server, &["get", "node", "sk-node-2"]);
    let verdicts = agent.in_netns(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mine = Credentials::load(&pki).expect("the agent's credentials");
            assert_eq!(mine.identity().role, Role::Agent);
            let servers = std::sync::Arc::new(
                Servers::new(vec![url.clone()], mine.client_config().unwrap(), Timeouts::default()).unwrap(),
            );
            let source = HttpSource::new(servers.clone());
            let proposer = RemoteProposer::new(servers);
            let used = source.get(&resource::SECRETS, "default", "used").await.map(|o| o.is_some());
            let unused = source.get(&resource::SECRETS, "default", "unused").await.map(|o| o.is_some());
            let nodes = source.get(&resource::NODES, "", "sk-node-3").await.map(|o| o.is_some());
            let new_pod: serde_json::Value = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "sneaky", "namespace": "default", "uid": "u"},
                "spec": {"containers": [{"name": "c", "image": "i"}]}});
            let create = proposer.propose(Command::Create { resource: "pods".into(), object: new_pod }).await;
            let mut changed = other_node.clone();
            changed["metadata"]["labels"]["stolen"] = "yes".into();
            let change_other = proposer.propose(Command::Update { resource: "nodes".into(), object: changed }).await;
            // Its own Node it may write, but not give itself a role (NodeRestriction).
            let mut promoted = own_node.clone();
            promoted["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = "".into();
            let promote = proposer.propose(Command::Update { resource: "nodes".into(), object: promoted }).await;
            // A stranger: a node certificate of another CA.
            let stranger_ca = Ca::create().unwrap();
            let stranger =
                skerryd::cluster::pki::issue(&stranger_ca, "sk-node-2", &[], jiff::Timestamp::now()).unwrap();
            let tls = Servers::new(vec![url], stranger.client_config().unwrap(), Timeouts::default()).unwrap();
            let foreign = HttpSource::new(std::sync::Arc::new(tls)).get(&resource::NODES, "", "sk-node-1").await;
            let forbidden = |r: &Result<skerryd::store::Applied, StoreError>| match r {
                Err(StoreError::Rejected(Rejection::Forbidden { message })) => message.clone(),
                other => panic!("expected a Forbidden answer, got {other:?}"),
            };
            (
                used.map_err(|e| e.to_string()),
                unused.map_err(|e| e.to_string()),
                nodes.map_err(|e| e.to_string()),
                forbidden(&create),
                forbidden(&change_other),
                forbidden(&promote),
                foreign.map_err(|e| e.to_string()),
            )
        })
    });
    let (used, unused, nodes, create, change_other, promote, foreign) = verdicts;
    assert_eq!(used, Ok(true), "a Secret its pod uses");
    let unused = unused.expect_err("a Secret no pod of the node uses");
    assert!(unused.contains("no relationship found between node 'sk-node-2' and this object"), "{unused}");
    assert_eq!(nodes, Ok(true), "Nodes are readable");
    assert!(create.contains("User \"system:node:sk-node-2\" cannot create resource \"pods\""), "{create}");
    assert!(change_other.contains("nodes \"sk-node-3\" is forbidden"), "{change_other}");
    assert!(promote.contains("is not allowed to modify labels: node-role.kubernetes.io/control-plane"), "{promote}");
    assert!(foreign.is_err(), "a certificate of another CA got an answer: {foreign:?}");
    // Nothing changed.
    assert_eq!(server.skerry(&["get", "pod", "sneaky"]).code, 1);
    assert!(json(server, &["get", "node", "sk-node-3"])["metadata"]["labels"].get("stolen").is_none());
    let roles = json(server, &["get", "node", "sk-node-2"])["metadata"]["labels"].clone();
    assert!(roles.get("node-role.kubernetes.io/control-plane").is_none(), "{roles}");
}

/// An agent that loses power stops answering the leader: after the grace period its Node is
/// NotReady (Ready=Unknown, kube's reason) and new pods go elsewhere; booted again, it is Ready.
#[test]
fn a_silent_node_becomes_not_ready_and_ready_again_when_it_is_back() {
    let mut cluster = TestCluster::builder(2).servers(1).args(&["--node-monitor-grace-period", "4s"]).start();
    wait_until(Instant::now() + DEADLINE, "two Ready nodes", || nodes_ready(cluster.node(1), 2));
    cluster.kill9(2);
    wait_until(Instant::now() + DEADLINE, "the agent NotReady", || {
        let out = cluster.node(1).skerry_ok(&["get", "node", "sk-node-2", "--no-headers"]);
        out.split_whitespace().nth(1) == Some("NotReady")
    });
    let node = json(cluster.node(1), &["get", "node", "sk-node-2"]);
    let ready = node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "Unknown", "{ready}");
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.", "{ready}");
    // Nothing new is placed on it.
    cluster.node(1).import_busybox();
    cluster.node(1).apply(&deployment("web", 2));
    wait_until(Instant::now() + DEADLINE, "two web pods placed", || {
        let pods = json(cluster.node(1), &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 2 && items.iter().all(|p| p["spec"]["nodeName"].is_string())
    });
    let pods = json(cluster.node(1), &["get", "pods", "-l", "app=web"]);
    assert!(pods["items"].as_array().unwrap().iter().all(|p| p["spec"]["nodeName"] == "sk-node-1"), "{pods}");
    // Back: Ready again.
    cluster.restart(2);
    wait_until(Instant::now() + DEADLINE, "the agent Ready again", || nodes_ready(cluster.node(1), 2));
}
