//! Namespaces: create, pods in them, `-A`, and deletion that takes the namespace's pods with it.

use skerry_tests::skerryd::{busybox_pod, column, deadline, TestNode};

#[test]
fn namespace_lifecycle() {
    let node = TestNode::start();
    node.import_busybox();
    assert_eq!(node.skerry_ok(&["create", "namespace", "dev"]), "namespace/dev created\n");
    let out = node.skerry(&["create", "namespace", "dev"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr, "Error from server (AlreadyExists): namespaces \"dev\" already exists\n");
    assert_eq!(column(&node.skerry_ok(&["get", "ns"]), "dev", "STATUS").as_deref(), Some("Active"));

    let pod = busybox_pod("worker", "Always", &["sleep", "3600"])
        .replace("terminationGracePeriodSeconds: 1", "terminationGracePeriodSeconds: 4");
    assert_eq!(node.skerry_stdin(&["apply", "-n", "dev", "-f", "-"], pod.as_bytes()).stdout, "pod/worker created\n");
    node.apply(&busybox_pod("worker", "Always", &["sleep", "3600"]));
    node.wait_running_in("dev", "worker");
    node.wait_running("worker");

    let dev = node.skerry_ok(&["get", "pods", "-n", "dev"]);
    assert_eq!(dev.lines().count(), 2, "{dev}");
    let all = node.skerry_ok(&["get", "pods", "-A"]);
    let header: Vec<&str> = all.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{all}");
    let rows: Vec<Vec<&str>> = all.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.iter().any(|r| r[..2] == ["default", "worker"]), "{all}");
    assert!(rows.iter().any(|r| r[..2] == ["dev", "worker"]), "{all}");
    let names = node.skerry_ok(&["get", "pods", "--all-namespaces", "-o", "name"]);
    assert_eq!(names, "pod/worker\npod/worker\n", "{names}");

    // Built-in namespaces cannot be deleted.
    let out = node.skerry(&["delete", "namespace", "default"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.starts_with("Error from server (Forbidden)") && out.stderr.contains("may not be deleted"),
        "{out}"
    );

    // Deleting dev: Terminating while its pod stops, no new content accepted, then gone.
    assert_eq!(node.skerry_ok(&["delete", "namespace", "dev", "--wait=false"]), "namespace \"dev\" deleted\n");
    let out = node.skerry(&["get", "ns", "dev"]);
    assert_eq!(column(&out.stdout, "dev", "STATUS").as_deref(), Some("Terminating"), "{out}");
    let out = node
        .skerry_stdin(&["apply", "-n", "dev", "-f", "-"], busybox_pod("late", "Always", &["sleep", "1"]).as_bytes());
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("Forbidden") && out.stderr.contains("because it is being terminated"), "{out}");
    node.wait_gone_in("dev", "worker");
    let d = deadline();
    loop {
        let out = node.skerry(&["get", "ns", "dev"]);
        if out.code == 1 {
            assert_eq!(out.stderr, "Error from server (NotFound): namespaces \"dev\" not found\n");
            break;
        }
        assert!(std::time::Instant::now() < d, "namespace dev still exists after 60s:\n{out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The other namespace's pod is untouched.
    node.wait_running("worker");
    let out = node.skerry(&["get", "pods", "-n", "dev"]);
    assert_eq!(out.stderr, "No resources found in dev namespace.\n", "{out}");
}
