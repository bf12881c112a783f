//! PersistentVolumes and claims end to end: the seed's storage.yml binds, `local-path` provisions and reclaims, an unknown class waits.

use serde_json::Value;
use skerry_tests::skerryd::{column, deadline, TestNode};

const PV_HEADER: &str =
    "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE";
const PVC_HEADER: &str = "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE";

fn header(table: &str) -> String {
    table.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Polls `get KIND` until the row `name` has `want` under `col`; returns the table.
fn wait_cell(node: &TestNode, kind: &str, name: &str, col: &str, want: &str) -> String {
    let out = node.wait_output(&["get", kind], &format!("shows {name} {col}={want}"), |o| {
        o.code == 0 && column(&o.stdout, name, col).as_deref() == Some(want)
    });
    out.stdout
}

fn get_json(node: &TestNode, kind: &str, name: &str) -> Value {
    serde_json::from_str(&node.skerry_ok(&["get", kind, name, "-o", "json"])).expect("get -o json is JSON")
}

#[test]
fn claims_bind_provision_and_release() {
    let node = TestNode::start();

    // The built-in default class.
    let sc = node.skerry_ok(&["get", "sc"]);
    assert_eq!(header(&sc), "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE", "{sc}");
    assert!(sc.lines().any(|l| l.starts_with("local-path (default) ")), "{sc}");
    assert_eq!(column(&sc, "local-path", "PROVISIONER").as_deref(), Some("skerry.io/local-path"), "{sc}");
    assert_eq!(column(&sc, "local-path", "RECLAIMPOLICY").as_deref(), Some("Delete"), "{sc}");
    assert_eq!(column(&sc, "local-path", "VOLUMEBINDINGMODE").as_deref(), Some("Immediate"), "{sc}");

    // The seed's storage.yml, unmodified: the claim comes first, the volume second; they bind.
    let storage = skerry_tests::conformance("seed/microservices_deployment/storage.yml");
    let out = node.skerry_ok(&["apply", "-f", storage.to_str().unwrap()]);
    assert!(
        out.contains("persistentvolumeclaim/mongo-pvc created")
            && out.contains("persistentvolume/local-storage created"),
        "{out}"
    );
    let pvc = wait_cell(&node, "pvc", "mongo-pvc", "STATUS", "Bound");
    assert_eq!(header(&pvc), PVC_HEADER, "{pvc}");
    assert_eq!(column(&pvc, "mongo-pvc", "VOLUME").as_deref(), Some("local-storage"), "{pvc}");
    assert_eq!(column(&pvc, "mongo-pvc", "CAPACITY").as_deref(), Some("20Gi"), "{pvc}");
    assert_eq!(column(&pvc, "mongo-pvc", "ACCESS MODES").as_deref(), Some("RWO"), "{pvc}");
    assert_eq!(column(&pvc, "mongo-pvc", "STORAGECLASS").as_deref(), Some("mylocalstorage"), "{pvc}");
    let pv = node.skerry_ok(&["get", "pv"]);
    assert_eq!(header(&pv), PV_HEADER, "{pv}");
    assert_eq!(column(&pv, "local-storage", "STATUS").as_deref(), Some("Bound"), "{pv}");
    assert_eq!(column(&pv, "local-storage", "CLAIM").as_deref(), Some("default/mongo-pvc"), "{pv}");
    assert_eq!(column(&pv, "local-storage", "RECLAIM POLICY").as_deref(), Some("Retain"), "{pv}");

    // A claim without a class and without a volume: local-path provisions one.
    node.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 64Mi\n",
    );
    let pvc = wait_cell(&node, "pvc", "data", "STATUS", "Bound");
    assert_eq!(
        column(&pvc, "data", "STORAGECLASS").as_deref(),
        Some("local-path"),
        "the default class is assigned:\n{pvc}"
    );
    let claim = get_json(&node, "pvc", "data");
    let volume = format!("pvc-{}", claim["metadata"]["uid"].as_str().unwrap());
    assert_eq!(column(&pvc, "data", "VOLUME").as_deref(), Some(volume.as_str()), "{pvc}");
    assert_eq!(claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes", "{claim:#}");
    let pv = node.skerry_ok(&["get", "pv"]);
    assert_eq!(column(&pv, &volume, "STATUS").as_deref(), Some("Bound"), "{pv}");
    assert_eq!(column(&pv, &volume, "CLAIM").as_deref(), Some("default/data"), "{pv}");
    assert_eq!(column(&pv, &volume, "RECLAIM POLICY").as_deref(), Some("Delete"), "{pv}");
    assert_eq!(column(&pv, &volume, "CAPACITY").as_deref(), Some("64Mi"), "{pv}");
    let dir = node.skerryd.data_dir().join("volumes").join(&volume);
    assert!(dir.is_dir(), "{} exists", dir.display());
    assert_eq!(get_json(&node, "pv", &volume)["spec"]["hostPath"]["path"], dir.display().to_string());
    let describe = node.skerry_ok(&["describe", "pvc", "data"]);
    assert!(
        describe.contains("ProvisioningSucceeded")
            && describe.contains(&format!("Successfully provisioned volume {volume}")),
        "{describe}"
    );
    std::fs::write(dir.join("kept-until-the-claim-goes"), "x").unwrap();

    // Deleting the claim deletes the provisioned volume and its directory.
    node.skerry_ok(&["delete", "pvc", "data"]);
    node.wait_output(&["get", "pv", "-o", "name"], "no longer lists the provisioned volume", |o| {
        o.code == 0 && !o.stdout.contains(&volume)
    });
    skerry_tests::wait_until(deadline(), "the volume's directory is removed", || !dir.exists());
    // The seed's volume is untouched by that.
    assert_eq!(column(&node.skerry_ok(&["get", "pv"]), "local-storage", "STATUS").as_deref(), Some("Bound"));

    // A class that does not exist: Pending, and describe says why.
    node.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: waiting\nspec:\n  storageClassName: nothing-here\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n",
    );
    let describe = node.wait_output(&["describe", "pvc", "waiting"], "shows the ProvisioningFailed event", |o| {
        o.code == 0 && o.stdout.contains("ProvisioningFailed")
    });
    assert!(
        describe.stdout.contains("Warning")
            && describe.stdout.contains("storageclass.storage.k8s.io \"nothing-here\" not found"),
        "{describe}"
    );
    assert!(describe.stdout.contains("persistentvolume-controller"), "{describe}");
    let pvc = node.skerry_ok(&["get", "pvc"]);
    assert_eq!(column(&pvc, "waiting", "STATUS").as_deref(), Some("Pending"), "{pvc}");

    // Deleting the seed's claim releases its volume (Retain: kept, with its claimRef).
    node.skerry_ok(&["delete", "pvc", "mongo-pvc"]);
    let pv = wait_cell(&node, "pv", "local-storage", "STATUS", "Released");
    assert_eq!(column(&pv, "local-storage", "CLAIM").as_deref(), Some("default/mongo-pvc"), "{pv}");
}
