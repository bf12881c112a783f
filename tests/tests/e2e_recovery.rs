//! Restarting skerryd or containerd under running pods: containers and objects survive, missed exits are noticed.

use std::time::Instant;

use serde_json::Value;
use skerry_tests::skerryd::{busybox_pod, deadline, TestNode};
use skerry_tests::standins;

const CRASHER_MARK: &str = "sk-recovery-crasher";

/// PIDs of host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

fn running_identity(p: &Value) -> (Value, Value, Value) {
    let c = &p["status"]["containerStatuses"][0];
    (c["containerID"].clone(), c["state"]["running"]["startedAt"].clone(), c["restartCount"].clone())
}

#[test]
fn skerryd_restart_keeps_containers_objects_and_notices_missed_exits() {
    let mut node = TestNode::start();
    node.import_busybox();
    standins::run_seed_pods(&node);
    node.skerry_ok(&["create", "namespace", "keep"]);
    node.skerry_ok(&["exec", "webapp", "--", "sh", "-c", "echo before-restart > /tmp/marker"]);
    let before = running_identity(&node.pod("webapp"));
    // `$0` carries a marker so the test can see the process from the host.
    node.apply(&busybox_pod("crasher", "Always", &["sh", "-c", "sleep 4; exit 1", CRASHER_MARK]));
    let p = node.wait_running("crasher");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);

    // Down while the crasher exits.
    node.skerryd.stop();
    let d = deadline();
    while !processes_with(CRASHER_MARK).is_empty() {
        assert!(Instant::now() < d, "the crasher container did not exit within 60s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    node.skerryd.start_again();

    // Same containers: same ID, start time and count, and the file written before is still there.
    let after = running_identity(&node.wait_running("webapp"));
    assert_eq!(before, after, "webapp's container was not restarted by skerryd's restart");
    assert_eq!(node.skerry_ok(&["exec", "webapp", "--", "cat", "/tmp/marker"]), "before-restart\n");
    for p in standins::SEED_PODS {
        let pod = node.pod(p);
        assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "{pod:#}");
    }
    let ns = node.skerry_ok(&["get", "ns", "keep"]);
    assert!(ns.contains("keep") && ns.contains("Active"), "{ns}");

    // The exit that happened while skerryd was down is noticed and the policy applied.
    let p = node.wait_pod("crasher", "is restarted after the missed exit", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
    });
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1, "{p:#}");

    // Still fully working: a new pod starts, and a restart with nothing changed keeps everything.
    node.apply(&busybox_pod("late", "Always", &["sleep", "3600"]));
    node.wait_running("late");
    node.skerryd.restart();
    assert_eq!(running_identity(&node.wait_running("webapp")), before);
    node.wait_running("late");
}

#[test]
fn containerd_restart_keeps_pods_running() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&busybox_pod("steady", "Always", &["sh", "-c", "echo up; exec sleep 3600"]));
    let before = running_identity(&node.wait_running("steady"));
    node.skerry_ok(&["exec", "steady", "--", "sh", "-c", "echo kept > /tmp/marker"]);

    node.ctd.restart();

    // skerryd reconnects: exec works again (poll while it does), the container is the same one.
    node.wait_output(&["exec", "steady", "--", "cat", "/tmp/marker"], "works after containerd's restart", |o| {
        o.code == 0 && o.stdout == "kept\n"
    });
    let p = node.wait_running("steady");
    assert_eq!(running_identity(&p), before, "the container survived containerd's restart:\n{p:#}");
    assert_eq!(node.skerry_ok(&["logs", "steady"]), "up\n");

    // New work is accepted.
    node.apply(&busybox_pod("after", "Always", &["sleep", "3600"]));
    node.wait_running("after");
    assert_eq!(node.skerry_ok(&["exec", "after", "--", "echo", "ok"]), "ok\n");
}

/// `skerryd --cluster-reset` (for a server whose cluster lost its quorum for good) keeps every
/// object, keeps the old log aside, exits, and the next start is a cluster of one that writes.
#[test]
fn cluster_reset_keeps_the_state_and_starts_a_cluster_of_one() {
    let mut node = TestNode::start();
    node.skerry_ok(&["create", "namespace", "shop"]);
    let rv = |node: &TestNode, name: &str| -> u64 {
        let ns: Value = serde_json::from_str(&node.skerry_ok(&["get", "namespace", name, "-o", "json"])).unwrap();
        ns["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
    };
    let before = rv(&node, "shop");
    node.skerryd.stop();
    let data_dir = node.skerryd.data_dir();
    let out = node.skerryd.run_skerryd(&["--data-dir", data_dir.to_str().unwrap(), "--cluster-reset"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("start it again without --cluster-reset"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(data_dir.join("raft"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("before-reset-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old log is kept aside");
    assert!(kept[0].path().join("raft.db").exists());
    node.skerryd.start_again();
    assert_eq!(rv(&node, "shop"), before, "the object is kept as it was");
    node.skerry_ok(&["create", "namespace", "after-reset"]);
    assert!(rv(&node, "after-reset") > before, "revisions go on");
}
