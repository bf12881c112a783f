//! The stand-in image scan over the conformance manifests (no containers needed).

use std::collections::BTreeSet;

use skerry_tests::conformance;
use skerry_tests::standins::{build_standin, images_in, page, ports_in};

#[test]
fn seed_pods_name_three_images() {
    let images = images_in(&conformance("seed/simple-kub-deploy/pods.yml"));
    let want: BTreeSet<String> = [
        "richardchesterwood/k8s-fleetman-queue:release1",
        "richardchesterwood/k8s-fleetman-webapp-angular:release0",
        "richardchesterwood/k8s-fleetman-webapp-angular:release0-5",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(images, want);
    assert!(page("richardchesterwood/k8s-fleetman-webapp-angular:release0-5").contains("release0-5"));
}

#[test]
fn folders_templates_and_ports_are_scanned() {
    // Pod templates across the whole seed, and the ports the fleetman course declares.
    let all = ports_in(&conformance("seed"));
    assert!(all.len() > 3, "{all:?}");
    assert!(all.contains_key("mongo:3.6.5-jessie"), "found in a Deployment's pod template: {all:?}");
    let fleetman = ports_in(&conformance("fleetman"));
    assert!(fleetman.values().any(|p| !p.is_empty()), "fleetman declares containerPorts: {fleetman:?}");
    // Malformed files are skipped, not fatal.
    let _ = images_in(&conformance("seed-head/_invalid"));
    let b = build_standin("example/multi:1", &[8080, 9090].into_iter().collect()).build().unwrap();
    assert!(!b.layer.is_empty());
}
