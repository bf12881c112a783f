//! Cluster DNS from pods (issue 4): the resolv.conf of ClusterFirst pods, A records for
//! Services (short, namespaced and full names), NXDOMAIN for unknown cluster names, headless
//! Services resolving to ready pod IPs, CNAME for ExternalName, SRV for named ports.
//!
//! Every name asked lies under cluster.local (the ExternalName points inside the cluster too),
//! so no query leaves the node; traffic goes only to pods and the DNS address in the node
//! namespace.

use skerry_tests::skerryd::{busybox_pod, TestNode};
use skerry_tests::svc::*;

/// `exec client -- nslookup ARGS`: its stdout whenever the server answered at all. Busybox
/// nslookup walks the whole search path and exits 1 when any of those names is NXDOMAIN, as it
/// does against CoreDNS, so the exit code says little; the answers are in the text.
fn nslookup(node: &TestNode, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["exec", "client", "--", "timeout", "10", "nslookup"];
    all.extend_from_slice(args);
    let out = node.skerry(&all);
    if out.stdout.contains("Server:") {
        Ok(out.stdout)
    } else {
        Err(format!("{out}"))
    }
}

#[test]
fn cluster_dns_from_pods() {
    let node = TestNode::start();
    node.import_busybox();
    // The seed's service file, unmodified (no pods needed for its A and SRV records).
    let seed = skerry_tests::conformance("seed/simple-app/webapp-service.yml");
    node.skerry_ok(&["apply", "-f", seed.to_str().unwrap()]);
    node.skerry_ok(&["create", "namespace", "other-ns"]);
    node.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n  namespace: other-ns\nspec:\n  selector:\n    app: x\n  ports:\n  - port: 80\n");
    node.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: hl\nspec:\n  clusterIP: None\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: fleetman-webapp.default.svc.cluster.local\n");
    node.apply(&web_pod_in("other-ns", "web-o", "x"));
    node.apply(&web_pod("web-a", "web"));
    node.apply(&web_pod("web-b", "web"));
    node.apply(&busybox_pod("client", "Always", &["sleep", "3600"]));
    for p in ["web-a", "web-b", "client"] {
        node.wait_running(p);
    }
    node.wait_running_in("other-ns", "web-o");
    let (a, b) = (node.pod_ip("web-a"), node.pod_ip("web-b"));
    wait_endpoints(&node, "default", "hl", &[format!("{a}:80"), format!("{b}:80")]);
    let webapp = cluster_ip(&node, "default", "fleetman-webapp").to_string();
    let other = cluster_ip(&node, "other-ns", "svc").to_string();

    // resolv.conf of a ClusterFirst pod.
    let conf = node.skerry_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    let lines: Vec<Vec<&str>> = conf.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(lines.contains(&vec!["nameserver", "10.43.0.10"]), "{conf}");
    assert!(
        lines.contains(&vec!["search", "default.svc.cluster.local", "svc.cluster.local", "cluster.local"]),
        "{conf}"
    );
    assert!(lines.contains(&vec!["options", "ndots:5"]), "{conf}");
    assert_eq!(lines.iter().filter(|l| l.first() == Some(&"nameserver")).count(), 1, "only the cluster DNS:\n{conf}");

    let answers = |out: &str, ip: &str| {
        out.lines().any(|l| l.trim() == format!("Address: {ip}") || l.trim().ends_with(&format!("Address: {ip}")))
    };
    // The short name (through the search path), the full name, another namespace's service.
    let out = wait_for("nslookup fleetman-webapp", || nslookup(&node, &["fleetman-webapp"]), |o| answers(o, &webapp));
    assert!(out.contains("10.43.0.10"), "answered by the cluster DNS:\n{out}");
    wait_for(
        "nslookup of the full name",
        || nslookup(&node, &["fleetman-webapp.default.svc.cluster.local"]),
        |o| answers(o, &webapp),
    );
    // `svc.other-ns` through the search path: busybox nslookup applies the search list only to
    // names without a dot, so ask glibc's resolver (ndots:5) inside busybox wget instead.
    wait_body("wget http://svc.other-ns/", "web-o\n", || pod_wget(&node, "client", "http://svc.other-ns/"));
    wait_for(
        "nslookup svc.other-ns.svc.cluster.local",
        || nslookup(&node, &["svc.other-ns.svc.cluster.local"]),
        |o| answers(o, &other),
    );
    // An unknown cluster name: NXDOMAIN.
    let out = node.skerry(&["exec", "client", "--", "timeout", "10", "nslookup", "nope.default.svc.cluster.local"]);
    assert_ne!(out.code, 0, "an unknown cluster name must not resolve:\n{out}");
    assert!(out.stdout.contains("can't find nope.default.svc.cluster.local: NXDOMAIN"), "{out}");
    let found = out.stdout.lines().filter(|l| l.starts_with("Address:") && !l.contains("10.43.0.10")).count();
    assert_eq!(found, 0, "no address for an unknown name:\n{out}");
    // Headless: the ready pods' addresses, no VIP.
    let out = wait_for(
        "nslookup hl",
        || nslookup(&node, &["hl.default.svc.cluster.local"]),
        |o| answers(o, &a.to_string()) && answers(o, &b.to_string()),
    );
    let addrs = out.lines().filter(|l| l.trim_start().starts_with("Address:") && !l.contains("10.43.0.10")).count();
    assert_eq!(addrs, 2, "exactly the two pod IPs:\n{out}");
    // ExternalName: a CNAME (busybox prints the canonical name).
    let out = wait_for(
        "nslookup ext",
        || nslookup(&node, &["ext.default.svc.cluster.local"]),
        |o| o.contains("canonical name = fleetman-webapp.default.svc.cluster.local"),
    );
    // The target lies in the cluster zone, so the answer chases it to the VIP (as CoreDNS does).
    assert!(answers(&out, &webapp), "the CNAME's target resolves to fleetman-webapp's clusterIP {webapp}:\n{out}");
    // SRV for the named port `http` (busybox 1.35 nslookup supports -type=srv).
    let out = wait_for(
        "nslookup -type=srv _http._tcp.fleetman-webapp",
        || nslookup(&node, &["-type=srv", "_http._tcp.fleetman-webapp.default.svc.cluster.local"]),
        |o| o.contains("80 fleetman-webapp.default.svc.cluster.local"),
    );
    assert!(out.contains("service ="), "{out}");
}
