//! `skerry top pods|nodes` and the metrics API end to end: real cgroups, a pod burning CPU
//! against an idle one, kubectl's columns.

use std::time::Instant;

use serde_json::Value;
use skerry_tests::skerryd::{busybox_pod, column, deadline, TestNode, NODE_NAME};

/// Millicores of a `CPU(cores)` cell (`"998m"`).
fn millicores(cell: &str) -> Option<u64> {
    cell.strip_suffix('m')?.parse().ok()
}

/// The header words of a table.
fn header(table: &str) -> Vec<&str> {
    table.lines().next().unwrap_or("").split_whitespace().collect()
}

#[test]
fn top_pods_and_nodes_follow_cpu_use() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&busybox_pod("idle", "Always", &["sleep", "3600"]));
    node.apply(&busybox_pod("burner", "Always", &["sh", "-c", "while :; do :; done"]));
    node.wait_running("idle");
    node.wait_running("burner");

    // The burner uses (nearly) a whole core, the idle pod next to nothing. Poll: the first
    // samples may come before the loop has started, or span a short window.
    let end = deadline();
    let table = loop {
        let out = node.skerry(&["top", "pods"]);
        let cpu = |pod| column(&out.stdout, pod, "CPU(cores)").as_deref().and_then(millicores);
        if out.code == 0 {
            if let (Some(burner), Some(idle)) = (cpu("burner"), cpu("idle")) {
                if burner >= 100 && idle < 50 && burner > idle + 100 {
                    break out.stdout;
                }
            }
        } else {
            // Before the first sample kubectl's message is the only acceptable failure.
            assert!(out.stderr.contains("metrics not available yet"), "{out}");
        }
        assert!(
            Instant::now() < end,
            "the burner never showed more CPU than the idle pod:\n{out}\nskerryd log tail:\n{}",
            node.skerryd.log_tail(30)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(header(&table), ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{table}");
    assert_eq!(table.lines().count(), 3, "one row per pod:\n{table}");
    for pod in ["burner", "idle"] {
        let memory = column(&table, pod, "MEMORY(bytes)").unwrap_or_default();
        assert!(memory.strip_suffix("Mi").is_some_and(|n| n.parse::<u64>().is_ok()), "{pod}: {memory:?} in\n{table}");
    }

    // The metrics API itself: Kubernetes' shape, non-zero working sets.
    let resp = node.api("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", None);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let list: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(list["kind"], "PodMetricsList", "{list:#}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list:#}");
    for item in items {
        assert_eq!(item["apiVersion"], "metrics.k8s.io/v1beta1", "{item:#}");
        assert!(item["window"].as_str().is_some_and(|w| w.ends_with('s')), "{item:#}");
        let usage = &item["containers"][0]["usage"];
        let memory = usage["memory"].as_str().unwrap_or("");
        assert!(!memory.is_empty() && memory != "0", "a running container has a working set: {item:#}");
        assert!(usage["cpu"].as_str().is_some_and(|c| !c.is_empty()), "{item:#}");
    }
    let resp = node.api("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner", None);
    assert_eq!(resp.status, 200, "{}", resp.text());

    // --containers, -A, sorting.
    let out = node.skerry_ok(&["top", "pods", "--containers"]);
    assert_eq!(header(&out), ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["burner", "burner"])), "{out}");
    let out = node.skerry_ok(&["top", "pods", "-A", "--sort-by=cpu"]);
    assert_eq!(header(&out), ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    let first: Vec<&str> = out.lines().nth(1).unwrap_or("").split_whitespace().take(2).collect();
    assert_eq!(first, ["default", "burner"], "the busiest pod first:\n{out}");
    let out = node.skerry_ok(&["top", "pod", "idle", "--no-headers"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("idle "), "{out}");

    // Nothing in an empty namespace.
    let out = node.skerry(&["top", "pods", "-n", "kube-public"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out}");
    assert_eq!(out.stderr, "No resources found in kube-public namespace.\n", "{out}");

    // top nodes: one row for this node, with the burner's core in it.
    let out = node.skerry_ok(&["top", "nodes"]);
    assert_eq!(header(&out), ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let cpu = column(&out, NODE_NAME, "CPU(cores)").and_then(|c| millicores(&c));
    assert!(cpu.is_some_and(|c| c >= 100), "the node's CPU includes the burner's:\n{out}");
    for col in ["CPU(%)", "MEMORY(%)"] {
        let cell = column(&out, NODE_NAME, col).unwrap_or_default();
        assert!(cell.strip_suffix('%').is_some_and(|n| n.parse::<u64>().is_ok()), "{col}: {cell:?} in\n{out}");
    }
    let memory = column(&out, NODE_NAME, "MEMORY(bytes)").unwrap_or_default();
    assert!(memory.strip_suffix("Mi").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0), "{out}");
    let out = node.skerry(&["top", "node", "elsewhere"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr, "Error from server (NotFound): nodes \"elsewhere\" not found\n", "{out}");

    // A deleted pod leaves the metrics.
    node.skerry_ok(&["delete", "pod", "burner"]);
    node.wait_gone_in("default", "burner");
    node.wait_output(&["top", "pods"], "lists only the idle pod", |o| {
        o.code == 0
            && o.stdout.lines().skip(1).map(|l| l.split_whitespace().next()).collect::<Vec<_>>() == [Some("idle")]
    });
}
