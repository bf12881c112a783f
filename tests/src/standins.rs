//! Stand-in images under the exact names the conformance manifests use.
//!
//! The real images cannot be downloaded here, so each stand-in is the busybox
//! test image running `httpd -f -p PORT -h /www` on every port the manifests
//! declare for it (80 when none), serving an `index.html` that names the image
//! and its tag: `…/k8s-fleetman-webapp-angular:release0-5` answers with a page
//! containing `release0-5`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::images::ImageBuilder;
use crate::skerryd::TestNode;

/// Every container image named in the manifests in `path` (a file or a folder, recursively).
pub fn images_in(path: &Path) -> BTreeSet<String> {
    ports_in(path).into_keys().collect()
}

/// Every image named in the manifests in `path`, with the container ports declared for it.
/// Files that are not valid YAML/JSON are skipped from their first bad document on.
pub fn ports_in(path: &Path) -> BTreeMap<String, BTreeSet<u16>> {
    let mut found = BTreeMap::new();
    for file in manifest_files(path) {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(v) = Value::deserialize(doc) else { break };
            walk(&v, &mut found);
        }
    }
    found
}

fn manifest_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(path) else { return files };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files.extend(manifest_files(&p));
        } else if p.extension().is_some_and(|e| e == "yml" || e == "yaml" || e == "json") {
            files.push(p);
        }
    }
    files
}

/// Finds `containers`/`initContainers` lists anywhere (pods, pod templates, job templates, lists).
fn walk(v: &Value, found: &mut BTreeMap<String, BTreeSet<u16>>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let is_containers = matches!(k.as_str(), Some("containers" | "initContainers"));
                if let (true, Value::Sequence(list)) = (is_containers, child) {
                    for c in list {
                        let Some(image) = c.get("image").and_then(Value::as_str) else { continue };
                        let ports = found.entry(image.to_string()).or_default();
                        for p in c.get("ports").and_then(Value::as_sequence).into_iter().flatten() {
                            if let Some(n) = p.get("containerPort").and_then(Value::as_u64) {
                                ports.insert(n as u16);
                            }
                        }
                    }
                }
                walk(child, found);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|c| walk(c, found)),
        Value::Tagged(t) => walk(&t.value, found),
        _ => {}
    }
}

/// The page a stand-in serves.
pub fn page(name: &str) -> String {
    format!("<html><body><h1>Skerry stand-in for {name}</h1></body></html>\n")
}

/// A stand-in for `name` serving [`page`] on `ports` (80 when empty).
pub fn build_standin(name: &str, ports: &BTreeSet<u16>) -> ImageBuilder {
    let ports: Vec<u16> = if ports.is_empty() { vec![80] } else { ports.iter().copied().collect() };
    let mut b = ImageBuilder::new(name).file("/www/index.html", page(name).as_bytes());
    for p in &ports {
        b = b.expose(&format!("{p}/tcp"));
    }
    if let [port] = ports.as_slice() {
        b.cmd(["httpd", "-f", "-p", &port.to_string(), "-h", "/www"])
    } else {
        // One background httpd per extra port; the last one is the main process.
        let (last, rest) = ports.split_last().unwrap();
        let mut script = String::from("#!/bin/sh\n");
        for p in rest {
            script.push_str(&format!("httpd -p {p} -h /www\n"));
        }
        script.push_str(&format!("exec httpd -f -p {last} -h /www\n"));
        b.file_mode("/standin.sh", script.as_bytes(), 0o755).cmd(["sh", "/standin.sh"])
    }
}

/// Builds and imports (with `skerry image import`) a stand-in for every image
/// in the manifests at `path`; returns the image names.
pub fn import_standins(node: &TestNode, path: &Path) -> BTreeSet<String> {
    let images = ports_in(path);
    assert!(!images.is_empty(), "no container images found in {}", path.display());
    for (name, ports) in &images {
        let out = node.import_image(&build_standin(name, ports));
        assert!(out.contains("imported"), "importing the stand-in for {name} printed:\n{out}");
    }
    images.into_keys().collect()
}

/// The seed's `simple-kub-deploy/pods.yml`, applied unmodified.
pub fn seed_pods() -> PathBuf {
    crate::conformance("seed/simple-kub-deploy/pods.yml")
}

/// The three seed pods (webapp, webapp-release0-5, queue).
pub const SEED_PODS: [&str; 3] = ["webapp", "webapp-release0-5", "queue"];

/// Imports the seed pods' stand-ins, applies `pods.yml` and waits until every pod runs.
pub fn run_seed_pods(node: &TestNode) {
    let file = seed_pods();
    import_standins(node, &file);
    let out = node.skerry_ok(&["apply", "-f", file.to_str().unwrap()]);
    for p in SEED_PODS {
        assert!(out.contains(&format!("pod/{p} created")), "apply printed:\n{out}");
    }
    for p in SEED_PODS {
        node.wait_running(p);
    }
}
