//! ConfigMaps and Secrets in pods end to end: as variables (valueFrom, envFrom, `$(VAR)`), as
//! files (items, modes, tmpfs for Secrets), live updates, missing objects, and secret hygiene.

use serde_json::Value;
use skerry_tests::skerryd::{column, TestNode, BUSYBOX};
use skerry_tests::svc::{pod_exec, wait_for};

fn secret_value() -> String {
    format!(
        "s3cr3t-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

fn config_map(mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  mode: {mode}\n  greeting: hello\n"
    )
}

/// `exec` until it succeeds (the container may just have started); returns stdout.
fn exec_ok(node: &TestNode, pod: &str, args: &[&str]) -> String {
    wait_for(&format!("exec {args:?} in {pod}"), || pod_exec(node, pod, args), |_| true)
}

#[test]
fn config_maps_and_secrets_as_env_and_files() {
    let node = TestNode::start();
    node.import_busybox();
    let secret = secret_value();
    node.apply(&config_map("fast"));
    node.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {secret}\n  user: admin\n"
    ));
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args: ["echo 'expanded:$(MSG):$$(MSG)'; exec sleep 3600"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {{name: app-config, key: greeting}}
    - name: MSG
      value: "$(GREETING) world"
    - name: PW
      valueFrom:
        secretKeyRef: {{name: db, key: password}}
    - name: OPT
      valueFrom:
        configMapKeyRef: {{name: nope, key: x, optional: true}}
    - name: POD_NAME
      valueFrom:
        fieldRef: {{fieldPath: metadata.name}}
    - name: POD_NS
      valueFrom:
        fieldRef: {{fieldPath: metadata.namespace}}
    - name: POD_IP
      valueFrom:
        fieldRef: {{fieldPath: status.podIP}}
    - name: NODE
      valueFrom:
        fieldRef: {{fieldPath: spec.nodeName}}
    envFrom:
    - configMapRef: {{name: app-config}}
      prefix: CFG_
    - secretRef: {{name: db}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: items, mountPath: /etc/items}}
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: opt, mountPath: /etc/opt}}
    - {{name: cfg, mountPath: /etc/pinned, subPath: mode}}
  volumes:
  - name: cfg
    configMap: {{name: app-config, defaultMode: 288}}
  - name: items
    configMap:
      name: app-config
      items:
      - {{key: mode, path: conf/mode.txt, mode: 384}}
  - name: sec
    secret: {{secretName: db, defaultMode: 256}}
  - name: opt
    configMap: {{name: nope, optional: true}}
"#
    ));
    let pod = node.wait_running("app");

    // Variables.
    let env = exec_ok(&node, "app", &["env"]);
    let pod_ip = pod["status"]["podIP"].as_str().unwrap();
    for want in [
        "GREETING=hello".to_string(),
        "MSG=hello world".into(),
        format!("PW={secret}"),
        "POD_NAME=app".into(),
        "POD_NS=default".into(),
        format!("POD_IP={pod_ip}"),
        format!("NODE={}", pod["spec"]["nodeName"].as_str().unwrap()),
        "CFG_mode=fast".into(),
        "CFG_greeting=hello".into(),
        format!("password={secret}"),
        "user=admin".into(),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want:?} in:\n{env}");
    }
    assert!(!env.lines().any(|l| l.starts_with("OPT=")), "an optional missing ref leaves the variable unset:\n{env}");
    node.wait_output(&["logs", "app"], "shows the expanded args", |o| o.stdout.contains("expanded:hello world:$(MSG)"));

    // Files and modes.
    assert_eq!(exec_ok(&node, "app", &["cat", "/etc/cfg/mode"]), "fast");
    assert_eq!(exec_ok(&node, "app", &["stat", "-L", "-c", "%a", "/etc/cfg/mode"]).trim(), "440");
    assert_eq!(exec_ok(&node, "app", &["cat", "/etc/items/conf/mode.txt"]), "fast");
    assert_eq!(exec_ok(&node, "app", &["stat", "-L", "-c", "%a", "/etc/items/conf/mode.txt"]).trim(), "600");
    assert_eq!(exec_ok(&node, "app", &["ls", "/etc/items"]).trim(), "conf", "items project only the named keys");
    assert_eq!(exec_ok(&node, "app", &["cat", "/etc/sec/password"]), secret);
    assert_eq!(exec_ok(&node, "app", &["stat", "-L", "-c", "%a", "/etc/sec/password"]).trim(), "400");
    assert_eq!(
        exec_ok(&node, "app", &["ls", "/etc/opt"]).trim(),
        "",
        "an optional missing ConfigMap is an empty volume"
    );
    let mounts = exec_ok(&node, "app", &["cat", "/proc/mounts"]);
    let sec = mounts.lines().find(|l| l.split(' ').nth(1) == Some("/etc/sec")).unwrap_or_else(|| panic!("{mounts}"));
    assert!(sec.starts_with("tmpfs "), "a secret volume is a tmpfs: {sec}");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let secret_parent = node.skerryd.data_dir().join("pods").join(uid).join("volumes/kubernetes.io~secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret_parent).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "{}", secret_parent.display());

    // A live update reaches the mounted file, not the subPath mount (as in Kubernetes).
    node.apply(&config_map("slow"));
    wait_for("the update reaches /etc/cfg/mode", || pod_exec(&node, "app", &["cat", "/etc/cfg/mode"]), |s| s == "slow");
    wait_for(
        "the update reaches the items volume",
        || pod_exec(&node, "app", &["cat", "/etc/items/conf/mode.txt"]),
        |s| s == "slow",
    );
    assert_eq!(
        exec_ok(&node, "app", &["cat", "/etc/pinned"]),
        "fast",
        "a subPath mount keeps what it was started with"
    );

    // Hygiene: sizes only in describe secret; the value nowhere in describe pod or the log.
    let d = node.skerry_ok(&["describe", "secret", "db"]);
    let line = d.lines().find(|l| l.starts_with("password:")).unwrap_or_else(|| panic!("{d}"));
    assert!(line.ends_with(&format!(" {} bytes", secret.len())), "{d}");
    assert!(!d.contains(&secret), "{d}");
    let d = node.skerry_ok(&["describe", "pod", "app"]);
    assert!(!d.contains(&secret), "describe pod shows the secret:\n{d}");
    let events = node.skerry_ok(&["get", "events", "-o", "json"]);
    assert!(!events.contains(&secret), "an event carries the secret");
    assert!(!node.skerryd.log().contains(&secret), "skerryd's log carries the secret");
}

#[test]
fn missing_config_waits_with_kubelets_errors() {
    let node = TestNode::start();
    node.import_busybox();
    let pod = |name: &str, env: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n{env}"
        )
    };
    node.apply(&pod("late", "    envFrom:\n    - configMapRef:\n        name: late-config\n"));
    node.apply(&pod(
        "nokey",
        "    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {name: present, key: missing}\n",
    ));
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: present\ndata:\n  other: x\n");
    node.apply(&format!(
        "{}  volumes:\n  - name: v\n    configMap:\n      name: late-volume\n",
        pod("latevol", "    volumeMounts:\n    - {name: v, mountPath: /cfg}\n")
    ));

    // Missing objects and keys: CreateContainerConfigError with kubelet's message and event.
    node.wait_output(&["get", "pods"], "shows CreateContainerConfigError", |o| {
        column(&o.stdout, "late", "STATUS").as_deref() == Some("CreateContainerConfigError")
            && column(&o.stdout, "nokey", "STATUS").as_deref() == Some("CreateContainerConfigError")
    });
    let waiting =
        |name: &str| -> Value { node.pod(name)["status"]["containerStatuses"][0]["state"]["waiting"].clone() };
    assert_eq!(waiting("late")["message"], "configmap \"late-config\" not found");
    node.wait_pod("nokey", "waits for its key", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            == "couldn't find key missing in ConfigMap default/present"
    });
    node.wait_output(&["describe", "pod", "late"], "shows the Failed event", |o| {
        o.stdout.contains("Error: configmap \"late-config\" not found")
    });
    // A missing ConfigMap volume: FailedMount, ContainerCreating.
    node.wait_output(&["describe", "pod", "latevol"], "shows the FailedMount event", |o| {
        o.stdout.contains("MountVolume.SetUp failed for volume \"v\" : configmap \"late-volume\" not found")
    });
    let table = node.skerry_ok(&["get", "pods"]);
    assert_eq!(column(&table, "latevol", "STATUS").as_deref(), Some("ContainerCreating"), "{table}");

    // Once they exist the pods start.
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late-config\ndata:\n  A: b\n");
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late-volume\ndata:\n  f: content\n");
    node.wait_running("late");
    node.wait_running("latevol");
    assert!(exec_ok(&node, "late", &["env"]).lines().any(|l| l == "A=b"));
    assert_eq!(exec_ok(&node, "latevol", &["cat", "/cfg/f"]), "content");
    assert_eq!(waiting("nokey")["reason"], "CreateContainerConfigError", "still missing its key");
}
