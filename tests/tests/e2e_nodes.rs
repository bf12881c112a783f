//! Nodes end to end on one node: the node registers itself (`get nodes`, `-o wide`, the Node's
//! status), `describe node` shows a running pod's requests, label/taint/cordon round trips,
//! and `drain` of a node running a ReplicaSet's pods and an unmanaged pod — refused without
//! `--force`; with it the pods are evicted, the node stays SchedulingDisabled and the
//! replacements wait with the scheduler's message until the node is uncordoned.

use serde_json::Value;
use skerry_tests::skerryd::{busybox_pod, column, TestNode, BUSYBOX, NODE_NAME};

fn node_json(node: &TestNode) -> Value {
    let out = node.skerry_ok(&["get", "node", NODE_NAME, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("get node -o json is not JSON ({e}):\n{out}"))
}

fn header(table: &str) -> Vec<&str> {
    table.lines().next().unwrap_or("").split_whitespace().collect()
}

/// The host's `PRETTY_NAME` (skerryd reads the same file).
fn pretty_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let line = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).unwrap_or("");
    line.trim_matches('"').to_string()
}

/// A pod asking for 100m CPU and 64Mi (limits 200m and 128Mi).
fn pod_with_requests(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n    resources:\n      requests: {{cpu: 100m, memory: 64Mi}}\n      limits: {{cpu: 200m, memory: 128Mi}}\n"
    )
}

fn replica_set(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {BUSYBOX}\n        imagePullPolicy: Never\n        command: [sleep, '3600']\n"
    )
}

fn pods_of(node: &TestNode, selector: &str) -> Vec<Value> {
    let out = node.skerry_ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(pod: &Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap_or("")
}

#[test]
fn nodes_register_describe_label_taint_cordon_and_drain() {
    let node = TestNode::start();
    node.import_busybox();

    // The node registered itself: kubectl's columns and values.
    let out = node.wait_output(&["get", "nodes"], "lists this node as Ready", |o| {
        o.code == 0 && column(&o.stdout, NODE_NAME, "STATUS").as_deref() == Some("Ready")
    });
    let table = out.stdout;
    assert_eq!(header(&table), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert_eq!(column(&table, NODE_NAME, "ROLES").as_deref(), Some("control-plane"), "{table}");
    assert_eq!(
        column(&table, NODE_NAME, "VERSION").as_deref(),
        Some(concat!("v", env!("CARGO_PKG_VERSION"))),
        "{table}"
    );
    let wide = node.skerry_ok(&["get", "nodes", "-o", "wide"]);
    assert_eq!(
        header(&wide)[5..],
        ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"],
        "{wide}"
    );
    assert_eq!(column(&wide, NODE_NAME, "INTERNAL-IP"), Some(node.node_ip().to_string()), "{wide}");
    assert_eq!(column(&wide, NODE_NAME, "EXTERNAL-IP").as_deref(), Some("<none>"), "{wide}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string();
    assert_eq!(column(&wide, NODE_NAME, "KERNEL-VERSION"), Some(kernel), "{wide}");
    assert!(column(&wide, NODE_NAME, "CONTAINER-RUNTIME").is_some_and(|c| c.starts_with("containerd://")), "{wide}");
    assert!(wide.contains(&pretty_name()), "OS-IMAGE is the host's PRETTY_NAME:\n{wide}");

    // The Node object: what kubelet reports.
    let n = node_json(&node);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    assert_eq!(n["status"]["capacity"]["pods"], "110", "{n:#}");
    assert!(n["status"]["capacity"]["cpu"].as_str().unwrap().parse::<usize>().unwrap() >= cpus, "{n:#}");
    for resource in ["memory", "ephemeral-storage"] {
        assert!(n["status"]["allocatable"][resource].is_string(), "{resource}: {n:#}");
    }
    let labels = &n["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], NODE_NAME, "{n:#}");
    assert_eq!(labels["kubernetes.io/os"], "linux", "{n:#}");
    assert!(
        labels["kubernetes.io/arch"].is_string() && labels["beta.kubernetes.io/arch"] == labels["kubernetes.io/arch"]
    );
    let ready = n["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").cloned().unwrap();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("KubeletReady")), "{n:#}");
    assert!(n["spec"]["podCIDR"].is_string(), "{n:#}");
    assert_eq!(n["status"]["nodeInfo"]["operatingSystem"], "linux");

    // describe node: the running pod with its requests, as shares of allocatable.
    node.apply(&pod_with_requests("sized"));
    node.wait_running("sized");
    let d = node.skerry_ok(&["describe", "node", NODE_NAME]);
    for want in [
        "Roles:              control-plane\n",
        "Unschedulable:      false\n",
        "KubeletReady",
        "System Info:\n",
        "Non-terminated Pods:",
    ] {
        assert!(d.contains(want), "describe node lacks {want:?}:\n{d}");
    }
    let row = d.lines().find(|l| l.split_whitespace().nth(1) == Some("sized")).unwrap_or_else(|| panic!("{d}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cells[0], cells[2], cells[4], cells[6], cells[8]),
        ("default", "100m", "200m", "64Mi", "128Mi"),
        "{row}"
    );
    assert!(d.contains("Allocated resources:") && d.contains("  cpu                100m ("), "{d}");

    // label round trip.
    assert_eq!(node.skerry_ok(&["label", "node", NODE_NAME, "site=north"]), format!("node/{NODE_NAME} labeled\n"));
    let out = node.skerry_ok(&["get", "nodes", "-l", "site=north", "-o", "name"]);
    assert_eq!(out, format!("node/{NODE_NAME}\n"));
    assert_eq!(node.skerry_ok(&["label", "node", NODE_NAME, "site-"]), format!("node/{NODE_NAME} unlabeled\n"));

    // taint round trip.
    let out = node.skerry_ok(&["taint", "nodes", NODE_NAME, "dedicated=edge:NoSchedule"]);
    assert_eq!(out, format!("node/{NODE_NAME} tainted\n"));
    let again = node.skerry(&["taint", "nodes", NODE_NAME, "dedicated=other:NoSchedule"]);
    assert_eq!(again.code, 1, "{again}");
    assert_eq!(
        again.stderr,
        format!(
            "error: node {NODE_NAME} already has dedicated taint(s) with same effect(s) and --overwrite is false\n"
        )
    );
    let d = node.skerry_ok(&["describe", "node", NODE_NAME]);
    assert!(d.contains("Taints:             dedicated=edge:NoSchedule\n"), "{d}");
    let out = node.skerry_ok(&["taint", "nodes", NODE_NAME, "dedicated:NoSchedule-"]);
    assert_eq!(out, format!("node/{NODE_NAME} untainted\n"));
    assert!(node_json(&node)["spec"].get("taints").is_none_or(Value::is_null));

    // cordon/uncordon round trip.
    assert_eq!(node.skerry_ok(&["cordon", NODE_NAME]), format!("node/{NODE_NAME} cordoned\n"));
    assert_eq!(node.skerry_ok(&["cordon", NODE_NAME]), format!("node/{NODE_NAME} already cordoned\n"));
    let table = node.skerry_ok(&["get", "nodes"]);
    assert_eq!(column(&table, NODE_NAME, "STATUS").as_deref(), Some("Ready,SchedulingDisabled"), "{table}");
    assert_eq!(node.skerry_ok(&["uncordon", NODE_NAME]), format!("node/{NODE_NAME} uncordoned\n"));
    let table = node.skerry_ok(&["get", "nodes"]);
    assert_eq!(column(&table, NODE_NAME, "STATUS").as_deref(), Some("Ready"), "{table}");
    node.wait_output(&["describe", "node", NODE_NAME], "shows the cordon events", |o| {
        o.stdout.contains("NodeNotSchedulable") && o.stdout.contains("NodeSchedulable")
    });

    // drain: a ReplicaSet's two pods and two unmanaged pods (the sized one and another).
    node.apply(&replica_set("web", 2));
    node.apply(&busybox_pod("lonely", "Always", &["sleep", "3600"]));
    node.wait_running("lonely");
    let web = node.wait_output(&["get", "pods", "-l", "app=web"], "shows two running web pods", |o| {
        o.stdout.lines().skip(1).filter(|l| l.contains("Running") && l.contains("1/1")).count() == 2
    });
    let before: Vec<String> =
        web.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(String::from).collect();

    let refused = node.skerry(&["drain", NODE_NAME]);
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.stdout, format!("node/{NODE_NAME} cordoned\n"), "{refused}");
    let why = "cannot delete cannot delete Pods that declare no controller (use --force to override): default/lonely, default/sized";
    assert_eq!(
        refused.stderr,
        format!(
            "error: unable to drain node \"{NODE_NAME}\" due to error: {why}, continuing command...\n\
             There are pending nodes to be drained:\n {NODE_NAME}\n{why}\n"
        ),
        "{refused}"
    );
    assert_eq!(node.pod("lonely")["status"]["phase"], "Running", "nothing was evicted");

    let drained = node.skerry(&["drain", NODE_NAME, "--force", "--grace-period", "1", "--timeout", "90s"]);
    assert_eq!(drained.code, 0, "{drained}");
    assert_eq!(drained.stderr, "Warning: deleting Pods that declare no controller: default/lonely, default/sized\n");
    let lines: Vec<&str> = drained.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some(format!("node/{NODE_NAME} already cordoned").as_str()), "{drained}");
    assert_eq!(lines.last().copied(), Some(format!("node/{NODE_NAME} drained").as_str()), "{drained}");
    for pod in before.iter().map(String::as_str).chain(["lonely", "sized"]) {
        assert!(lines.contains(&format!("evicting pod default/{pod}").as_str()), "{pod}: {drained}");
        assert!(lines.contains(&format!("pod/{pod} evicted").as_str()), "{pod}: {drained}");
    }
    assert!(node.pod_in("default", "lonely").is_none() && node.pod_in("default", "sized").is_none());
    let table = node.skerry_ok(&["get", "nodes"]);
    assert_eq!(column(&table, NODE_NAME, "STATUS").as_deref(), Some("Ready,SchedulingDisabled"), "{table}");

    // The ReplicaSet replaced its pods; they wait with the scheduler's message.
    let message = "0/1 nodes are available: 1 node(s) were unschedulable.";
    let replacements =
        node.wait_output(&["get", "pods", "-l", "app=web", "-o", "json"], "shows two waiting replacements", |o| {
            let list: Value = serde_json::from_str(&o.stdout).unwrap_or_default();
            let items = list["items"].as_array().cloned().unwrap_or_default();
            items.len() == 2
                && items.iter().all(|p| {
                    !before.iter().any(|b| b == name(p))
                        && p["status"]["phase"] == "Pending"
                        && p.pointer("/spec/nodeName").is_none()
                        && p["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
                            c["type"] == "PodScheduled" && c["reason"] == "Unschedulable" && c["message"] == message
                        })
                })
        });
    let first: Value = serde_json::from_str(&replacements.stdout).unwrap();
    let waiting = name(&first["items"][0]).to_string();
    let d = node.skerry_ok(&["describe", "pod", &waiting]);
    assert!(d.contains("FailedScheduling") && d.contains(message), "{d}");

    // Uncordoned, the node takes them.
    assert_eq!(node.skerry_ok(&["uncordon", NODE_NAME]), format!("node/{NODE_NAME} uncordoned\n"));
    node.wait_running(&waiting);
    assert!(pods_of(&node, "app=web").iter().all(|p| p["spec"]["nodeName"] == NODE_NAME));
}
