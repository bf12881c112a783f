//! `resources` end to end: limits reach the container's cgroups (v1 or v2), the QoS class, a
//! container over its memory limit is OOMKilled (exit 137) and restarted, bad resources are a 422.

use std::path::PathBuf;

use serde_json::Value;
use skerry_tests::skerryd::{TestNode, BUSYBOX};
use skerry_tests::svc::pod_exec;

/// A one-container busybox pod with `resources` (YAML lines, indented for the container).
fn pod(name: &str, policy: &str, command: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: {name}\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: {command}\n    resources:\n{resources}"
    )
}

/// Whether the host runs cgroup v2 only (`/sys/fs/cgroup` is the unified tree), as runc decides.
fn unified() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A file of the container's cgroup read on the host: v1 `<controller>/<path>/<v1 file>`, v2
/// `<path>/<v2 file>`.
fn host_cgroup_file(node: &TestNode, pod: &Value, controller: &str, v1: &str, v2: &str) -> String {
    let uid: String = pod["metadata"]["uid"].as_str().unwrap().chars().filter(|c| *c != '-').collect();
    let uid_full = pod["metadata"]["uid"].as_str().unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap();
    let rel = format!("{}/pod{uid_full}/{}-{name}", node.ctd.cgroup_parent().trim_start_matches('/'), &uid[..12]);
    let path = if unified() {
        PathBuf::from("/sys/fs/cgroup").join(rel).join(v2)
    } else {
        PathBuf::from("/sys/fs/cgroup").join(controller).join(rel).join(v1)
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())).trim().to_string()
}

/// The same file seen from inside the container (runc mounts the container's own cgroup there).
fn container_cgroup_file(node: &TestNode, pod: &str, controller: &str, v1: &str, v2: &str) -> String {
    let path = if unified() { format!("/sys/fs/cgroup/{v2}") } else { format!("/sys/fs/cgroup/{controller}/{v1}") };
    pod_exec(node, pod, &["cat", &path]).unwrap_or_else(|e| panic!("cat {path} in {pod}: {e}")).trim().to_string()
}

#[test]
fn limits_reach_the_cgroups_and_set_the_qos_class() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&pod(
        "guaranteed",
        "Always",
        r#"["sleep", "3600"]"#,
        "      limits:\n        memory: 64Mi\n        cpu: 500m\n",
    ));
    node.apply(&pod(
        "burstable",
        "Always",
        r#"["sleep", "3600"]"#,
        "      requests:\n        cpu: 250m\n        memory: 32Mi\n      limits:\n        memory: 64Mi\n        cpu: \"1\"\n",
    ));
    node.apply(&pod("besteffort", "Always", r#"["sleep", "3600"]"#, "      {}\n"));

    let g = node.wait_running("guaranteed");
    assert_eq!(g["status"]["qosClass"], "Guaranteed", "limits only: requests default to them\n{:#}", g["status"]);
    assert_eq!(
        g["spec"]["containers"][0]["resources"]["requests"],
        serde_json::json!({"memory": "64Mi", "cpu": "500m"}),
        "{:#}",
        g["spec"]
    );
    let b = node.wait_running("burstable");
    assert_eq!(b["status"]["qosClass"], "Burstable", "{:#}", b["status"]);
    let e = node.wait_running("besteffort");
    assert_eq!(e["status"]["qosClass"], "BestEffort", "{:#}", e["status"]);

    // Memory: 64Mi in the container's own view and on the host.
    let memory = ("memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(container_cgroup_file(&node, "guaranteed", memory.0, memory.1, memory.2), "67108864");
    assert_eq!(host_cgroup_file(&node, &g, memory.0, memory.1, memory.2), "67108864");
    // No swap beyond the limit where the host accounts swap.
    if !unified() && std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        assert_eq!(host_cgroup_file(&node, &g, "memory", "memory.memsw.limit_in_bytes", ""), "67108864");
    }
    let unlimited = host_cgroup_file(&node, &e, memory.0, memory.1, memory.2);
    assert!(
        unlimited == "max" || unlimited.parse::<u64>().is_ok_and(|v| v > 1 << 40),
        "best effort has no memory limit: {unlimited}"
    );

    // CPU: 500m is 50 ms every 100 ms; 1 CPU is 100 ms.
    if unified() {
        assert_eq!(container_cgroup_file(&node, "guaranteed", "cpu", "", "cpu.max"), "50000 100000");
        assert_eq!(host_cgroup_file(&node, &b, "cpu", "", "cpu.max"), "100000 100000");
        assert_eq!(host_cgroup_file(&node, &e, "cpu", "", "cpu.max"), "max 100000");
    } else {
        assert_eq!(container_cgroup_file(&node, "guaranteed", "cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(container_cgroup_file(&node, "guaranteed", "cpu", "cpu.cfs_period_us", ""), "100000");
        assert_eq!(host_cgroup_file(&node, &g, "cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(host_cgroup_file(&node, &b, "cpu", "cpu.cfs_quota_us", ""), "100000");
        assert_eq!(host_cgroup_file(&node, &e, "cpu", "cpu.cfs_quota_us", ""), "-1", "best effort has no quota");
        // Shares from the requests: 500m → 512, 250m → 256, none → 2.
        assert_eq!(host_cgroup_file(&node, &g, "cpu", "cpu.shares", ""), "512");
        assert_eq!(host_cgroup_file(&node, &b, "cpu", "cpu.shares", ""), "256");
        assert_eq!(host_cgroup_file(&node, &e, "cpu", "cpu.shares", ""), "2");
    }
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    let node = TestNode::start();
    node.import_busybox();
    // The shell holds 100 MB in a variable: far over 32Mi, so the kernel kills it (the largest
    // process of the cgroup, PID 1 of the container).
    let hog = r#"["sh", "-c", "echo start; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived; sleep 3600"]"#;
    node.apply(&pod("hog", "Always", hog, "      limits:\n        memory: 32Mi\n"));

    let p = node.wait_pod("hog", "was OOMKilled and restarted", |p| {
        let cs = &p["status"]["containerStatuses"][0];
        cs["restartCount"].as_u64().unwrap_or(0) >= 1 && cs["lastState"]["terminated"].is_object()
    });
    let cs = &p["status"]["containerStatuses"][0];
    let last = &cs["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{:#}", p["status"]);
    assert_eq!(last["exitCode"], 137, "{:#}", p["status"]);
    assert_eq!(p["status"]["qosClass"], "Burstable");
    let logs = node.skerry(&["logs", "hog", "--previous"]);
    assert!(!logs.stdout.contains("survived"), "the shell got its 100 MB after all:\n{logs}");

    // kubectl describe's Last State block.
    let describe = node.skerry_ok(&["describe", "pod", "hog"]);
    let at = describe.find("Last State:").unwrap_or_else(|| panic!("no Last State:\n{describe}"));
    let block: Vec<&str> = describe[at..].lines().take(4).collect();
    assert!(block[0].contains("Terminated"), "{describe}");
    assert!(
        block.iter().any(|l| l.trim_start().starts_with("Reason:") && l.trim_end().ends_with("OOMKilled")),
        "{describe}"
    );
    assert!(
        block.iter().any(|l| l.trim_start().starts_with("Exit Code:") && l.trim_end().ends_with("137")),
        "{describe}"
    );

    // It keeps being killed: the count goes on.
    node.wait_pod("hog", "restarted twice", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) >= 2
    });

    // A plain failure with the same limit is an Error, not OOMKilled.
    node.apply(&pod("fails", "Never", r#"["sh", "-c", "exit 3"]"#, "      limits:\n        memory: 32Mi\n"));
    let p = node.wait_pod("fails", "Failed", |p| p["status"]["phase"] == "Failed");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((t["reason"].as_str(), t["exitCode"].as_i64()), (Some("Error"), Some(3)), "{:#}", p["status"]);
}

#[test]
fn requests_over_limits_are_rejected() {
    let node = TestNode::start();
    let yaml = pod(
        "greedy",
        "Always",
        r#"["sleep", "3600"]"#,
        "      requests:\n        cpu: 2\n      limits:\n        cpu: 1\n",
    );
    let out = node.skerry_stdin(&["apply", "-f", "-"], yaml.as_bytes());
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(
            r#"spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1"#
        ),
        "{out}"
    );
    assert!(node.pod_in("default", "greedy").is_none(), "nothing is created");

    // The same through the API: 422 with the cause.
    let body: Value = serde_json::from_str(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-memory"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "lots"}}}]}}"#,
    )
    .unwrap();
    let r = node.api("POST", "/api/v1/namespaces/default/pods", Some(&body));
    assert_eq!(r.status, 422, "{}", r.text());
    let status: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["reason"], "Invalid", "{status:#}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.containers[0].resources.limits[memory]", "{status:#}");
    assert!(node.pod_in("default", "bad-memory").is_none());
}
