//! The seed's pods end to end: apply, get (every output), describe, exec, label, delete — as kubectl prints them.

use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::skerryd::{busybox_pod, column, TestNode, NODE_NAME};
use skerry_tests::standins::{self, page, run_seed_pods, SEED_PODS};

const WEBAPP_IMAGE: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release0";

#[test]
fn seed_pods_get_describe_exec_label_delete() {
    let node = TestNode::start();
    run_seed_pods(&node);
    let file = standins::seed_pods();
    let file = file.to_str().unwrap();

    // get pods: kubectl's columns and rows.
    let table = node.skerry_ok(&["get", "pods"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{table}");
    let mut names: Vec<&str> = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1..4], ["1/1", "Running", "0"], "row {line:?} in\n{table}");
        names.push(cols[0]);
    }
    let mut want = SEED_PODS.to_vec();
    want.sort();
    assert_eq!(names, want, "get pods lists the pods in name order:\n{table}");

    // Label selector and --show-labels.
    let table = node.skerry_ok(&["get", "pods", "--show-labels", "-l", "release=0"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "only webapp matches release=0:\n{table}");
    assert!(rows[0].ends_with("LABELS"), "{table}");
    assert!(rows[1].starts_with("webapp "), "{table}");
    assert_eq!(column(&table, "webapp", "LABELS").as_deref(), Some("app=webapp,release=0"), "{table}");

    // -o wide: IP and NODE.
    let table = node.skerry_ok(&["get", "pods", "-o", "wide"]);
    let header = table.lines().next().unwrap();
    assert!(header.contains(" IP ") && header.contains(" NODE "), "{table}");
    assert!(header.contains("NOMINATED NODE") && header.contains("READINESS GATES"), "{table}");
    for p in SEED_PODS {
        assert_eq!(column(&table, p, "NODE").as_deref(), Some(NODE_NAME), "{table}");
    }

    // -o yaml / json / name, and one pod by name.
    let yaml = node.skerry_ok(&["get", "pods", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\nitems:\n") || yaml.contains("kind: List"), "a list in YAML:\n{yaml}");
    assert!(yaml.contains("name: webapp-release0-5"), "{yaml}");
    let list: Value =
        serde_json::from_str(&node.skerry_ok(&["get", "pods", "-o", "json"])).expect("get pods -o json is JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list:#}");
    assert_eq!(node.skerry_ok(&["get", "pods", "-o", "name"]), "pod/queue\npod/webapp\npod/webapp-release0-5\n");
    assert_eq!(node.skerry_ok(&["get", "pod", "webapp", "-o", "name"]), "pod/webapp\n");
    let one = node.skerry_ok(&["get", "pods", "webapp"]);
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(one.lines().nth(1).unwrap().starts_with("webapp "), "{one}");
    let pod = node.pod("webapp");
    assert_eq!(pod["spec"]["nodeName"], NODE_NAME);
    assert_eq!(pod["spec"]["containers"][0]["image"], WEBAPP_IMAGE);
    assert_eq!(pod["metadata"]["labels"]["release"], "0");
    let yaml = node.skerry_ok(&["get", "pod", "webapp", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\n"), "{yaml}");
    assert!(yaml.contains("phase: Running"), "{yaml}");

    // Namespaces and get all.
    let ns = node.skerry_ok(&["get", "ns"]);
    for n in ["default", "kube-system"] {
        assert_eq!(column(&ns, n, "STATUS").as_deref(), Some("Active"), "{ns}");
    }
    let all = node.skerry_ok(&["get", "all"]);
    for p in SEED_PODS {
        assert!(all.lines().any(|l| l.starts_with(&format!("pod/{p} "))), "get all lists pod/{p}:\n{all}");
    }

    // describe: the fields people read, and the events at the bottom.
    let d = node.skerry_ok(&["describe", "pod", "webapp"]);
    // kubectl shows the node as NAME/hostIP once the pod has a host IP.
    let node_field = format!("{NODE_NAME}/{}", node.node_ip());
    for (field, value) in
        [("Name:", "webapp"), ("Namespace:", "default"), ("Node:", node_field.as_str()), ("Status:", "Running")]
    {
        assert!(
            d.lines().any(|l| l.starts_with(field) && l[field.len()..].trim() == value),
            "describe shows {field} {value}:\n{d}"
        );
    }
    for section in ["Containers:", "Conditions:", "Events:"] {
        assert!(d.lines().any(|l| l == section), "describe has a {section} section:\n{d}");
    }
    assert!(d.contains(&format!("Image:          {WEBAPP_IMAGE}")), "{d}");
    let events = d.split("\nEvents:\n").nth(1).expect("Events last");
    let reasons: Vec<&str> = events.lines().skip(2).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(reasons, ["Scheduled", "Pulled", "Created", "Started"], "events in order:\n{events}");

    // exec: output, exit codes, the pod's network and hostname.
    let ls = node.skerry_ok(&["exec", "webapp", "--", "ls", "/"]);
    assert!(ls.lines().any(|l| l == "www"), "{ls}");
    let out = node.skerry(&["exec", "webapp", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.code, 7, "exec passes the exit code through:\n{out}");
    assert!(out.stderr.contains("command terminated with exit code 7"), "{out}");
    let body = node.skerry_ok(&["exec", "webapp", "--", "wget", "-qO-", "http://localhost:80"]);
    assert_eq!(body, page(WEBAPP_IMAGE));
    assert_eq!(node.skerry_ok(&["exec", "webapp", "--", "hostname"]), "webapp\n");
    let out = node.skerry(&["exec", "webapp", "--", "/no/such/binary"]);
    assert_ne!(out.code, 0, "a missing binary fails:\n{out}");

    // apply again changes nothing.
    let again = node.skerry_ok(&["apply", "-f", file]);
    assert_eq!(again, "pod/webapp unchanged\npod/webapp-release0-5 unchanged\npod/queue unchanged\n");

    // label.
    assert_eq!(node.skerry_ok(&["label", "pod", "webapp", "tier=web"]), "pod/webapp labeled\n");
    assert_eq!(node.pod("webapp")["metadata"]["labels"]["tier"], "web");
    let out = node.skerry(&["label", "pod", "webapp", "release=9"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr, "error: 'release' already has a value (0), and --overwrite is false\n");
    assert_eq!(node.skerry_ok(&["label", "pod", "webapp", "release=9", "--overwrite"]), "pod/webapp labeled\n");
    assert_eq!(node.pod("webapp")["metadata"]["labels"]["release"], "9");
    assert_eq!(node.skerry_ok(&["label", "pod", "webapp", "tier-"]), "pod/webapp unlabeled\n");
    assert!(node.pod("webapp")["metadata"]["labels"].get("tier").is_none());
    let table = node.skerry_ok(&["get", "pods", "-l", "release=0"]);
    assert!(!table.contains("webapp "), "relabelled webapp no longer matches release=0:\n{table}");

    // delete: NotFound, one pod (httpd as PID 1 ignores SIGTERM: short grace), then the file.
    let out = node.skerry(&["delete", "pod", "x"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr, "Error from server (NotFound): pods \"x\" not found\n");
    assert_eq!(node.skerry_ok(&["delete", "pod", "webapp", "--grace-period=1"]), "pod \"webapp\" deleted\n");
    assert!(node.pod_in("default", "webapp").is_none(), "delete waits until the pod is gone");
    let out = node.skerry(&["delete", "-f", file, "--now"]);
    assert_eq!(out.code, 1, "webapp is already gone, like kubectl this is an error:\n{out}");
    assert!(
        out.stdout.contains("pod \"webapp-release0-5\" deleted") && out.stdout.contains("pod \"queue\" deleted"),
        "{out}"
    );
    assert!(out.stderr.contains("Error from server (NotFound): pods \"webapp\" not found"), "{out}");
    let out = node.skerry(&["get", "pods"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "No resources found in default namespace.\n");
}

#[test]
fn delete_waits_for_the_grace_period_then_kills() {
    let node = TestNode::start();
    node.import_busybox();
    // Ignores SIGTERM, so only the kill after the grace period ends it.
    let mut yaml = busybox_pod("stubborn", "Always", &["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]);
    yaml = yaml.replace("terminationGracePeriodSeconds: 1", "terminationGracePeriodSeconds: 3");
    node.apply(&yaml);
    node.wait_running("stubborn");
    let started = Instant::now();
    assert_eq!(node.skerry_ok(&["delete", "pod", "stubborn"]), "pod \"stubborn\" deleted\n");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "the 3 s grace period was honoured (took {took:?})");
    assert!(
        took < Duration::from_secs(25),
        "the kill came after the 3 s grace period, not the default 30 s (took {took:?})"
    );
    assert!(node.pod_in("default", "stubborn").is_none());

    // A process that exits on SIGTERM goes at once even with a long grace period.
    let yaml = busybox_pod("polite", "Always", &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])
        .replace("terminationGracePeriodSeconds: 1", "terminationGracePeriodSeconds: 30");
    node.apply(&yaml);
    node.wait_running("polite");
    let started = Instant::now();
    node.skerry_ok(&["delete", "pod", "polite"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "SIGTERM ended it long before 30 s (took {:?})",
        started.elapsed()
    );
}
