//! Workloads end to end with the conformance manifests, unmodified (issue 5): the seed's
//! ReplicaSet (a deleted pod is replaced) and Deployment (rollout, history, undo to a
//! revision), `minReadySeconds`, the microservices folder applied and deleted as a folder,
//! guestbook-go's ReplicationControllers from a folder and from http URLs, a zero-downtime
//! rolling update behind a NodePort, an old `apiVersion` converted, and cascading deletion.
//!
//! Traffic goes only to pod IPs (from the node namespace), the node's veth address and a file
//! server on the root namespace's loopback.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::netns::http_get;
use skerry_tests::skerryd::{column, deadline, TestNode};
use skerry_tests::standins::{build_standin, import_standins, page};
use skerry_tests::svc::wait_body;

const WEBAPP_05: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release0-5";
const WEBAPP_0: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release0";
const WEBAPP_1: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release1";

/// `get KIND -l SELECTOR -o json` items.
fn items(node: &TestNode, kind: &str, selector: &str) -> Vec<Value> {
    let out = node.skerry_ok(&["get", kind, "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("get -o json is not JSON ({e}):\n{out}"));
    list["items"].as_array().cloned().unwrap_or_default()
}

fn get_json(node: &TestNode, kind: &str, name: &str) -> Value {
    let out = node.skerry_ok(&["get", kind, name, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("get -o json is not JSON ({e}):\n{out}"))
}

fn running_and_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true))
}

/// Waits until exactly `n` pods matching `selector` run and are ready (and none other is
/// live); returns their names.
fn wait_pods(node: &TestNode, selector: &str, n: usize) -> BTreeSet<String> {
    let deadline = deadline();
    loop {
        let pods = items(node, "pods", selector);
        let live: Vec<&Value> = pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        if live.len() == n && live.iter().all(|p| running_and_ready(p)) {
            return live.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {n} running pods with {selector}; have:\n{}\nskerryd log tail:\n{}",
                node.skerry(&["get", "pods", "-l", selector]).stdout,
                node.skerryd.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the deployment's rollout is complete (kubectl's rollout-status rule).
fn wait_rolled_out(node: &TestNode, name: &str) -> Value {
    let out = node.skerry(&["rollout", "status", &format!("deployment/{name}"), "--timeout=90s"]);
    assert_eq!(out.code, 0, "rollout status failed:\n{out}\nskerryd log tail:\n{}", node.skerryd.log_tail(40));
    assert!(out.stdout.contains(&format!("deployment \"{name}\" successfully rolled out")), "{out}");
    let d = get_json(node, "deployment", name);
    let want = d["spec"]["replicas"].as_i64().unwrap();
    for field in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
        assert_eq!(d["status"][field].as_i64(), Some(want), "status.{field} after the rollout: {}", d["status"]);
    }
    d
}

fn images_of(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .flat_map(|p| p["spec"]["containers"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["image"].as_str().map(String::from))
        .collect()
}

/// Fetches `/` from every ready pod matching `selector`, from the node's namespace.
fn pages(node: &TestNode, selector: &str, port: u16) -> BTreeSet<String> {
    let ips: Vec<std::net::Ipv4Addr> = items(node, "pods", selector)
        .iter()
        .filter(|p| running_and_ready(p))
        .filter_map(|p| p["status"]["podIP"].as_str()?.parse().ok())
        .collect();
    node.in_netns(|| {
        ips.iter()
            .map(|ip| {
                http_get(SocketAddr::from((*ip, port)), "/", Duration::from_secs(3))
                    .unwrap_or_else(|e| format!("error: {e}"))
            })
            .collect()
    })
}

#[test]
fn seed_replicaset_replaces_a_deleted_pod_and_scales() {
    let node = TestNode::start();
    let file = skerry_tests::conformance("seed/simple-kub-deploy/pods-replicaset.yml");
    import_standins(&node, &file);
    let out = node.skerry_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("replicaset.apps/webapp created"), "{out}");
    assert!(out.contains("pod/queue created"), "{out}");
    let first = wait_pods(&node, "app=webapp", 2);

    // The ReplicaSet's status follows its pods' readiness on its controller's next pass.
    skerry_tests::wait_until(deadline(), "the ReplicaSet to count 2 ready pods", || {
        column(&node.skerry_ok(&["get", "rs"]), "webapp", "READY").as_deref() == Some("2")
    });
    let rs = node.skerry_ok(&["get", "rs"]);
    let header: Vec<&str> = rs.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], "{rs}");
    for (col, want) in [("DESIRED", "2"), ("CURRENT", "2"), ("READY", "2")] {
        assert_eq!(column(&rs, "webapp", col).as_deref(), Some(want), "{col}:\n{rs}");
    }
    // The pods belong to the ReplicaSet.
    let owner = get_json(&node, "rs", "webapp");
    for p in items(&node, "pods", "app=webapp") {
        let refs = &p["metadata"]["ownerReferences"];
        assert_eq!(refs[0]["uid"], owner["metadata"]["uid"], "{}", p["metadata"]);
        assert_eq!(refs[0]["controller"], true);
    }

    // Delete a pod: a new one replaces it.
    let victim = first.iter().next().unwrap().clone();
    node.skerry_ok(&["delete", "pod", &victim, "--wait=false"]);
    let deadline = deadline();
    let second = loop {
        let now = wait_pods(&node, "app=webapp", 2);
        if !now.contains(&victim) {
            break now;
        }
        assert!(Instant::now() < deadline, "the deleted pod {victim} was not replaced");
    };
    assert_eq!(second.intersection(&first).count(), 1, "one survivor, one replacement: {first:?} → {second:?}");
    let d = node.skerry_ok(&["describe", "rs", "webapp"]);
    assert!(d.contains("Replicas:     2 current / 2 desired"), "{d}");
    assert!(d.contains("SuccessfulCreate") && d.contains("Created pod: "), "{d}");

    // Scale up and down.
    let out = node.skerry_ok(&["scale", "rs", "webapp", "--replicas=3"]);
    assert!(out.contains("replicaset.apps/webapp scaled"), "{out}");
    wait_pods(&node, "app=webapp", 3);
    node.skerry_ok(&["scale", "rs/webapp", "--replicas=1"]);
    wait_pods(&node, "app=webapp", 1);
    let d = node.wait_output(&["describe", "rs", "webapp"], "shows 1 current / 1 desired", |o| {
        o.stdout.contains("Replicas:     1 current / 1 desired")
    });
    assert!(d.stdout.contains("SuccessfulDelete"), "{d}");

    // Deleting the ReplicaSet deletes its pods (background cascade); the queue pod stays.
    node.skerry_ok(&["delete", "rs", "webapp"]);
    skerry_tests::wait_until(deadline_from_now(), "the ReplicaSet's pods are being deleted", || {
        items(&node, "pods", "app=webapp").iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null())
    });
    assert!(running_and_ready(&node.pod("queue")));
}

fn deadline_from_now() -> Instant {
    deadline()
}

#[test]
fn seed_deployment_rollout_history_and_undo() {
    let node = TestNode::start();
    let file = skerry_tests::conformance("seed/simple-kub-deploy/pods-deployement.yml");
    import_standins(&node, &file);
    for image in [WEBAPP_0, WEBAPP_1] {
        node.import_image(&build_standin(image, &BTreeSet::new()));
    }
    let out = node.skerry_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/webapp created"), "{out}");
    wait_rolled_out(&node, "webapp");
    wait_pods(&node, "app=webapp", 2);
    let table = node.skerry_ok(&["get", "deploy"]);
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{table}");
    assert_eq!(column(&table, "webapp", "READY").as_deref(), Some("2/2"), "{table}");
    assert_eq!(column(&table, "webapp", "UP-TO-DATE").as_deref(), Some("2"), "{table}");
    assert_eq!(column(&table, "webapp", "AVAILABLE").as_deref(), Some("2"), "{table}");
    assert_eq!(pages(&node, "app=webapp", 80), BTreeSet::from([page(WEBAPP_05)]));

    // Revision 2: `set image`, then its change cause recorded by annotation (the controller
    // copies the Deployment's annotations to its current ReplicaSet, as Kubernetes does).
    let out = node.skerry_ok(&["set", "image", "deployment/webapp", &format!("webapp={WEBAPP_0}")]);
    assert!(out.contains("deployment.apps/webapp image updated"), "{out}");
    node.skerry_ok(&["annotate", "deployment/webapp", "kubernetes.io/change-cause=move to release0"]);
    wait_rolled_out(&node, "webapp");
    wait_pods(&node, "app=webapp", 2);
    assert_eq!(images_of(&items(&node, "pods", "app=webapp")), BTreeSet::from([WEBAPP_0.to_string()]));

    // Revision 3: apply a modified copy of the seed file.
    let modified = std::fs::read_to_string(&file).unwrap().replace("release0-5", "release1");
    let copy = node.write("pods-deployment-release1.yml", &modified);
    let out = node.skerry_ok(&["apply", "-f", copy.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/webapp configured"), "{out}");
    node.skerry_ok(&["annotate", "deployment/webapp", "--overwrite", "kubernetes.io/change-cause=move to release1"]);
    wait_rolled_out(&node, "webapp");
    wait_pods(&node, "app=webapp", 2);
    assert_eq!(pages(&node, "app=webapp", 80), BTreeSet::from([page(WEBAPP_1)]));
    let rs = node.skerry_ok(&["get", "rs"]);
    assert_eq!(rs.lines().count(), 4, "one ReplicaSet per revision:\n{rs}");

    let history_rows = |node: &TestNode| -> Vec<String> {
        let history = node.skerry_ok(&["rollout", "history", "deployment/webapp"]);
        assert_eq!(history.lines().next(), Some("deployment.apps/webapp "), "{history}");
        assert_eq!(
            history.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["REVISION", "CHANGE-CAUSE"]),
            "{history}"
        );
        history
            .lines()
            .skip(2)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    skerry_tests::wait_until(deadline(), "the change cause reaches revision 3", || {
        history_rows(&node) == ["1 <none>", "2 move to release0", "3 move to release1"]
    });
    let rev2 = node.skerry_ok(&["rollout", "history", "deployment/webapp", "--revision=2"]);
    assert!(rev2.contains(WEBAPP_0), "{rev2}");

    // Undo to revision 2: the release0 image again, as revision 4.
    let out = node.skerry_ok(&["rollout", "undo", "deployment/webapp", "--to-revision=2"]);
    assert!(out.contains("deployment.apps/webapp rolled back"), "{out}");
    wait_rolled_out(&node, "webapp");
    wait_pods(&node, "app=webapp", 2);
    assert_eq!(images_of(&items(&node, "pods", "app=webapp")), BTreeSet::from([WEBAPP_0.to_string()]));
    assert_eq!(pages(&node, "app=webapp", 80), BTreeSet::from([page(WEBAPP_0)]));
    let d = get_json(&node, "deployment", "webapp");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4", "{}", d["metadata"]);
    // Revision 2 became 4, with its change cause.
    assert_eq!(history_rows(&node), ["1 <none>", "3 move to release1", "4 move to release0"]);
    let out = node.skerry(&["rollout", "undo", "deployment/webapp", "--to-revision=9"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("unable to find specified revision 9 in history"), "{out}");

    let desc = node.skerry_ok(&["describe", "deployment", "webapp"]);
    assert!(desc.contains("StrategyType:           RollingUpdate"), "{desc}");
    assert!(desc.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"), "{desc}");
    assert!(desc.contains("ScalingReplicaSet") && desc.contains("Scaled up replica set webapp-"), "{desc}");

    // `get all` lists the deployment and its replica sets with kubectl's prefixes.
    let all = node.skerry_ok(&["get", "all"]);
    assert!(all.contains("deployment.apps/webapp"), "{all}");
    assert!(all.contains("replicaset.apps/webapp-"), "{all}");
    assert!(all.contains("pod/queue"), "{all}");
}

#[test]
fn min_ready_seconds_is_honoured() {
    let node = TestNode::start();
    let file = skerry_tests::conformance("seed/simple-kub-deploy/pods-deployement.yml");
    import_standins(&node, &file);
    // The seed file has `minReadySeconds: 30` commented out; a copy turns it on (shorter).
    let text = std::fs::read_to_string(&file).unwrap();
    let modified = text.replace("#  minReadySeconds: 30", "  minReadySeconds: 6");
    assert_ne!(modified, text, "the seed's deployment has a commented minReadySeconds");
    let copy = node.write("pods-deployment-min-ready.yml", &modified);
    node.skerry_ok(&["apply", "-f", copy.to_str().unwrap()]);
    let pods = wait_pods(&node, "app=webapp", 2);
    // From the moment the last pod turned ready, the deployment must not count it available
    // for minReadySeconds.
    let ready_at = pods
        .iter()
        .map(|name| {
            let p = node.pod(name);
            let cond =
                p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").cloned().unwrap();
            cond["lastTransitionTime"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap()
        })
        .max()
        .unwrap();
    let mut seen_available_at = None;
    let deadline = deadline();
    while seen_available_at.is_none() {
        let d = get_json(&node, "deployment", "webapp");
        let now = jiff::Timestamp::now();
        if d["status"]["availableReplicas"].as_i64() == Some(2) {
            seen_available_at = Some(now);
        }
        assert!(Instant::now() < deadline, "never available: {}", d["status"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let waited = seen_available_at.unwrap().duration_since(ready_at).as_secs_f64();
    // Timestamps have one-second precision; Kubernetes counts from lastTransitionTime.
    assert!(waited >= 5.0, "available {waited:.1}s after ready, before minReadySeconds (6s)");
    let d = get_json(&node, "deployment", "webapp");
    let available =
        d["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Available").cloned().unwrap();
    assert_eq!(available["status"], "True", "{available}");
}

#[test]
fn microservices_folder_applies_and_deletes_as_a_folder() {
    // The folder's mongodb pod creates storage.yml's hostPath on the host.
    let _host_path = skerry_tests::hostpath::HostPathGuard::seed();
    let node = TestNode::start();
    let dir = skerry_tests::conformance("seed/microservices_deployment");
    import_standins(&node, &dir);
    let out = node.skerry(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    for line in [
        "deployment.apps/queue created",
        "deployment.apps/position-simulator created",
        "deployment.apps/position-tracker created",
        "deployment.apps/api-gateway created",
        "deployment.apps/webapp created",
        "deployment.apps/mongodb created",
        "service/fleetman-webapp created",
        "persistentvolumeclaim/mongo-pvc created",
        "persistentvolume/local-storage created",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    for name in ["queue", "position-simulator", "position-tracker", "api-gateway", "webapp"] {
        wait_rolled_out(&node, name);
    }
    let table = node.skerry_ok(&["get", "deploy"]);
    assert_eq!(column(&table, "webapp", "READY").as_deref(), Some("1/1"), "{table}");
    // Applying again changes nothing.
    let again = node.skerry_ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(again.contains("deployment.apps/webapp unchanged"), "{again}");

    let out = node.skerry(&["delete", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    for line in [
        "deployment.apps \"webapp\" deleted",
        "service \"fleetman-webapp\" deleted",
        "persistentvolume \"local-storage\" deleted",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    skerry_tests::wait_until(deadline(), "no deployments or replica sets are left", || {
        node.skerry_ok(&["get", "deploy,rs", "-o", "name"]).trim().is_empty()
    });
    skerry_tests::wait_until(deadline(), "every pod of the folder is being deleted", || {
        let pods = node.skerry_ok(&["get", "pods", "-o", "json"]);
        let list: Value = serde_json::from_str(&pods).unwrap();
        list["items"].as_array().unwrap().iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null())
    });
}

/// Serves the files of `dir` over HTTP/1.0 on the root namespace's loopback until dropped.
struct FileServer {
    addr: SocketAddr,
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut line = String::new();
                        let _ = BufReader::new(&s).read_line(&mut line);
                        let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
                        let file: PathBuf = dir.join(&path);
                        let _ = match std::fs::read(&file) {
                            Ok(body) if !path.contains("..") => {
                                let _ = write!(
                                    s,
                                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                    body.len()
                                );
                                s.write_all(&body)
                            }
                            _ => write!(s, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                        };
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FileServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn guestbook_from_a_folder_and_from_urls() {
    let node = TestNode::start();
    let dir = skerry_tests::conformance("guestbook-go");
    import_standins(&node, &dir);
    let out = node.skerry(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    for line in [
        "replicationcontroller/guestbook created",
        "replicationcontroller/redis-master created",
        "replicationcontroller/redis-slave created",
        "service/guestbook created",
        "service/redis-master created",
        "service/redis-slave created",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    wait_pods(&node, "app=guestbook", 3);
    wait_pods(&node, "app=redis,role=master", 1);
    wait_pods(&node, "app=redis,role=slave", 2);
    let rc = node.skerry_ok(&["get", "rc"]);
    let header: Vec<&str> = rc.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], "{rc}");
    assert_eq!(column(&rc, "guestbook", "READY").as_deref(), Some("3"), "{rc}");
    // The guestbook LoadBalancer answers on the node's address, port 3000 (named target port).
    let lb = SocketAddr::from((node.node_ip(), 3000));
    wait_body("root namespace → node_ip:3000", &page("k8s.gcr.io/guestbook:v3"), || {
        http_get(lb, "/", Duration::from_secs(3)).map_err(|e| e.to_string())
    });
    let out = node.skerry(&["delete", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("replicationcontroller \"guestbook\" deleted"), "{out}");
    skerry_tests::wait_until(deadline(), "the replication controllers are gone", || {
        node.skerry_ok(&["get", "rc", "-o", "name"]).trim().is_empty()
    });

    // The same files from http URLs on loopback.
    let server = FileServer::start(&dir);
    let mut args = vec!["apply".to_string()];
    for f in [
        "redis-master-controller.json",
        "redis-master-service.json",
        "guestbook-controller.json",
        "guestbook-service.json",
    ] {
        args.push("-f".into());
        args.push(format!("http://{}/{f}", server.addr));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = node.skerry(&args);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("replicationcontroller/guestbook created"), "{out}");
    assert!(out.stdout.contains("service/redis-master created"), "{out}");
    wait_pods(&node, "app=guestbook", 3);
    wait_pods(&node, "app=redis,role=master", 1);
}

#[test]
fn rolling_update_behind_a_node_port_drops_no_request() {
    let node = TestNode::start();
    let (v1, v2) = ("skerry-test/web:1", "skerry-test/web:2");
    for image in [v1, v2] {
        node.import_image(&build_standin(image, &BTreeSet::from([8080])));
    }
    node.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: {v1}
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /index.html, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: http, nodePort: 30090}}
"#
    ));
    wait_rolled_out(&node, "web");
    let addr = SocketAddr::from((node.node_ip(), 30090));
    let fetch = || http_get(addr, "/", Duration::from_secs(3)).map_err(|e| e.to_string());
    let (want1, want2) = (page(v1), page(v2));
    wait_body("the NodePort serves v1", &want1, fetch);

    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let (log, updated) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let started = Instant::now();
            let mut log: Vec<Result<String, String>> = Vec::new();
            let mut v2_streak = 0;
            // Bounded: until 30 answers in a row come from v2, or 90 s, or 3000 requests.
            while started.elapsed() < Duration::from_secs(90) && log.len() < 3000 && v2_streak < 30 {
                let r = fetch();
                v2_streak = if r.as_deref() == Ok(want2.as_str()) { v2_streak + 1 } else { 0 };
                log.push(r);
                done.store(log.len(), Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            log
        });
        skerry_tests::wait_until(Instant::now() + Duration::from_secs(15), "the client made 20 requests", || {
            done.load(Ordering::Relaxed) >= 20 || client.is_finished()
        });
        let out = node.skerry(&["set", "image", "deployment/web", &format!("web={v2}")]);
        if out.code != 0 {
            stop.store(true, Ordering::Relaxed);
        }
        (client.join().unwrap(), out)
    });
    assert_eq!(updated.code, 0, "{updated}");
    let failed: Vec<&String> = log.iter().filter_map(|r| r.as_ref().err()).collect();
    let strange: Vec<&String> =
        log.iter().filter_map(|r| r.as_ref().ok()).filter(|b| **b != want1 && **b != want2).collect();
    assert!(
        failed.is_empty() && strange.is_empty(),
        "{} of {} requests failed during the rollout: {failed:?} {strange:?}",
        failed.len(),
        log.len()
    );
    assert_eq!(
        log.last().and_then(|r| r.as_ref().ok()),
        Some(&want2),
        "the rollout finished within the loop ({} requests)",
        log.len()
    );
    wait_rolled_out(&node, "web");
}

#[test]
fn old_api_versions_convert_and_cascade_orphan_keeps_pods() {
    let node = TestNode::start();
    node.import_busybox();
    let manifest = format!(
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: legacy\nspec:\n  replicas: 1\n  template:\n    metadata:\n      labels:\n        app: legacy\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {}\n        imagePullPolicy: Never\n        command: [\"sleep\", \"3600\"]\n",
        skerry_tests::skerryd::BUSYBOX
    );
    let out = node.skerry_stdin(&["apply", "-f", "-"], manifest.as_bytes());
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("deployment.apps/legacy created"), "{out}");
    assert!(out.stderr.contains("extensions/v1beta1 Deployment is deprecated"), "a deprecation warning:\n{out}");
    let d = get_json(&node, "deployment", "legacy");
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "legacy", "the selector defaults to the template's labels");
    wait_rolled_out(&node, "legacy");
    let pods = wait_pods(&node, "app=legacy", 1);

    // --cascade=orphan: the ReplicaSet and its pod stay, without the reference to the deployment.
    let out = node.skerry_ok(&["delete", "deployment", "legacy", "--cascade=orphan"]);
    assert!(out.contains("deployment.apps \"legacy\" deleted"), "{out}");
    let rs = items(&node, "rs", "app=legacy");
    assert_eq!(rs.len(), 1, "the ReplicaSet is orphaned, not deleted");
    assert!(rs[0]["metadata"]["ownerReferences"].is_null(), "{}", rs[0]["metadata"]);
    assert_eq!(wait_pods(&node, "app=legacy", 1), pods);

    // --cascade=foreground: the ReplicaSet is gone only after its pod.
    let rs_name = rs[0]["metadata"]["name"].as_str().unwrap().to_string();
    let out = node.skerry_ok(&["delete", "rs", &rs_name, "--cascade=foreground"]);
    assert!(out.contains(&format!("replicaset.apps \"{rs_name}\" deleted")), "{out}");
    assert!(items(&node, "pods", "app=legacy").is_empty(), "foreground deletion waited for the pod");
}

#[test]
fn a_killed_container_process_is_restarted_in_place() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: healer
spec:
  replicas: 1
  selector:
    matchLabels: {{app: healer}}
  template:
    metadata:
      labels: {{app: healer}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {}
        imagePullPolicy: Never
        command: ["sh", "-c", "trap 'exit 143' TERM; while true; do sleep 1; done"]
"#,
        skerry_tests::skerryd::BUSYBOX
    ));
    let pods = wait_pods(&node, "app=healer", 1);
    let name = pods.iter().next().unwrap().clone();
    // The container's main process dies: the kubelet rule restarts it in the same pod.
    let out = node.skerry(&["exec", &name, "--", "kill", "1"]);
    assert!(out.code == 0 || out.code == 137, "{out}");
    let p = node
        .wait_pod(&name, "restarted once", |p| p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1));
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 143, "{p:#}");
    assert_eq!(wait_pods(&node, "app=healer", 1), pods, "the same pod, not a replacement");
}
