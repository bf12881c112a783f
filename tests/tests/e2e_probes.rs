//! Container probes end to end: readiness over HTTP drives READY and a Service's Endpoints; a
//! failing liveness exec probe restarts the container with kubelet's events; a TCP startup
//! probe holds readiness off until its port opens; probes find named ports; a host-network pod
//! is probed on the node's address. Probe periods are 1 s; every wait polls with a deadline.

use serde_json::Value;
use skerry_tests::skerryd::{column, TestNode, BUSYBOX};
use skerry_tests::svc::{endpoint_addrs, wait_endpoints};

fn container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn running(p: &Value) -> bool {
    container(p)["state"]["running"].is_object()
}

fn condition<'a>(p: &'a Value, kind: &str) -> &'a Value {
    p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

/// (reason, message) of the events about pod `name`, oldest first.
fn events(node: &TestNode, name: &str) -> Vec<(String, String)> {
    let out = node.skerry_ok(&["get", "events", "-o", "json"]);
    let list: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("get events -o json is not JSON ({e}): {out}"));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| (e["reason"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// How many times pod `name`'s probes failed, summing the `Unhealthy` events' counts.
fn unhealthy_count(node: &TestNode, name: &str) -> i64 {
    let out = node.skerry_ok(&["get", "events", "-o", "json"]);
    let list: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("get events -o json is not JSON ({e}): {out}"));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == "Unhealthy")
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum()
}

/// Waits until pod `name` has an event with `reason` whose message satisfies `ok`.
fn wait_event(node: &TestNode, name: &str, reason: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = skerry_tests::skerryd::deadline();
    loop {
        let evs = events(node, name);
        if let Some((_, m)) = evs.iter().find(|(r, m)| r == reason && ok(m)) {
            return m.clone();
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "no {reason} event for pod {name} within 60 s; events: {evs:#?}\nskerryd log tail:\n{}",
                node.skerryd.log_tail(40)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The `notReadyAddresses` of an Endpoints object as `ip:port`.
fn not_ready_addrs(node: &TestNode, name: &str) -> Vec<String> {
    let out = node.skerry(&["get", "endpoints", name, "-o", "json"]);
    let Ok(v) = serde_json::from_str::<Value>(&out.stdout) else { return Vec::new() };
    let mut found = Vec::new();
    for s in v["subsets"].as_array().into_iter().flatten() {
        for a in s["notReadyAddresses"].as_array().into_iter().flatten() {
            for p in s["ports"].as_array().into_iter().flatten() {
                found.push(format!("{}:{}", a["ip"].as_str().unwrap_or("?"), p["port"]));
            }
        }
    }
    found
}

/// Every version of the pods labelled `selector` stored after revision `rv` (a replaying watch).
fn history(node: &TestNode, rv: &str, selector: &str) -> Vec<Value> {
    let path = format!(
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1&labelSelector={selector}"
    );
    let mut w = skerry_tests::http::stream(&node.skerryd.socket(), &path).expect("watching pods");
    assert_eq!(w.status, 200);
    let mut pods = Vec::new();
    while let Some(line) = w.next_line(std::time::Instant::now() + std::time::Duration::from_secs(20)) {
        let ev: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}"));
        pods.push(ev["object"].clone());
    }
    assert!(w.ended(), "the watch ended by itself");
    pods
}

fn exec_ok(node: &TestNode, pod: &str, args: &[&str]) {
    let mut all = vec!["exec", pod, "--"];
    all.extend_from_slice(args);
    let out = node.skerry(&all);
    assert_eq!(out.code, 0, "exec {pod} -- {args:?} failed:\n{out}");
}

fn ready_column(node: &TestNode, pod: &str) -> String {
    let table = node.skerry_ok(&["get", "pods"]);
    column(&table, pod, "READY").unwrap_or_else(|| panic!("no row for {pod}:\n{table}"))
}

const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"]
    ports:
    - {name: http, containerPort: 80}
    readinessProbe:
      httpGet:
        path: /ready.html
        port: 80
        httpHeaders: [{name: X-Probe, value: skerry}]
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: http}
---
apiVersion: v1
kind: Pod
metadata:
  name: named
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: named
    image: BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/healthz && exec httpd -f -p 8080 -h /tmp/www"]
    ports:
    - {name: probe-port, containerPort: 8080}
    readinessProbe:
      httpGet: {path: healthz, port: probe-port}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: slow
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: slow
    image: BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.2; done; exec httpd -f -p 8080 -h /"]
    startupProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
      failureThreshold: 120
    readinessProbe:
      exec: {command: ["sh", "-c", "date >> /tmp/readiness-ran"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: hostnet
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: hostnet
    image: BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 18089 -h /tmp/www"]
    readinessProbe:
      httpGet: {port: 18089}
      periodSeconds: 1
"#;

#[test]
fn readiness_startup_and_named_ports() {
    let mut node = TestNode::start();
    node.import_busybox();
    let list = node.api("GET", "/api/v1/namespaces/default/pods", None);
    let rv = list.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion: {}", list.text()))
        .to_string();
    node.apply(&WEB.replace("BUSYBOX", BUSYBOX));

    // The readiness probe fails (404) while /ready.html is missing: running, READY 0/1, and the
    // address is in the Service's notReadyAddresses.
    // (The first attempts may come before httpd listens and be refused.)
    wait_event(&node, "web", "Unhealthy", |m| m == "Readiness probe failed: HTTP probe failed with statuscode: 404");
    let p = node.wait_pod("web", "is running", running);
    assert_eq!(container(&p)["ready"], false, "{p:#}");
    assert_eq!(container(&p)["started"], true, "{p:#}");
    assert_eq!(condition(&p, "Ready")["status"], "False", "{p:#}");
    assert_eq!(condition(&p, "Ready")["reason"], "ContainersNotReady", "{p:#}");
    assert_eq!(condition(&p, "ContainersReady")["message"], "containers with unready status: [web]", "{p:#}");
    assert_eq!(ready_column(&node, "web"), "0/1");
    let ip = node.pod_ip("web");
    let want = vec![format!("{ip}:80")];
    skerry_tests::wait_until(skerry_tests::skerryd::deadline(), "web's address is in notReadyAddresses", || {
        not_ready_addrs(&node, "web") == want
    });
    assert!(endpoint_addrs(&node, "default", "web").is_empty());
    // Not even for a moment after the start: readiness starts false.
    let versions = history(&node, &rv, "app%3Dweb");
    assert!(versions.iter().any(running), "the replay saw web running: {versions:#?}");
    let ready: Vec<&Value> = versions.iter().filter(|p| container(p)["ready"] == true).collect();
    assert!(ready.is_empty(), "web was ready before its probe ever succeeded: {ready:#?}");

    // The file appears: ready, 1/1, and the address moves into `addresses`.
    exec_ok(&node, "web", &["touch", "/tmp/www/ready.html"]);
    let p = node.wait_pod("web", "is ready", |p| container(p)["ready"] == true);
    assert_eq!(condition(&p, "Ready")["status"], "True", "{p:#}");
    assert!(condition(&p, "Ready").get("reason").is_none(), "{p:#}");
    assert_eq!(ready_column(&node, "web"), "1/1");
    wait_endpoints(&node, "default", "web", &want);
    assert!(not_ready_addrs(&node, "web").is_empty());

    // It goes again: unready after failureThreshold (2) failures, out of the endpoints.
    exec_ok(&node, "web", &["rm", "/tmp/www/ready.html"]);
    let p = node.wait_pod("web", "is unready again", |p| container(p)["ready"] == false);
    assert!(running(&p), "readiness never restarts a container: {p:#}");
    assert_eq!(container(&p)["restartCount"], 0, "{p:#}");
    wait_endpoints(&node, "default", "web", &[]);
    assert_eq!(not_ready_addrs(&node, "web"), want);

    // A named port: the probe finds probe-port (8080) and the pod becomes ready. The API
    // server's defaults show in the stored probe.
    let p = node.wait_running("named");
    let probe = &p["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(probe["timeoutSeconds"], 1, "{probe}");
    assert_eq!(probe["successThreshold"], 1, "{probe}");
    assert_eq!(probe["failureThreshold"], 3, "{probe}");
    assert_eq!(probe["periodSeconds"], 1, "{probe}");
    assert_eq!(probe["httpGet"]["scheme"], "HTTP", "{probe}");
    assert_eq!(probe["httpGet"]["port"], "probe-port", "{probe}");

    // The TCP startup probe fails while nothing listens; until it succeeds the container is
    // neither started nor ready, and the readiness probe does not run at all.
    let msg = wait_event(&node, "slow", "Unhealthy", |m| m.starts_with("Startup probe failed:"));
    let slow_ip = node.pod_ip("slow");
    assert_eq!(msg, format!("Startup probe failed: dial tcp {slow_ip}:8080: connect: connection refused"));
    let p = node.wait_pod("slow", "is running", running);
    assert_eq!(
        (container(&p)["started"].as_bool(), container(&p)["ready"].as_bool()),
        (Some(false), Some(false)),
        "{p:#}"
    );
    assert_eq!(ready_column(&node, "slow"), "0/1");
    let out = node.skerry(&["exec", "slow", "--", "cat", "/tmp/readiness-ran"]);
    assert_ne!(out.code, 0, "the readiness probe ran before the startup probe succeeded:\n{out}");
    exec_ok(&node, "slow", &["touch", "/tmp/go"]);
    let p = node.wait_running("slow");
    assert_eq!(container(&p)["started"], true, "{p:#}");
    assert_eq!(container(&p)["restartCount"], 0, "{p:#}");
    exec_ok(&node, "slow", &["cat", "/tmp/readiness-ran"]);

    // A host-network pod is probed on the node's address.
    // (A first probe may come before httpd listens, as with kubelet: what counts is that the
    // probe reaches it on the node's address and the pod becomes ready.)
    node.wait_running("hostnet");
    skerry_tests::wait_until(skerry_tests::skerryd::deadline(), "the host-network pod is ready", || {
        ready_column(&node, "hostnet") == "1/1"
    });

    // Restarting skerryd restarts no container; the probes start again from the stored status,
    // so a ready container stays ready (its Ready condition keeps its transition time).
    let before = node.pod("named");
    let failures = unhealthy_count(&node, "web");
    node.skerryd.restart();
    skerry_tests::wait_until(
        skerry_tests::skerryd::deadline(),
        "web's readiness probe fails again after the restart",
        || unhealthy_count(&node, "web") > failures,
    );
    let after = node.pod("named");
    assert_eq!(container(&after)["state"], container(&before)["state"], "the container kept running: {after:#}");
    assert_eq!(container(&after)["restartCount"], 0, "{after:#}");
    assert_eq!(container(&after)["ready"], true, "{after:#}");
    assert_eq!(condition(&after, "Ready"), condition(&before, "Ready"), "{after:#}");
    let web = node.pod("web");
    assert_eq!((running(&web), container(&web)["ready"].as_bool()), (true, Some(false)), "{web:#}");
}

const LIVE: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: live
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: live
    image: BUSYBOX
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/healthy; exec sleep 3600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
"#;

#[test]
fn failing_liveness_restarts_the_container() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&LIVE.replace("BUSYBOX", BUSYBOX));
    let p = node.wait_running("live");
    let first_start = container(&p)["state"]["running"]["startedAt"].clone();
    assert_eq!(container(&p)["restartCount"], 0, "{p:#}");

    // The probe starts failing: three failures in a row, then the kill and a restart (after
    // the grace period and the usual back-off).
    exec_ok(&node, "live", &["rm", "/tmp/healthy"]);
    let p = node.wait_pod("live", "was restarted and runs again", |p| {
        container(p)["restartCount"].as_u64() >= Some(1) && running(p)
    });
    assert_eq!(container(&p)["restartCount"], 1, "{p:#}");
    assert_ne!(container(&p)["state"]["running"]["startedAt"], first_start, "{p:#}");
    // `sleep` as PID 1 ignores SIGTERM, so the grace period (1 s) ends with SIGKILL.
    assert_eq!(container(&p)["lastState"]["terminated"]["exitCode"], 137, "{p:#}");

    let d = node.skerry_ok(&["describe", "pod", "live"]);
    let unhealthy = d.lines().find(|l| l.contains("Unhealthy")).unwrap_or_else(|| panic!("no Unhealthy event:\n{d}"));
    assert!(unhealthy.trim_start().starts_with("Warning"), "{unhealthy}");
    assert!(
        unhealthy.contains("Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"),
        "{d}"
    );
    let killing =
        d.lines().find(|l| l.contains("failed liveness probe")).unwrap_or_else(|| panic!("no Killing event:\n{d}"));
    assert!(killing.trim_start().starts_with("Normal") && killing.contains("Killing"), "{killing}");
    assert!(killing.contains("Container live failed liveness probe, will be restarted"), "{killing}");

    // The new run starts its probes afresh and passes them (the command made the file again).
    let p = node.wait_running("live");
    assert_eq!(container(&p)["restartCount"], 1, "{p:#}");
}
