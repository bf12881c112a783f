//! restartPolicy Never / OnFailure / Always: phases, STATUS words and restart counts as Kubernetes reports them.

use serde_json::Value;
use skerry_tests::skerryd::{busybox_pod, column, TestNode};

fn container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn restarts(p: &Value) -> u64 {
    container(p)["restartCount"].as_u64().unwrap_or(0)
}

#[test]
fn restart_policies() {
    let node = TestNode::start();
    node.import_busybox();
    for (name, policy, code) in [
        ("never-ok", "Never", 0),
        ("never-fail", "Never", 2),
        ("onfail-ok", "OnFailure", 0),
        ("onfail-fail", "OnFailure", 3),
        ("always-ok", "Always", 0),
    ] {
        node.apply(&busybox_pod(name, policy, &["sh", "-c", &format!("echo run; exit {code}")]));
    }

    // Never + exit 0: Succeeded, Completed, never restarted.
    let p = node.wait_pod("never-ok", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(container(&p)["state"]["terminated"]["exitCode"], 0, "{p:#}");
    assert_eq!(container(&p)["state"]["terminated"]["reason"], "Completed", "{p:#}");
    assert_eq!(restarts(&p), 0);
    assert_eq!(container(&p)["ready"], false);

    // Never + exit 2: Failed, Error.
    let p = node.wait_pod("never-fail", "Failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(container(&p)["state"]["terminated"]["exitCode"], 2, "{p:#}");
    assert_eq!(container(&p)["state"]["terminated"]["reason"], "Error", "{p:#}");
    assert_eq!(restarts(&p), 0);

    // OnFailure + exit 0: Succeeded without a restart.
    let p = node.wait_pod("onfail-ok", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(restarts(&p), 0, "{p:#}");

    // OnFailure + exit 3: restarted, stays Running phase.
    let p = node.wait_pod("onfail-fail", "restarted", |p| restarts(p) >= 1);
    assert_eq!(p["status"]["phase"], "Running", "{p:#}");
    assert_eq!(container(&p)["lastState"]["terminated"]["exitCode"], 3, "{p:#}");

    // Always + exit 0: restarted too (Completed, then back-off).
    let p = node.wait_pod("always-ok", "restarted", |p| restarts(p) >= 1);
    assert_eq!(p["status"]["phase"], "Running", "{p:#}");
    assert_eq!(container(&p)["lastState"]["terminated"]["reason"], "Completed", "{p:#}");

    // The table: STATUS words and RESTARTS (kubectl shows e.g. `1 (5s ago)`).
    let table = node.skerry_ok(&["get", "pods"]);
    assert_eq!(column(&table, "never-ok", "STATUS").as_deref(), Some("Completed"), "{table}");
    assert_eq!(column(&table, "never-ok", "READY").as_deref(), Some("0/1"), "{table}");
    assert_eq!(column(&table, "never-fail", "STATUS").as_deref(), Some("Error"), "{table}");
    assert_eq!(column(&table, "onfail-ok", "STATUS").as_deref(), Some("Completed"), "{table}");
    assert_eq!(column(&table, "onfail-ok", "RESTARTS").as_deref(), Some("0"), "{table}");
    let r = column(&table, "always-ok", "RESTARTS").unwrap();
    assert!(r != "0", "always-ok's restarts are counted:\n{table}");
    let s = column(&table, "always-ok", "STATUS").unwrap();
    assert!(["Completed", "CrashLoopBackOff", "Running"].contains(&s.as_str()), "{table}");

    // The logs of a completed pod stay readable.
    assert_eq!(node.skerry_ok(&["logs", "never-ok"]), "run\n");
    assert_eq!(node.skerry_ok(&["logs", "never-fail"]), "run\n");
}
