//! Services end to end (issue 4): the seed's NodePort service from the root namespace, a
//! zero-downtime selector switch, `patch` (strategic, merge, json) to LoadBalancer with
//! externalIPs, the microservices services applied unmodified, NodePort conflicts, ClusterIP
//! VIPs from pods (refusals, hairpin, session affinity, UDP), `expose`, `describe`, `get`.
//!
//! Traffic goes only to pod IPs, VIPs (inside the node namespace) and the node's veth address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::netns::http_get;
use skerry_tests::skerryd::{busybox_pod, column, TestNode, BUSYBOX};
use skerry_tests::standins::{import_standins, page};
use skerry_tests::svc::*;

const WEBAPP_05: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release0-5";
const WEBAPP_0: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release0";

fn root_fetch(addr: SocketAddr) -> Result<String, String> {
    http_get(addr, "/", Duration::from_secs(3)).map_err(|e| e.to_string())
}

fn in_service_cidr(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10 && o[1] == 43
}

#[test]
fn seed_simple_app_node_port_switch_and_patch() {
    let node = TestNode::start();
    let dir = skerry_tests::conformance("seed/simple-app");
    import_standins(&node, &dir);
    let out = node.skerry_ok(&["apply", "-f", dir.to_str().unwrap()]);
    for line in ["pod/webapp created", "pod/webapp-release0-5 created", "service/fleetman-webapp created"] {
        assert!(out.contains(line), "apply printed:\n{out}");
    }
    node.wait_running("webapp");
    node.wait_running("webapp-release0-5");
    let ip0 = node.pod_ip("webapp");
    let ip05 = node.pod_ip("webapp-release0-5");
    let node_ip = node.node_ip();
    let nodeport = SocketAddr::from((node_ip, 30080));

    // The NodePort answers from the root namespace, over the veth pair, with release 0-5.
    wait_body("root namespace → node_ip:30080", &page(WEBAPP_05), || root_fetch(nodeport));

    // get svc / get endpoints / describe svc.
    let cip = cluster_ip(&node, "default", "fleetman-webapp");
    assert!(in_service_cidr(cip), "clusterIP {cip} is outside 10.43.0.0/16");
    let table = node.skerry_ok(&["get", "svc"]);
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], "{table}");
    assert_eq!(column(&table, "fleetman-webapp", "TYPE").as_deref(), Some("NodePort"), "{table}");
    assert_eq!(column(&table, "fleetman-webapp", "CLUSTER-IP"), Some(cip.to_string()), "{table}");
    assert_eq!(column(&table, "fleetman-webapp", "EXTERNAL-IP").as_deref(), Some("<none>"), "{table}");
    assert_eq!(column(&table, "fleetman-webapp", "PORT(S)").as_deref(), Some("80:30080/TCP"), "{table}");
    wait_endpoints(&node, "default", "fleetman-webapp", &[format!("{ip05}:80")]);
    let eps = node.skerry_ok(&["get", "endpoints"]);
    let header: Vec<&str> = eps.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "ENDPOINTS", "AGE"], "{eps}");
    assert_eq!(column(&eps, "fleetman-webapp", "ENDPOINTS"), Some(format!("{ip05}:80")), "{eps}");
    let d = node.skerry_ok(&["describe", "svc", "fleetman-webapp"]);
    assert_eq!(describe_field(&d, "Name"), "fleetman-webapp", "{d}");
    assert_eq!(describe_field(&d, "Namespace"), "default", "{d}");
    assert_eq!(describe_field(&d, "Selector"), "app=webapp,release=0-5", "{d}");
    assert_eq!(describe_field(&d, "Type"), "NodePort", "{d}");
    assert_eq!(describe_field(&d, "IP"), cip.to_string(), "{d}");
    assert_eq!(describe_field(&d, "Port").split_whitespace().collect::<Vec<_>>(), ["http", "80/TCP"], "{d}");
    assert_eq!(describe_field(&d, "TargetPort"), "80/TCP", "{d}");
    assert_eq!(describe_field(&d, "NodePort").split_whitespace().collect::<Vec<_>>(), ["http", "30080/TCP"], "{d}");
    assert_eq!(describe_field(&d, "Endpoints"), format!("{ip05}:80"), "{d}");
    assert_eq!(describe_field(&d, "Session Affinity"), "None", "{d}");

    // Switch the selector to release "0" with a modified COPY of the seed's service file, while a
    // bounded client loop in the root namespace keeps asking: not one request may fail.
    let original = std::fs::read_to_string(dir.join("webapp-service.yml")).unwrap();
    let modified = original.replace("release: \"0-5\"", "release: \"0\"");
    assert_ne!(modified, original, "the seed's service selects release \"0-5\"");
    let copy = node.write("webapp-service.yml", &modified);
    let (want0, want05) = (page(WEBAPP_0), page(WEBAPP_05));
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let (log, applied) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let started = Instant::now();
            let mut log: Vec<Result<String, String>> = Vec::new();
            let mut after_switch = 0;
            while started.elapsed() < Duration::from_secs(20) && log.len() < 400 && after_switch < 50 {
                let r = root_fetch(nodeport);
                if r.as_deref() == Ok(want0.as_str()) {
                    after_switch += 1;
                }
                log.push(r);
                done.store(log.len(), Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) && after_switch == 0 {
                    break;
                }
                // Paced, so the loop spans the switch.
                std::thread::sleep(Duration::from_millis(20));
            }
            log
        });
        // The switch comes in the middle of the loop, after 25 requests.
        skerry_tests::wait_until(Instant::now() + Duration::from_secs(15), "the client loop made 25 requests", || {
            done.load(Ordering::Relaxed) >= 25 || client.is_finished()
        });
        let out = node.skerry(&["apply", "-f", copy.to_str().unwrap()]);
        if out.code != 0 {
            stop.store(true, Ordering::Relaxed);
        }
        (client.join().unwrap(), out)
    });
    assert_eq!(applied.code, 0, "apply of the modified copy:\n{applied}");
    assert!(applied.stdout.contains("service/fleetman-webapp configured"), "{applied}");
    let failed: Vec<&String> = log.iter().filter_map(|r| r.as_ref().err()).collect();
    let strange: Vec<&String> =
        log.iter().filter_map(|r| r.as_ref().ok()).filter(|b| **b != want0 && **b != want05).collect();
    assert!(
        failed.is_empty() && strange.is_empty(),
        "{} of {} requests failed during the selector switch: {failed:?} {strange:?}",
        failed.len(),
        log.len()
    );
    assert!(
        log.iter().any(|r| r.as_deref() == Ok(want0.as_str())),
        "the client loop ({} requests, 20 s) never saw release 0's page",
        log.len()
    );
    let before = log.iter().filter(|r| r.as_deref() == Ok(want05.as_str())).count();
    eprintln!(
        "selector switch: {} requests, {before} answered by release 0-5 then {} by release 0, none failed",
        log.len(),
        log.len() - before
    );
    wait_endpoints(&node, "default", "fleetman-webapp", &[format!("{ip0}:80")]);
    for _ in 0..10 {
        assert_eq!(root_fetch(nodeport), Ok(want0.clone()), "after the switch only release 0 answers");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("webapp-service.yml")).unwrap(),
        original,
        "the seed file is unmodified"
    );

    // patch (strategic, the default): LoadBalancer with an externalIP we own (the node address).
    let patch = format!("{{\"spec\": {{\"type\": \"LoadBalancer\", \"externalIPs\":[\"{node_ip}\"]}}}}");
    let out = node.skerry_ok(&["patch", "svc", "fleetman-webapp", "-p", &patch]);
    assert_eq!(out.trim(), "service/fleetman-webapp patched", "{out}");
    let svc = node.wait_output(&["get", "svc", "fleetman-webapp", "-o", "json"], "has a load balancer ingress", |o| {
        serde_json::from_str::<Value>(&o.stdout).is_ok_and(|v| v.pointer("/status/loadBalancer/ingress/0/ip").is_some())
    });
    let svc: Value = serde_json::from_str(&svc.stdout).unwrap();
    assert_eq!(svc["spec"]["type"], "LoadBalancer", "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080, "the nodePort is kept: {svc}");
    assert_eq!(svc["spec"]["clusterIP"], cip.to_string(), "the clusterIP is kept: {svc}");
    assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ip"], node_ip.to_string(), "{svc}");
    let table = node.skerry_ok(&["get", "svc", "fleetman-webapp"]);
    assert_eq!(column(&table, "fleetman-webapp", "TYPE").as_deref(), Some("LoadBalancer"), "{table}");
    let ext = column(&table, "fleetman-webapp", "EXTERNAL-IP").unwrap_or_default();
    assert!(
        ext.split(',').all(|e| e == node_ip.to_string()) && !ext.is_empty(),
        "EXTERNAL-IP shows {node_ip}: {table}"
    );
    assert_eq!(column(&table, "fleetman-webapp", "PORT(S)").as_deref(), Some("80:30080/TCP"), "{table}");
    wait_body("the LoadBalancer's NodePort", &want0, || root_fetch(nodeport));
    // externalIPs: the service port on the external address.
    wait_body("the externalIP on port 80", &want0, || root_fetch(SocketAddr::from((node_ip, 80))));

    // patch --type json: the selector back to 0-5.
    let out = node.skerry_ok(&[
        "patch",
        "svc",
        "fleetman-webapp",
        "--type",
        "json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/selector/release", "value": "0-5"}]"#,
    ]);
    assert_eq!(out.trim(), "service/fleetman-webapp patched", "{out}");
    wait_endpoints(&node, "default", "fleetman-webapp", &[format!("{ip05}:80")]);
    wait_body("node_ip:30080 after the json patch", &want05, || root_fetch(nodeport));
    // patch --type merge: a label.
    let out = node.skerry_ok(&[
        "patch",
        "svc",
        "fleetman-webapp",
        "--type",
        "merge",
        "-p",
        r#"{"metadata": {"labels": {"patched": "merge"}}}"#,
    ]);
    assert_eq!(out.trim(), "service/fleetman-webapp patched", "{out}");
    let svc = service(&node, "default", "fleetman-webapp");
    assert_eq!(svc["metadata"]["labels"]["patched"], "merge", "{svc}");
    assert_eq!(svc["spec"]["type"], "LoadBalancer", "{svc}");

    // The cluster DNS service, as the seed's notes describe it.
    let d = node.skerry_ok(&["describe", "svc", "kube-dns", "-n", "kube-system"]);
    assert_eq!(describe_field(&d, "Name"), "kube-dns", "{d}");
    assert_eq!(describe_field(&d, "Namespace"), "kube-system", "{d}");
    assert_eq!(describe_field(&d, "IP"), "10.43.0.10", "{d}");
    let ports = describe_fields(&d, "Port");
    assert!(ports.iter().any(|p| p.ends_with("53/UDP")) && ports.iter().any(|p| p.ends_with("53/TCP")), "{d}");
}

#[test]
fn microservices_services_apply_and_node_port_conflicts() {
    let node = TestNode::start();
    let file = skerry_tests::conformance("seed/microservices_deployment/services.yml");
    let out = node.skerry_ok(&["apply", "-f", file.to_str().unwrap()]);
    let names = ["fleetman-webapp", "fleetman-queue", "fleetman-position-tracker", "fleetman-api-gateway"];
    for n in names {
        assert!(out.contains(&format!("service/{n} created")), "apply printed:\n{out}");
    }
    let mut ips = std::collections::BTreeSet::new();
    for n in names {
        let ip = cluster_ip(&node, "default", n);
        assert!(in_service_cidr(ip) && ip != Ipv4Addr::new(10, 43, 0, 10), "{n}: clusterIP {ip}");
        assert!(ips.insert(ip), "{n}: clusterIP {ip} given twice");
    }
    let np = |n: &str, i: usize| service(&node, "default", n)["spec"]["ports"][i]["nodePort"].clone();
    assert_eq!(np("fleetman-webapp", 0), 30080);
    assert_eq!(np("fleetman-queue", 0), 30010);
    let second = np("fleetman-queue", 1).as_u64().unwrap_or(0);
    assert!((30000..=32767).contains(&second) && second != 30010, "fleetman-queue's second port got nodePort {second}");
    assert_eq!(np("fleetman-api-gateway", 0), 30020);
    assert!(np("fleetman-position-tracker", 0).is_null(), "a ClusterIP service has no nodePort");
    let table = node.skerry_ok(&["get", "svc"]);
    assert_eq!(
        column(&table, "fleetman-queue", "PORT(S)"),
        Some(format!("8161:30010/TCP,61616:{second}/TCP")),
        "{table}"
    );
    assert_eq!(column(&table, "fleetman-position-tracker", "TYPE").as_deref(), Some("ClusterIP"), "{table}");
    assert_eq!(column(&table, "fleetman-position-tracker", "PORT(S)").as_deref(), Some("8080/TCP"), "{table}");
    assert_eq!(column(&table, "fleetman-api-gateway", "PORT(S)").as_deref(), Some("8080:30020/TCP"), "{table}");
    let wide = node.skerry_ok(&["get", "svc", "-o", "wide"]);
    assert_eq!(
        column(&wide, "fleetman-queue", "SELECTOR").as_deref(),
        Some("app=queue"),
        "get svc -o wide has kubectl's SELECTOR column:\n{wide}"
    );
    // Applying the same file again changes nothing.
    let again = node.skerry_ok(&["apply", "-f", file.to_str().unwrap()]);
    for n in names {
        assert!(again.contains(&format!("service/{n} unchanged")), "second apply printed:\n{again}");
    }

    // A second service asking for a taken nodePort: 422 naming the owner, nothing created.
    let taken = "apiVersion: v1\nkind: Service\nmetadata:\n  name: taken\nspec:\n  type: NodePort\n  selector:\n    app: x\n  ports:\n  - port: 80\n    nodePort: 30080\n";
    let out = node.skerry_stdin(&["apply", "-f", "-"], taken.as_bytes());
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("Error from server (Invalid)"), "{out}");
    assert!(
        out.stderr.contains("30080") && out.stderr.contains("fleetman-webapp"),
        "the message names the port and its owner:\n{out}"
    );
    let got = node.skerry(&["get", "svc", "taken"]);
    assert_ne!(got.code, 0, "the conflicting service was not created:\n{got}");
    assert!(got.stderr.contains("NotFound"), "{got}");
    assert_eq!(np("fleetman-webapp", 0), 30080, "the owner keeps its port");

    // Explicit clusterIP, headless, ExternalName: how `get svc` shows them.
    let more = "apiVersion: v1\nkind: Service\nmetadata:\n  name: fixed\nspec:\n  clusterIP: 10.43.100.100\n  selector:\n    app: x\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: hl\nspec:\n  clusterIP: None\n  selector:\n    app: x\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: fleetman-webapp.default.svc.cluster.local\n";
    node.apply(more);
    let table = node.skerry_ok(&["get", "svc"]);
    assert_eq!(column(&table, "fixed", "CLUSTER-IP").as_deref(), Some("10.43.100.100"), "{table}");
    assert_eq!(column(&table, "hl", "CLUSTER-IP").as_deref(), Some("None"), "{table}");
    assert_eq!(column(&table, "hl", "TYPE").as_deref(), Some("ClusterIP"), "{table}");
    assert_eq!(column(&table, "ext", "TYPE").as_deref(), Some("ExternalName"), "{table}");
    assert_eq!(column(&table, "ext", "CLUSTER-IP").as_deref(), Some("<none>"), "{table}");
    assert_eq!(
        column(&table, "ext", "EXTERNAL-IP").as_deref(),
        Some("fleetman-webapp.default.svc.cluster.local"),
        "{table}"
    );
    // A taken clusterIP is refused as well.
    let dup = "apiVersion: v1\nkind: Service\nmetadata:\n  name: dup\nspec:\n  clusterIP: 10.43.100.100\n  ports:\n  - port: 80\n";
    let out = node.skerry_stdin(&["apply", "-f", "-"], dup.as_bytes());
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("Error from server (Invalid)") && out.stderr.contains("10.43.100.100"), "{out}");
}

#[test]
fn cluster_ips_from_pods() {
    let node = TestNode::start();
    node.import_busybox();
    node.import_image(&udp_image(Path::new(env!("CARGO_BIN_EXE_skerry-udp-echo"))));
    node.apply(&web_pod("web-a", "web"));
    node.apply(&web_pod("web-b", "web"));
    node.apply(&busybox_pod("client", "Always", &["sleep", "3600"]).replace(BUSYBOX, UDP_IMAGE));
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: udp-a\n  labels:\n    app: udp\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: echo\n    image: {UDP_IMAGE}\n    imagePullPolicy: Never\n    command: [\"/udp-echo\", \"serve\", \"5353\"]\n    ports:\n    - name: echo\n      containerPort: 5353\n      protocol: UDP\n"
    ));
    let services = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 8080\n    targetPort: http\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: only-a\nspec:\n  selector:\n    name: web-a\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: empty\nspec:\n  selector:\n    app: nobody\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: sticky\nspec:\n  sessionAffinity: ClientIP\n  selector:\n    app: web\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: udp\nspec:\n  selector:\n    app: udp\n  ports:\n  - name: echo\n    port: 53\n    protocol: UDP\n    targetPort: 5353\n";
    node.apply(services);
    for p in ["web-a", "web-b", "client", "udp-a"] {
        node.wait_running(p);
    }
    let (a, b) = (node.pod_ip("web-a"), node.pod_ip("web-b"));
    wait_endpoints(&node, "default", "web", &[format!("{a}:80"), format!("{b}:80")]);
    wait_endpoints(&node, "default", "sticky", &[format!("{a}:80"), format!("{b}:80")]);
    wait_endpoints(&node, "default", "only-a", &[format!("{a}:80")]);
    wait_endpoints(&node, "default", "udp", &[format!("{}:5353", node.pod_ip("udp-a"))]);
    let vip = |n: &str| cluster_ip(&node, "default", n);

    // A ClusterIP from a pod reaches a backend (named targetPort http → 80); both backends serve.
    let web = vip("web");
    let url = format!("http://{web}:8080/");
    wait_for("client → web VIP", || pod_wget(&node, "client", &url), |b| b == "web-a\n" || b == "web-b\n");
    let many = pod_exec(
        &node,
        "client",
        &["sh", "-c", &format!("for i in $(seq 30); do wget -qO- {url} || echo FAILED; done")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seen: std::collections::BTreeSet<&str> = many.lines().collect();
    assert_eq!(
        seen,
        ["web-a", "web-b"].into_iter().collect(),
        "30 requests through the VIP reach both backends, none fail:\n{many}"
    );

    // Refusals: a VIP without endpoints, and an address of the service range nobody holds.
    let empty = vip("empty");
    let e =
        pod_wget(&node, "client", &format!("http://{empty}/")).expect_err("a VIP without endpoints must not answer");
    assert!(e.contains("Connection refused"), "a VIP without endpoints is refused at once (TCP RST):\n{e}");
    let unallocated = Ipv4Addr::new(10, 43, 255, 254);
    let in_use = node.skerry_ok(&["get", "svc", "-A", "-o", "json"]);
    assert!(!in_use.contains(&format!("\"{unallocated}\"")), "{unallocated} is unallocated");
    let e = pod_wget(&node, "client", &format!("http://{unallocated}/"))
        .expect_err("an unallocated service address must not answer");
    assert!(e.contains("Connection refused"), "an unallocated service address is refused:\n{e}");

    // Hairpin: web-a through a VIP whose only backend is web-a.
    let only_a = vip("only-a");
    wait_body("web-a → itself through only-a's VIP", "web-a\n", || {
        pod_wget(&node, "web-a", &format!("http://{only_a}/"))
    });

    // Session affinity ClientIP: every request from the client lands on the same backend.
    let sticky = format!("http://{}/", vip("sticky"));
    wait_for("client → sticky VIP", || pod_wget(&node, "client", &sticky), |b| b == "web-a\n" || b == "web-b\n");
    let many = pod_exec(
        &node,
        "client",
        &["sh", "-c", &format!("for i in $(seq 20); do wget -qO- {sticky} || echo FAILED; done")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seen: std::collections::BTreeSet<&str> = many.lines().collect();
    assert_eq!(seen.len(), 1, "ClientIP affinity keeps one backend:\n{many}");
    assert!(!seen.contains("FAILED"), "{many}");

    // UDP through a ClusterIP (port 53 → targetPort 5353).
    let udp = vip("udp").to_string();
    wait_body("client → udp VIP", "udp-a:ping\n", || {
        pod_exec(&node, "client", &["/udp-echo", "send", &udp, "53", "ping"])
    });

    // expose pod: a service selecting the pod's labels, answering.
    let out = node.skerry_ok(&["expose", "pod", "web-a", "--port", "80", "--name", "x"]);
    assert_eq!(out.trim(), "service/x exposed", "{out}");
    let x = service(&node, "default", "x");
    assert_eq!(x["spec"]["selector"]["name"], "web-a", "{x}");
    let xurl = format!("http://{}/", vip("x"));
    wait_body("client → the exposed service", "web-a\n", || pod_wget(&node, "client", &xurl));

    // A deleted service's VIP is refused again (its rules went with it).
    node.skerry_ok(&["delete", "svc", "x"]);
    wait_for(
        "the deleted service's VIP refused",
        || Ok(pod_wget(&node, "client", &xurl).err().unwrap_or_default()),
        |e| e.contains("Connection refused"),
    );
}
