//! Helpers for the Service and DNS tests (issue 4): web pods with labels, fetching from inside
//! pods, Service fields, Endpoints, `describe` fields, the UDP echo image.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::images::ImageBuilder;
use crate::skerryd::{deadline, TestNode, BUSYBOX};

/// A pod labelled `app: <app>`, `name: <name>` serving its hostname as `/` with busybox httpd on
/// port 80 (container port named `http`).
pub fn web_pod(name: &str, app: &str) -> String {
    web_pod_in("default", name, app)
}

pub fn web_pod_in(ns: &str, name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n    name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www\"]\n    ports:\n    - name: http\n      containerPort: 80\n"
    )
}

/// `exec POD -- timeout 10 ARGS...`: `Ok(stdout)` on exit 0, `Err(whole output)` otherwise.
pub fn pod_exec(node: &TestNode, pod: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["exec", pod, "--", "timeout", "10"];
    all.extend_from_slice(args);
    let out = node.skerry(&all);
    if out.code == 0 {
        Ok(out.stdout)
    } else {
        Err(format!("{out}"))
    }
}

/// `exec POD -- timeout 10 wget -qO- URL` (Debian's busybox 1.35 `wget -T` segfaults).
pub fn pod_wget(node: &TestNode, pod: &str, url: &str) -> Result<String, String> {
    pod_exec(node, pod, &["wget", "-qO-", url])
}

/// Polls `get` until `ok` accepts its answer (60 s); returns that answer.
pub fn wait_for(
    what: &str,
    mut get: impl FnMut() -> Result<String, String>,
    mut ok: impl FnMut(&str) -> bool,
) -> String {
    let deadline = deadline();
    let mut last;
    loop {
        match get() {
            Ok(body) if ok(&body) => return body,
            Ok(body) => last = format!("answered {body:?}"),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("{what}: no acceptable answer within 60 s; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `get` until it returns exactly `want`.
pub fn wait_body(what: &str, want: &str, get: impl FnMut() -> Result<String, String>) {
    wait_for(what, get, |b| b == want);
}

/// `get svc NAME -n NS -o json`; panics when it fails.
pub fn service(node: &TestNode, ns: &str, name: &str) -> Value {
    let out = node.skerry_ok(&["get", "svc", name, "-n", ns, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("get svc -o json is not JSON ({e}): {out}"))
}

/// `spec.clusterIP` of a Service (an address; panics otherwise).
pub fn cluster_ip(node: &TestNode, ns: &str, name: &str) -> Ipv4Addr {
    let s = service(node, ns, name);
    s.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("service {ns}/{name} has no clusterIP address: {}", s["spec"]))
}

/// The `ip:port` pairs of an Endpoints object's ready addresses (empty when it does not exist).
pub fn endpoint_addrs(node: &TestNode, ns: &str, name: &str) -> BTreeSet<String> {
    let out = node.skerry(&["get", "endpoints", name, "-n", ns, "-o", "json"]);
    if out.code != 0 {
        return BTreeSet::new();
    }
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("get endpoints -o json is not JSON ({e}): {out}"));
    let mut found = BTreeSet::new();
    for s in v["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            for p in s["ports"].as_array().into_iter().flatten() {
                found.insert(format!("{}:{}", a["ip"].as_str().unwrap_or("?"), p["port"]));
            }
        }
    }
    found
}

/// Waits until the Endpoints of `ns/name` list exactly `want` (`ip:port`).
pub fn wait_endpoints(node: &TestNode, ns: &str, name: &str, want: &[String]) {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    let deadline = deadline();
    loop {
        let got = endpoint_addrs(node, ns, name);
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "endpoints {ns}/{name} are {got:?}, not {want:?}, after 60 s; skerryd log tail:\n{}",
                node.skerryd.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The values of every `describe` line starting with `key:` (trimmed), in order.
pub fn describe_fields(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    text.lines().filter_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().to_string()).collect()
}

/// The first value of `key:` in a `describe` output; panics naming the output when absent.
pub fn describe_field(text: &str, key: &str) -> String {
    describe_fields(text, key)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {key:?} line in describe output:\n{text}"))
}

/// The image the UDP tests use: busybox plus `/udp-echo` (the `skerry-udp-echo` binary) and the
/// shared libraries it links, at the paths `ldd` names.
pub const UDP_IMAGE: &str = "skerry-test/udp-echo:1";

pub fn udp_image(echo_binary: &Path) -> ImageBuilder {
    assert!(echo_binary.is_file(), "{} is missing; run `cargo build --workspace`", echo_binary.display());
    let out = Command::new("ldd").arg(echo_binary).output().expect("running ldd (apt-get install -y libc-bin)");
    assert!(out.status.success(), "ldd {} failed: {}", echo_binary.display(), String::from_utf8_lossy(&out.stderr));
    let mut b = ImageBuilder::new(UDP_IMAGE).file_mode("/udp-echo", &std::fs::read(echo_binary).unwrap(), 0o755);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else { continue };
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        b = b.file_mode(path, &data, 0o755);
    }
    b
}
