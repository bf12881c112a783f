//! Bad manifests, bad names, missing namespaces, missing images and an unreachable daemon: clear errors, nothing half-done.

use skerry_tests::conformance;
use skerry_tests::skerryd::{busybox_pod, column, deadline, TestNode, BUSYBOX};

fn assert_no_pods(node: &TestNode) {
    let out = node.skerry(&["get", "pods"]);
    assert_eq!(out.stdout, "", "nothing was created:\n{out}");
}

#[test]
fn malformed_and_invalid_manifests_change_nothing() {
    let node = TestNode::start();

    // A conformance file that is not valid YAML: the file and a line are named.
    let bad = conformance("seed-head/_invalid/stateful_applications/persistent-volume.yaml");
    let bad = bad.to_str().unwrap();
    let out = node.skerry(&["apply", "-f", bad]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(bad), "stderr names the file:\n{out}");
    assert!(out.stderr.contains("line 29"), "stderr names the line:\n{out}");

    // A valid pod followed by a malformed document: nothing from the file is applied.
    let pvc = std::fs::read_to_string(conformance(
        "seed-head/_invalid/Kubernetes_patterns/Foundational-Patterns/predictable_demands/volumes_pvc.yaml",
    ))
    .unwrap();
    let mixed = node.write("mixed.yaml", &format!("{}---\n{pvc}", busybox_pod("first", "Always", &["sleep", "60"])));
    let out = node.skerry(&["apply", "-f", mixed.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(mixed.to_str().unwrap()), "{out}");
    assert!(out.stderr.contains("line "), "{out}");
    assert!(!out.stdout.contains("first"), "{out}");
    assert!(node.pod_in("default", "first").is_none(), "the valid first document was not applied");

    // The whole _invalid folder: every file reported, nothing applied.
    let out = node.skerry(&["apply", "-R", "-f", conformance("seed-head/_invalid").to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr.lines().filter(|l| l.starts_with("error")).count(), 5, "one error per file:\n{out}");
    assert!(out.stderr.contains("apiVersion not set"), "job.yaml has no apiVersion:\n{out}");
    assert_no_pods(&node);

    // Unknown kind.
    let out = node.skerry_stdin(&["apply", "-f", "-"], b"apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: x\n");
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no matches for kind \"Frobnicator\" in version \"v1\""), "{out}");

    // Invalid objects: the server's Invalid status naming the field.
    let bad_name = busybox_pod("Web_App", "Always", &["sleep", "60"]);
    let bad_label = busybox_pod("labelled", "Always", &["sleep", "60"])
        .replace("spec:\n", "  labels:\n    app: \"not a valid value!\"\nspec:\n");
    let no_containers = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: empty\nspec:\n  restartPolicy: Always\n";
    for (yaml, field) in [
        (bad_name.as_str(), "metadata.name"),
        (bad_label.as_str(), "metadata.labels"),
        (no_containers, "spec.containers"),
    ] {
        let out = node.skerry_stdin(&["apply", "-f", "-"], yaml.as_bytes());
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.starts_with("Error from server (Invalid)"), "{out}");
        assert!(out.stderr.contains(field), "the error names {field}:\n{out}");
    }
    let out = node.skerry_stdin(&["create", "-f", "-"], bad_name.as_bytes());
    assert!(
        out.code == 1 && out.stderr.contains("Error from server (Invalid)") && out.stderr.contains("metadata.name"),
        "{out}"
    );

    // A mount that would leave its volume: refused at admission, as the API server does, for a
    // pod and for a Deployment's pod template; nothing is created.
    let mounts = "    volumeMounts:\n    - name: v\n      mountPath: /host\n      subPath: ../../../etc\n  volumes:\n  - name: v\n    emptyDir: {}\n";
    let escape = busybox_pod("escape", "Always", &["sleep", "60"]) + mounts;
    let cause = r#"spec.containers[0].volumeMounts.subPath: Invalid value: "../../../etc": must not contain '..'"#;
    let out = node.skerry_stdin(&["apply", "-f", "-"], escape.as_bytes());
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("(Invalid)") && out.stderr.contains(&format!("Pod \"escape\" is invalid: {cause}")),
        "{out}"
    );
    assert!(node.pod_in("default", "escape").is_none(), "the pod was not created");
    let body: serde_json::Value = serde_yaml_ng::from_str(&escape).unwrap();
    let r = node.api("POST", "/api/v1/namespaces/default/pods", Some(&body));
    assert_eq!(r.status, 422, "{}", r.text());
    let status = r.json();
    assert_eq!((status["reason"].as_str(), status["code"].as_i64()), (Some("Invalid"), Some(422)), "{status}");
    assert_eq!(status["message"], format!("Pod \"escape\" is invalid: {cause}"), "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.containers[0].volumeMounts.subPath", "{status}");
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: escape\nspec:\n  selector:\n    matchLabels:\n      app: escape\n  template:\n    metadata:\n      labels:\n        app: escape\n    spec:\n      containers:\n      - name: c\n        image: {BUSYBOX}\n        imagePullPolicy: Never\n        volumeMounts:\n        - name: v\n          mountPath: /host\n          subPath: ../../../etc\n      volumes:\n      - name: v\n        emptyDir: {{}}\n"
    );
    let out = node.skerry_stdin(&["apply", "-f", "-"], deployment.as_bytes());
    assert_eq!(out.code, 1, "{out}\n{deployment}");
    assert!(out.stderr.contains(&format!("Deployment.apps \"escape\" is invalid: spec.template.{cause}")), "{out}");
    assert_eq!(node.skerry(&["get", "deployments,replicasets"]).stdout, "", "no Deployment, no ReplicaSet");
    assert_no_pods(&node);

    // A namespace that does not exist.
    let out = node
        .skerry_stdin(&["apply", "-n", "nope", "-f", "-"], busybox_pod("lost", "Always", &["sleep", "60"]).as_bytes());
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("Error from server (NotFound)") && out.stderr.contains("namespaces \"nope\" not found"),
        "{out}"
    );
    let out = node.skerry(&["get", "pods", "-n", "nope"]);
    assert_eq!(out.stderr, "No resources found in nope namespace.\n", "{out}");
    assert_no_pods(&node);

    // Unknown fields: accepted with a warning, kept.
    let extra =
        busybox_pod("extra", "Always", &["sleep", "60"]).replace("spec:\n", "spec:\n  frobnicate: yes-please\n");
    let out = node.skerry_stdin(&["apply", "-f", "-"], extra.as_bytes());
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "pod/extra created\n", "{out}");
    assert!(
        out.stderr.starts_with("Warning:") && out.stderr.contains("spec.frobnicate"),
        "a warning names the field:\n{out}"
    );
    assert_eq!(node.pod("extra")["spec"]["frobnicate"], "yes-please", "the unknown field is preserved");
}

#[test]
fn unreachable_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let mut cmd = std::process::Command::new(skerry_tests::skerryd::binary("skerry"));
    cmd.args(["get", "pods"]).env("SKERRY_SOCKET", &socket);
    let out = skerry_tests::skerryd::run_with_timeout(cmd, None, std::time::Duration::from_secs(30));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(socket.to_str().unwrap()), "{out}");
    assert!(out.stderr.contains("is skerryd running?"), "{out}");
}

#[test]
fn missing_images_report_pull_errors() {
    let node = TestNode::start();
    node.import_busybox();
    // Never pull and not present.
    node.apply(&busybox_pod("never", "Always", &["sleep", "60"]).replace(BUSYBOX, "skerry-test/absent:1"));
    let p = node.wait_pod("never", "waits with ErrImageNeverPull", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p:#}");
    node.wait_output(&["get", "pods"], "shows ErrImageNeverPull", |o| {
        column(&o.stdout, "never", "STATUS").as_deref() == Some("ErrImageNeverPull")
    });

    // A registry that refuses connections (a closed loopback port).
    let yaml = busybox_pod("unpullable", "Always", &["sleep", "60"])
        .replace(BUSYBOX, "127.0.0.1:1/nope:1")
        .replace("imagePullPolicy: Never", "imagePullPolicy: IfNotPresent");
    // Every status the pod goes through, from a watch opened before it exists.
    let mut watch =
        skerry_tests::http::stream(&node.skerryd.socket(), "/api/v1/namespaces/default/pods?watch=true").unwrap();
    assert_eq!(watch.status, 200);
    node.apply(&yaml);
    let mut reasons: Vec<String> = Vec::new();
    let d = deadline();
    while !(reasons.iter().any(|r| r == "ErrImagePull") && reasons.last().is_some_and(|r| r == "ImagePullBackOff")) {
        let line = watch
            .next_line(d)
            .unwrap_or_else(|| panic!("the pod never went ErrImagePull → ImagePullBackOff; reasons seen: {reasons:?}"));
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["object"]["metadata"]["name"] != "unpullable" {
            continue;
        }
        if let Some(r) = ev["object"]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str() {
            if reasons.last().map(String::as_str) != Some(r) {
                reasons.push(r.to_string());
            }
        }
    }
    let first = reasons.iter().position(|r| r.contains("ImagePull")).unwrap();
    assert_eq!(reasons[first], "ErrImagePull", "a failed pull shows ErrImagePull before the back-off: {reasons:?}");
    node.wait_output(&["get", "pods"], "shows ImagePullBackOff", |o| {
        column(&o.stdout, "unpullable", "STATUS").as_deref() == Some("ImagePullBackOff")
    });
    let d = node.skerry_ok(&["describe", "pod", "unpullable"]);
    assert!(d.contains("Failed to pull image \"127.0.0.1:1/nope:1\""), "describe shows the pull failure:\n{d}");
    assert!(d.contains("Back-off pulling image \"127.0.0.1:1/nope:1\""), "describe shows the back-off:\n{d}");
    assert!(d.contains("Reason:       ImagePullBackOff") || d.contains("Reason:       ErrImagePull"), "{d}");
}

/// Two creations racing for one NodePort: one `201`, one `422` naming the owner, every time;
/// racing creations that leave the ports to the allocator all succeed with distinct values.
#[test]
fn racing_service_creations_never_share_a_node_port() {
    let node = TestNode::start();
    let svc = |name: &str, node_port: Option<u16>| {
        let mut port = serde_json::json!({"port": 80, "targetPort": 80});
        if let Some(n) = node_port {
            port["nodePort"] = serde_json::json!(n);
        }
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                           "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port]}})
    };
    let path = "/api/v1/namespaces/default/services";
    for round in 0..8u16 {
        let port = 31000 + round;
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| node.api("POST", path, Some(&svc(&a, Some(port)))));
            let tb = s.spawn(|| node.api("POST", path, Some(&svc(&b, Some(port)))));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let mut codes = [ra.status, rb.status];
        codes.sort();
        assert_eq!(codes, [201, 422], "round {round}: {}\n{}", ra.text(), rb.text());
        let (winner, loser) = if ra.status == 201 { (&a, rb) } else { (&b, ra) };
        let message = loser.text();
        assert!(
            message.contains(&format!("provided port is already allocated (by service default/{winner})")),
            "round {round}: {message}"
        );
    }
    let auto: Vec<String> = (0..6).map(|i| format!("auto{i}")).collect();
    let answers: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> =
            auto.iter().map(|name| s.spawn(|| node.api("POST", path, Some(&svc(name, None))))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut ports = Vec::new();
    for r in &answers {
        assert_eq!(r.status, 201, "{}", r.text());
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        ports.push(body["spec"]["ports"][0]["nodePort"].as_i64().unwrap());
    }
    let distinct: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), ports.len(), "every allocated NodePort is distinct: {ports:?}");
    let out = node.skerry_ok(&["get", "services", "-o", "name"]);
    assert_eq!(out.lines().filter(|l| l.starts_with("service/")).count(), 8 + 6, "8 winners, 6 allocated:\n{out}");
}
