//! A single-node data dir written by release 0.1 (commit 73b73fb: no Raft, no `<data-dir>/raft`,
//! no `<data-dir>/pki`) is upgraded in place by today's skerryd: objects kept, revisions go on.
//!
//! The fixture (`tests/fixtures/release-0.1/`, see its README) is that release's `state.db`
//! only: containerd's state is not kept, so the Deployment's pods (the same Pod objects) get
//! new containers here. That running containers are adopted across the upgrade needs the old
//! binaries at test time and was checked by hand (see the fixture's README).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::skerryd::{deadline, Options, TestNode};

/// The fixture's directory (state.db, README.md, the manifest it was made from).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/release-0.1");

/// One object as release 0.1 stored it.
#[derive(Debug, Clone)]
struct Recorded {
    resource: String,
    namespace: String,
    name: String,
    uid: String,
    revision: u64,
    object: Value,
}

impl Recorded {
    /// Its path in the Kubernetes API (the store names a resource `plural[.group]`).
    fn path(&self) -> String {
        let plural = self.resource.split('.').next().unwrap_or_default();
        let api_version = self.object["apiVersion"].as_str().unwrap_or("v1");
        let group =
            if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
        let ns = if self.namespace.is_empty() { String::new() } else { format!("/namespaces/{}", self.namespace) };
        format!("{group}{ns}/{plural}/{}", self.name)
    }

    fn key(&self) -> String {
        format!("{} {}/{}", self.resource, self.namespace, self.name)
    }
}

/// The fixture's objects and its highest revision, read without writing next to the fixture
/// (`immutable=1`: no `-shm` or `-wal` file is made).
fn recorded() -> (Vec<Recorded>, u64) {
    let db = Path::new(FIXTURE).join("state.db");
    let uri = format!("file:{}?immutable=1", db.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn =
        rusqlite::Connection::open_with_flags(&uri, flags).unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    let mut stmt = conn.prepare("SELECT resource, namespace, name, uid, revision, data FROM objects").unwrap();
    let objects: Vec<Recorded> = stmt
        .query_map([], |row| {
            let data: String = row.get(5)?;
            Ok(Recorded {
                resource: row.get(0)?,
                namespace: row.get(1)?,
                name: row.get(2)?,
                uid: row.get(3)?,
                revision: row.get::<_, i64>(4)? as u64,
                object: serde_json::from_str(&data).expect("a stored object is JSON"),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let revision: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get(0)).unwrap();
    (objects, revision as u64)
}

/// A data dir holding a copy of the fixture's `state.db` alone.
fn prepared_data_dir(work: &Path) -> PathBuf {
    let dir = work.join("release-0.1-data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(Path::new(FIXTURE).join("state.db"), dir.join("state.db")).unwrap();
    dir
}

fn revision_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("{obj:#}"))
}

/// Objects nobody but their user writes: release 0.1's revision must be served as it was.
fn untouched(r: &Recorded) -> bool {
    matches!(r.resource.as_str(), "configmaps" | "secrets") || (r.resource == "namespaces" && r.name == "shop")
}

/// Every recorded object (events aside: they expire by age, and the fixture's are old) is
/// served with its uid; revisions only go on, and the untouched ones are the same.
fn check_objects_kept(node: &TestNode, objects: &[Recorded]) {
    for r in objects.iter().filter(|r| r.resource != "events") {
        let got = node.api("GET", &r.path(), None);
        assert_eq!(got.status, 200, "{} is gone after the upgrade: {}\n{}", r.key(), got.text(), node.log_tail(30));
        let obj = got.json();
        assert_eq!(obj["metadata"]["uid"], r.uid.as_str(), "{} has another uid", r.key());
        assert_eq!(obj["metadata"]["creationTimestamp"], r.object["metadata"]["creationTimestamp"], "{}", r.key());
        let rv = revision_of(&obj);
        assert!(rv >= r.revision, "{}: revision {rv} is before release 0.1's {}", r.key(), r.revision);
        if untouched(r) {
            assert_eq!(rv, r.revision, "{} was rewritten by the upgrade", r.key());
            assert_eq!(obj.get("data"), r.object.get("data"), "{}", r.key());
        }
    }
}

/// `shop`'s pods of the Deployment `web` once both run and are ready: (name, uid, container ID, start).
fn web_pods_running(node: &TestNode) -> Vec<(String, String, Value, Value)> {
    let d = deadline() + Duration::from_secs(60);
    loop {
        let list = node.api("GET", "/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb", None).json();
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        let ready =
            |p: &Value| p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true;
        if pods.len() == 2 && pods.iter().all(ready) {
            let mut found: Vec<_> = pods
                .iter()
                .map(|p| {
                    let c = &p["status"]["containerStatuses"][0];
                    (
                        p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        p["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
                        c["containerID"].clone(),
                        c["state"]["running"]["startedAt"].clone(),
                    )
                })
                .collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            return found;
        }
        if Instant::now() >= d {
            panic!("the Deployment's two pods are not running:\n{list:#}\nskerryd log tail:\n{}", node.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Proposes a store command creating a Service in `shop` that holds `cluster_ip` and
/// `node_port`, as a node's write would come (`POST /skerry/v1/propose`, the socket being
/// admin): the API's own check against the other Services is skipped, so only the store's
/// reservations — rebuilt from release 0.1's objects by the upgrade — can refuse it.
fn propose_service(node: &TestNode, name: &str, cluster_ip: &str, node_port: u64) -> Value {
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("sk-upgrade-{name}"),
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "NodePort", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": node_port}]}
    });
    let command = serde_json::json!({"Create": {"resource": "services", "object": object}});
    let r = node.api("POST", "/skerry/v1/propose", Some(&command));
    assert_eq!(r.status, 200, "proposing {name}: {}", r.text());
    r.json()
}

#[test]
fn a_release_0_1_data_dir_is_upgraded_in_place() {
    let (objects, old_revision) = recorded();
    let find = |resource: &str, ns: &str, name: &str| {
        objects
            .iter()
            .find(|r| r.resource == resource && r.namespace == ns && r.name == name)
            .unwrap_or_else(|| panic!("the fixture has no {resource} {ns}/{name}"))
            .clone()
    };
    let web_svc = find("services", "shop", "web");
    let web_pods: Vec<&Recorded> = objects
        .iter()
        .filter(|r| r.resource == "pods" && r.namespace == "shop" && r.object["metadata"]["labels"]["app"] == "web")
        .collect();
    assert_eq!(web_pods.len(), 2, "the fixture holds the Deployment's two pods");
    for r in [("namespaces", "", "shop"), ("deployments.apps", "shop", "web"), ("configmaps", "shop", "settings")] {
        find(r.0, r.1, r.2);
    }
    find("secrets", "shop", "token");

    let work = tempfile::Builder::new().prefix("sk-upgrade-").tempdir_in("/tmp").unwrap();
    let mut node =
        TestNode::start_opts(Options { data_from: Some(prepared_data_dir(work.path())), ..Default::default() });
    // The image is containerd's, not the data dir's; a pod that tried before it came retries.
    node.import_busybox();
    let data = node.skerryd.data_dir();
    assert!(data.join("raft").is_dir(), "no <data-dir>/raft after the upgrade");
    assert!(data.join("pki").is_dir(), "no <data-dir>/pki after the upgrade");

    check_objects_kept(&node, &objects);

    // A new write comes after release 0.1's last revision.
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  namespace: shop\ndata:\n  k: v\n");
    let after = node.api("GET", "/api/v1/namespaces/shop/configmaps/after", None).json();
    let after_rv = revision_of(&after);
    assert!(after_rv > old_revision, "a new write got revision {after_rv}, not after release 0.1's {old_revision}");

    // The Deployment's pods (the same objects) run again, with the ConfigMap and Secret.
    let pods = web_pods_running(&node);
    let mut uids: Vec<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    let mut old_uids: Vec<&str> = web_pods.iter().map(|r| r.uid.as_str()).collect();
    uids.sort();
    old_uids.sort();
    assert_eq!(uids, old_uids, "the Deployment's pods are release 0.1's");
    for (name, ..) in &pods {
        let env = node.skerry_ok(&["exec", "-n", "shop", name, "--", "sh", "-c", "echo $GREETING/$TOKEN"]);
        assert_eq!(env, "hello from 0.1/s3cret\n", "pod {name}'s environment");
    }

    // The NodePort and ClusterIP stay, and stay taken: the store refuses either to another Service.
    let svc = node.api("GET", &web_svc.path(), None).json();
    let node_port = web_svc.object["spec"]["ports"][0]["nodePort"].as_u64().expect("release 0.1 gave a nodePort");
    let cluster_ip = web_svc.object["spec"]["clusterIP"].as_str().expect("release 0.1 gave a clusterIP").to_string();
    assert_eq!(svc["spec"]["ports"][0]["nodePort"].as_u64(), Some(node_port), "{svc:#}");
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some(cluster_ip.as_str()), "{svc:#}");
    let (free_ip, free_port) = ("10.43.200.200", if node_port == 32000 { 32001 } else { 32000 });
    assert_ne!(cluster_ip, free_ip);
    for (name, ip, port, held) in [
        ("same-port", free_ip, node_port, node_port.to_string()),
        ("same-ip", cluster_ip.as_str(), free_port, cluster_ip.clone()),
    ] {
        let answer = propose_service(&node, name, ip, port);
        let refusal = answer["Err"].to_string();
        assert!(
            refusal.contains(&held) && refusal.contains("already allocated (by service shop/web)"),
            "{held} of release 0.1's Service shop/web was handed out again: {answer:#}"
        );
    }
    // The refused ones hold nothing: a Service on the free values is accepted.
    let answer = propose_service(&node, "free", free_ip, free_port);
    assert!(answer.get("Ok").is_some(), "{answer:#}");

    // A restart of today's skerryd keeps everything, containers included (container IDs are
    // derived from the pod, so the proof is PID 1's start time in clock ticks since boot).
    let ticks = |node: &TestNode| -> Vec<String> {
        pods.iter()
            .map(|p| node.skerry_ok(&["exec", "-n", "shop", &p.0, "--", "cut", "-d ", "-f22", "/proc/1/stat"]))
            .collect()
    };
    let started = ticks(&node);
    assert!(started.iter().all(|t| t.trim().parse::<u64>().is_ok()), "start ticks: {started:?}");
    node.skerryd.restart();
    check_objects_kept(&node, &objects);
    let kept = node.api("GET", "/api/v1/namespaces/shop/configmaps/after", None).json();
    assert_eq!((kept["metadata"]["uid"].clone(), revision_of(&kept)), (after["metadata"]["uid"].clone(), after_rv));
    assert_eq!(web_pods_running(&node), pods, "a restart of today's skerryd restarted the pods");
    assert_eq!(ticks(&node), started, "a restart of today's skerryd restarted the containers");
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-restart\n  namespace: shop\n");
    let last = node.api("GET", "/api/v1/namespaces/shop/configmaps/after-restart", None).json();
    assert!(revision_of(&last) > after_rv, "{last:#}");
}
