//! Pod volumes end to end: the seed's mongo stack keeps its data across pods through a claim,
//! local-path claims shared by two pods, emptyDir (disk and memory), a missing hostPath.

use std::path::Path;

use serde_json::Value;
use skerry_tests::hostpath::{HostPathGuard, SEED_HOST_PATH};
use skerry_tests::skerryd::{column, mounts_below, TestNode, BUSYBOX};
use skerry_tests::standins::import_standins;
use skerry_tests::svc::{pod_exec, wait_for};

fn token(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

fn wait_cell(node: &TestNode, kind: &str, name: &str, col: &str, want: &str) {
    node.wait_output(&["get", kind], &format!("shows {name} {col}={want}"), |o| {
        o.code == 0 && column(&o.stdout, name, col).as_deref() == Some(want)
    });
}

/// Names of the running and ready pods matching `selector`.
fn running_pods(node: &TestNode, selector: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(&node.skerry_ok(&["get", "pods", "-l", selector, "-o", "json"])).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
        .filter(|p| p["status"]["containerStatuses"].as_array().is_some_and(|cs| cs.iter().all(|c| c["ready"] == true)))
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait_one_running(node: &TestNode, selector: &str, not: Option<&str>) -> String {
    let mut found = String::new();
    node.wait_output(&["get", "pods", "-l", selector], "has a new running pod", |_| {
        let pods: Vec<String> = running_pods(node, selector).into_iter().filter(|p| Some(p.as_str()) != not).collect();
        match pods.as_slice() {
            [one] => {
                found = one.clone();
                true
            }
            _ => false,
        }
    });
    found
}

#[test]
fn seed_mongo_keeps_its_data_across_pods() {
    let host = Path::new(SEED_HOST_PATH);
    let mut guard = HostPathGuard::seed();
    let node = TestNode::start();
    let stack = skerry_tests::conformance("seed/microservices_deployment/mongo-stack.yml");
    let storage = skerry_tests::conformance("seed/microservices_deployment/storage.yml");
    import_standins(&node, &stack);
    for f in [&storage, &stack] {
        node.skerry_ok(&["apply", "-f", f.to_str().unwrap()]);
    }
    wait_cell(&node, "pvc", "mongo-pvc", "STATUS", "Bound");
    wait_cell(&node, "pv", "local-storage", "STATUS", "Bound");

    let first = wait_one_running(&node, "app=mongodb", None);
    assert!(host.is_dir(), "DirectoryOrCreate made {SEED_HOST_PATH} on the host");
    let marker = token("mongo");
    guard.files.push(host.join("marker"));
    pod_exec(&node, &first, &["sh", "-c", &format!("echo {marker} > /data/db/marker")]).unwrap();
    assert_eq!(
        std::fs::read_to_string(host.join("marker")).unwrap().trim(),
        marker,
        "the write reached the volume's host path"
    );

    node.skerry_ok(&["delete", "pod", &first]);
    let second = wait_one_running(&node, "app=mongodb", Some(&first));
    let seen = pod_exec(&node, &second, &["cat", "/data/db/marker"]).unwrap_or_else(|e| {
        let mounts = pod_exec(&node, &second, &["cat", "/proc/mounts"]).unwrap_or_else(|e| e);
        let host_ls = std::fs::read_dir(host).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>());
        panic!(
            "{second} cannot read the marker: {e}\nmounts:\n{mounts}\nhost dir: {host_ls:?}\npod: {}",
            node.skerry_ok(&["get", "pod", &second, "-o", "yaml"])
        )
    });
    assert_eq!(seen.trim(), marker, "the replacement pod {second} sees what {first} wrote");
    let pv = node.skerry_ok(&["get", "pv"]);
    assert_eq!(column(&pv, "local-storage", "STATUS").as_deref(), Some("Bound"), "{pv}");
    let pvc = node.skerry_ok(&["get", "pvc"]);
    assert_eq!(column(&pvc, "mongo-pvc", "STATUS").as_deref(), Some("Bound"), "{pvc}");
    drop(node);
}

#[test]
fn local_path_claim_is_shared_by_two_pods() {
    let node = TestNode::start();
    node.import_busybox();
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: shared\n"
        )
    };
    // The pod first: it is not scheduled while its claim is missing (kube-scheduler's
    // VolumeBinding message).
    node.apply(&pod("writer"));
    node.wait_output(&["describe", "pod", "writer"], "shows the missing claim", |o| {
        o.stdout.contains("FailedScheduling")
            && o.stdout.contains("0/1 nodes are available: persistentvolumeclaim \"shared\" not found.")
    });
    assert_ne!(node.pod("writer")["status"]["phase"], "Running");
    node.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: shared\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 16Mi\n");
    wait_cell(&node, "pvc", "shared", "STATUS", "Bound");
    node.wait_running("writer");
    pod_exec(&node, "writer", &["sh", "-c", "echo from-writer > /data/file"]).unwrap();
    node.apply(&pod("reader"));
    node.wait_running("reader");
    assert_eq!(pod_exec(&node, "reader", &["cat", "/data/file"]).unwrap(), "from-writer\n");

    let claim: Value = serde_json::from_str(&node.skerry_ok(&["get", "pvc", "shared", "-o", "json"])).unwrap();
    let on_host = node
        .skerryd
        .data_dir()
        .join("volumes")
        .join(format!("pvc-{}", claim["metadata"]["uid"].as_str().unwrap()))
        .join("file");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), "from-writer\n", "{}", on_host.display());
}

#[test]
fn empty_dir_is_shared_and_memory_is_a_tmpfs() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /cache/sub/dir && echo one > /cache/sub/dir/x && echo two > /mem/y && exec sleep 3600"]
    volumeMounts:
    - {{name: cache, mountPath: /cache}}
    - {{name: mem, mountPath: /mem}}
  - name: reader
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: cache, mountPath: /cache}}
    - {{name: cache, mountPath: /nested, subPath: sub/dir, readOnly: true}}
    - {{name: mem, mountPath: /mem}}
  volumes:
  - name: cache
    emptyDir: {{}}
  - name: mem
    emptyDir:
      medium: Memory
      sizeLimit: 64Mi
"#
    ));
    let pod = node.wait_running("shared");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let exec = |c: &str, args: &[&str]| {
        let mut all = vec!["exec", "shared", "-c", c, "--"];
        all.extend_from_slice(args);
        node.skerry(&all)
    };
    let read = |path: &str| {
        wait_for(
            &format!("reader sees {path}"),
            || {
                let o = exec("reader", &["cat", path]);
                if o.code == 0 {
                    Ok(o.stdout)
                } else {
                    Err(o.to_string())
                }
            },
            |s| !s.is_empty(),
        )
    };
    assert_eq!(read("/cache/sub/dir/x"), "one\n");
    assert_eq!(read("/nested/x"), "one\n", "subPath mount");
    assert_eq!(read("/mem/y"), "two\n");
    let ro = exec("reader", &["sh", "-c", "echo no > /nested/z"]);
    assert_ne!(ro.code, 0, "a readOnly mount refuses writes:\n{ro}");

    let mounts = exec("reader", &["cat", "/proc/mounts"]).stdout;
    let line = |at: &str| mounts.lines().find(|l| l.split(' ').nth(1) == Some(at)).map(String::from);
    let mem = line("/mem").unwrap_or_else(|| panic!("/mem is not a mount point:\n{mounts}"));
    assert!(mem.starts_with("tmpfs /mem tmpfs "), "{mem}");
    assert!(mem.contains("size=65536k"), "sizeLimit 64Mi is the tmpfs size: {mem}");
    let cache = line("/cache").unwrap_or_else(|| panic!("/cache is not a mount point:\n{mounts}"));
    assert!(!cache.starts_with("tmpfs "), "a disk emptyDir is not a tmpfs: {cache}");

    // Removal unmounts the tmpfs and removes the pod's directory.
    let pod_dir = node.skerryd.data_dir().join("pods").join(&uid);
    assert_eq!(mounts_below(&pod_dir.join("volumes")).len(), 1, "one tmpfs on the node for the memory emptyDir");
    node.skerry_ok(&["delete", "pod", "shared"]);
    node.wait_gone_in("default", "shared");
    skerry_tests::wait_until(skerry_tests::skerryd::deadline(), "the pod's directory and tmpfs are gone", || {
        mounts_below(&pod_dir).is_empty() && !pod_dir.exists()
    });
}

#[test]
fn missing_host_path_directory_waits_until_it_exists() {
    let node = TestNode::start();
    node.import_busybox();
    let dir = node.work.path().join("host dir/with space");
    let shown = dir.display().to_string();
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hp\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sh, -c, \"echo hi > /host/hello && exec sleep 3600\"]\n    volumeMounts:\n    - name: h\n      mountPath: /host\n  volumes:\n  - name: h\n    hostPath:\n      path: \"{shown}\"\n      type: Directory\n"
    ));
    let want =
        format!("MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {shown} is not a directory");
    let d = node.wait_output(&["describe", "pod", "hp"], "shows the FailedMount event", |o| o.stdout.contains(&want));
    assert!(d.stdout.contains("Warning") && d.stdout.contains("FailedMount"), "{d}");
    let pod = node.pod("hp");
    assert_eq!(pod["status"]["phase"], "Pending", "{}", pod["status"]);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{}",
        pod["status"]
    );
    let table = node.skerry_ok(&["get", "pods"]);
    assert_eq!(column(&table, "hp", "STATUS").as_deref(), Some("ContainerCreating"), "{table}");

    std::fs::create_dir_all(&dir).unwrap();
    node.wait_running("hp");
    skerry_tests::wait_until(skerry_tests::skerryd::deadline(), "the container wrote through the hostPath", || {
        std::fs::read_to_string(dir.join("hello")).is_ok_and(|s| s == "hi\n")
    });
}
