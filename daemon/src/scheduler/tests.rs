//! Placement tests: each filter and its message, the score order, determinism, spreading, the
//! `0/N nodes are available` message, and a property test against a naive checker.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// A Ready node with 4 CPUs, 8 GiB, 100 GiB of ephemeral storage and 110 pods.
fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn with(mut v: Value, pointer: &str, value: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer");
    let mut target = &mut v;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        target = match part.parse::<usize>() {
            Ok(i) if target.is_array() => &mut target[i],
            _ => {
                if target.get(part).is_none() {
                    target[part] = json!({});
                }
                &mut target[part]
            }
        };
    }
    target[last] = value;
    v
}

/// An unbound pod requesting 100m and 128Mi.
fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
}

fn requesting(p: Value, requests: Value) -> Value {
    with(p, "/spec/containers/0/resources/requests", requests)
}

fn owned_by(p: Value, owner: &str) -> Value {
    with(
        p,
        "/metadata/ownerReferences",
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": owner, "controller": true}]),
    )
}

fn bound(p: Value, node: &str) -> Value {
    with(p, "/spec/nodeName", json!(node))
}

fn cluster(nodes: &[Value], pods: &[Value]) -> Cluster {
    Cluster::new(nodes, pods, Volumes::default())
}

fn one_node_message(reason: &str) -> String {
    format!("0/1 nodes are available: 1 {reason}.")
}

/// Places `pod` on a one-node cluster (`node`, with `on_node` bound there).
fn place_alone(node: Value, on_node: &[Value], pod: Value) -> Result<String, String> {
    let name = node["metadata"]["name"].as_str().unwrap().to_string();
    let on: Vec<Value> = on_node.iter().map(|p| bound(p.clone(), &name)).collect();
    cluster(&[node], &on).place(&pod).map_err(|e| e.to_string())
}

#[test]
fn node_filters_and_messages() {
    let taint = |key: &str, effect: &str| json!([{"key": key, "value": "x", "effect": effect}]);
    let tolerate = |t: Value| with(pod("p"), "/spec/tolerations", t);
    let ready = |status: &str| with(node("n1"), "/status/conditions", json!([{"type": "Ready", "status": status}]));
    let cases: Vec<(&str, Value, Value, Option<&str>)> = vec![
        ("fits", node("n1"), pod("p"), None),
        (
            "cordoned",
            with(node("n1"), "/spec/unschedulable", json!(true)),
            pod("p"),
            Some("node(s) were unschedulable"),
        ),
        (
            "cordon tolerated",
            with(node("n1"), "/spec/unschedulable", json!(true)),
            tolerate(
                json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]),
            ),
            None,
        ),
        ("not ready", ready("False"), pod("p"), Some("node(s) had untolerated taint(s)")),
        ("unreachable", ready("Unknown"), pod("p"), Some("node(s) had untolerated taint(s)")),
        (
            "no Ready condition",
            with(node("n1"), "/status/conditions", json!([])),
            pod("p"),
            Some("node(s) had untolerated taint(s)"),
        ),
        (
            "not ready tolerated",
            ready("False"),
            tolerate(json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}])),
            None,
        ),
        (
            "not-ready taint without the condition",
            with(node("n1"), "/spec/taints", json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])),
            pod("p"),
            Some("node(s) had untolerated taint(s)"),
        ),
        (
            "NoSchedule",
            with(node("n1"), "/spec/taints", taint("dedicated", "NoSchedule")),
            pod("p"),
            Some("node(s) had untolerated taint(s)"),
        ),
        (
            "NoExecute",
            with(node("n1"), "/spec/taints", taint("dedicated", "NoExecute")),
            pod("p"),
            Some("node(s) had untolerated taint(s)"),
        ),
        (
            "PreferNoSchedule only scores",
            with(node("n1"), "/spec/taints", taint("dedicated", "PreferNoSchedule")),
            pod("p"),
            None,
        ),
        (
            "Equal toleration",
            with(node("n1"), "/spec/taints", taint("dedicated", "NoSchedule")),
            tolerate(json!([{"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}])),
            None,
        ),
        (
            "wrong value",
            with(node("n1"), "/spec/taints", taint("dedicated", "NoSchedule")),
            tolerate(json!([{"key": "dedicated", "value": "y"}])),
            Some("node(s) had untolerated taint(s)"),
        ),
        (
            "tolerate everything",
            with(node("n1"), "/spec/taints", taint("dedicated", "NoExecute")),
            tolerate(json!([{"operator": "Exists"}])),
            None,
        ),
        (
            "nodeSelector",
            node("n1"),
            with(pod("p"), "/spec/nodeSelector", json!({"site": "shop-12"})),
            Some("node(s) didn't match Pod's node affinity/selector"),
        ),
        (
            "nodeSelector matches",
            with(node("n1"), "/metadata/labels/site", json!("shop-12")),
            with(pod("p"), "/spec/nodeSelector", json!({"site": "shop-12"})),
            None,
        ),
        (
            "required affinity",
            node("n1"),
            with(
                pod("p"),
                "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                json!({"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "site", "operator": "Exists"}]},
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n1"]}]}]}),
            ),
            Some("node(s) didn't match Pod's node affinity/selector"),
        ),
        (
            "required affinity, second term",
            node("n1"),
            with(
                pod("p"),
                "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                json!({"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "site", "operator": "Exists"}]},
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}, {"key": "gpu", "operator": "DoesNotExist"}]}]}),
            ),
            None,
        ),
        ("cpu", node("n1"), requesting(pod("p"), json!({"cpu": "4100m"})), Some("Insufficient cpu")),
        ("memory", node("n1"), requesting(pod("p"), json!({"memory": "9Gi"})), Some("Insufficient memory")),
        (
            "ephemeral-storage",
            node("n1"),
            requesting(pod("p"), json!({"ephemeral-storage": "101Gi"})),
            Some("Insufficient ephemeral-storage"),
        ),
        (
            "extended resource",
            node("n1"),
            requesting(pod("p"), json!({"nvidia.com/gpu": "1"})),
            Some("Insufficient nvidia.com/gpu"),
        ),
        (
            "extended resource present",
            {
                let mut n = node("n1");
                n["status"]["allocatable"]["nvidia.com/gpu"] = json!("2");
                n
            },
            requesting(pod("p"), json!({"nvidia.com/gpu": "2"})),
            None,
        ),
        ("pods", with(node("n1"), "/status/allocatable/pods", json!("0")), pod("p"), Some("Too many pods")),
        (
            "an init container asks for the most",
            node("n1"),
            with(
                pod("p"),
                "/spec/initContainers",
                json!([{"name": "i", "image": "busybox", "resources": {"requests": {"cpu": "5"}}}]),
            ),
            Some("Insufficient cpu"),
        ),
    ];
    for (name, n, p, want) in cases {
        let got = place_alone(n, &[], p);
        match want {
            None => assert_eq!(got, Ok("n1".to_string()), "{name}"),
            Some(reason) => assert_eq!(got, Err(one_node_message(reason)), "{name}"),
        }
    }
}

#[test]
fn resources_count_what_is_there_and_every_reason() {
    let big = requesting(pod("big"), json!({"cpu": "3", "memory": "6Gi"}));
    // The pods already on the node count; a node gives every resource it lacks.
    assert_eq!(
        place_alone(node("n1"), std::slice::from_ref(&big), big.clone()),
        Err("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.".to_string())
    );
    let full = with(node("n1"), "/status/allocatable/pods", json!("1"));
    assert_eq!(
        place_alone(full, std::slice::from_ref(&big), big.clone()),
        Err("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods.".to_string())
    );
    // Finished pods do not count; a pod without requests only needs a pod slot.
    let done = with(big.clone(), "/status/phase", json!("Succeeded"));
    assert!(place_alone(node("n1"), &[done], big.clone()).is_ok());
    let empty = json!({"metadata": {"name": "e", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let nearly_full = requesting(pod("f"), json!({"cpu": "4", "memory": "8Gi"}));
    assert!(place_alone(node("n1"), &[nearly_full], empty).is_ok());
    // Capacity stands in for a missing allocatable.
    let capacity_only = json!({"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "1", "memory": "1Gi", "pods": "10"},
        "conditions": [{"type": "Ready", "status": "True"}]}});
    assert!(place_alone(capacity_only, &[], pod("p")).is_ok());
}

#[test]
fn host_ports() {
    let port = |p: Value, host_port: u16, ip: Option<&str>, proto: &str| {
        with(
            p,
            "/spec/containers/0/ports",
            json!([{"containerPort": 80, "hostPort": host_port, "hostIP": ip, "protocol": proto}]),
        )
    };
    let taken = Err(one_node_message("node(s) didn't have free ports for the requested pod ports"));
    let a = port(pod("a"), 8080, None, "TCP");
    for (wanted, fits) in [
        (port(pod("p"), 8080, None, "TCP"), false),
        (port(pod("p"), 8080, Some("10.0.0.1"), "TCP"), false),
        (port(pod("p"), 8080, None, "UDP"), true),
        (port(pod("p"), 8081, None, "TCP"), true),
    ] {
        let got = place_alone(node("n1"), std::slice::from_ref(&a), wanted);
        assert_eq!(got.is_ok(), fits, "{got:?}");
        if !fits {
            assert_eq!(got, taken);
        }
    }
    let b = port(pod("b"), 9090, Some("10.0.0.1"), "TCP");
    assert!(place_alone(node("n1"), std::slice::from_ref(&b), port(pod("p"), 9090, Some("10.0.0.2"), "TCP")).is_ok());
    assert_eq!(place_alone(node("n1"), std::slice::from_ref(&b), port(pod("p"), 9090, Some("0.0.0.0"), "TCP")), taken);
}

#[test]
fn only_the_first_rejecting_filter_speaks() {
    // Cordoned, tainted and too small: kube-scheduler stops at NodeUnschedulable.
    let n = with(
        with(node("n1"), "/spec/unschedulable", json!(true)),
        "/spec/taints",
        json!([{"key": "a", "effect": "NoSchedule"}]),
    );
    assert_eq!(
        place_alone(n, &[], requesting(pod("p"), json!({"cpu": "64"}))),
        Err(one_node_message("node(s) were unschedulable"))
    );
    let n = with(node("n1"), "/spec/taints", json!([{"key": "a", "effect": "NoSchedule"}]));
    let p = with(requesting(pod("p"), json!({"cpu": "64"})), "/spec/nodeSelector", json!({"x": "y"}));
    assert_eq!(place_alone(n, &[], p), Err(one_node_message("node(s) had untolerated taint(s)")));
}

#[test]
fn node_names_in_match_fields() {
    let nodes = [node("a"), node("b"), node("c")];
    let field = |op: &str, values: Value| {
        with(
            pod("ds"),
            "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
            json!({"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": op, "values": values}]}]}),
        )
    };
    assert_eq!(cluster(&nodes, &[]).place(&field("In", json!(["b"]))), Ok("b".to_string()));
    assert_eq!(cluster(&nodes, &[]).place(&field("NotIn", json!(["a"]))), Ok("b".to_string()));
    // The named node is full: the others are outside NodeAffinity's PreFilter result.
    let mut c = cluster(&[node("a"), with(node("b"), "/status/allocatable/pods", json!("0")), node("c")], &[]);
    assert_eq!(
        c.place(&field("In", json!(["b"]))).unwrap_err().to_string(),
        "0/3 nodes are available: 1 Too many pods, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    );
    assert_eq!(
        c.place(&field("In", json!(["z"]))).unwrap_err().to_string(),
        "0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    );
    let conflict = with(
        pod("ds"),
        "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        json!({"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}, {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}),
    );
    assert_eq!(c.place(&conflict).unwrap_err().to_string(), "0/3 nodes are available: pod affinity terms conflict.");
}

fn claim(name: &str, volume: Option<&str>, class: &str) -> Value {
    let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    if let Some(v) = volume {
        c["spec"]["volumeName"] = json!(v);
        c["metadata"]["annotations"] = json!({"pv.kubernetes.io/bind-completed": "yes"});
        c["status"] = json!({"phase": "Bound"});
    }
    c
}

fn local_volume(name: &str, on: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "local": {"path": "/srv"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [on]}]}]}}}})
}

fn using(p: Value, claims: &[&str]) -> Value {
    let volumes: Vec<Value> =
        claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect();
    with(p, "/spec/volumes", json!(volumes))
}

#[test]
fn volume_node_affinity() {
    let nodes = [node("a"), node("b"), node("c")];
    let classes = [
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"}, "volumeBindingMode": "WaitForFirstConsumer"}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "now"}}),
    ];
    let claims = [
        claim("data", Some("pv-b"), "local"),
        claim("gone", Some("pv-gone"), "local"),
        claim("waiting", None, "local"),
        claim("pending", None, "now"),
        with(claim("leaving", Some("pv-b"), "local"), "/metadata/deletionTimestamp", json!("2025-01-01T00:00:00Z")),
        claim("anywhere", Some("pv-any"), "now"),
    ];
    let volumes =
        [local_volume("pv-b", "b"), json!({"metadata": {"name": "pv-any"}, "spec": {"hostPath": {"path": "/x"}}})];
    let place = |nodes: &[Value], p: Value| {
        Cluster::new(nodes, &[], Volumes::new(&claims, &volumes, &classes)).place(&p).map_err(|e| e.to_string())
    };
    assert_eq!(place(&nodes, using(pod("p"), &["data"])), Ok("b".to_string()));
    assert_eq!(place(&nodes, using(pod("p"), &["anywhere", "waiting"])), Ok("a".to_string()));
    let conflict = "0/2 nodes are available: 2 node(s) had volume node affinity conflict.";
    assert_eq!(place(&[node("a"), node("c")], using(pod("p"), &["data"])), Err(conflict.to_string()));
    assert_eq!(
        place(&nodes, using(pod("p"), &["gone"])),
        Err("0/3 nodes are available: 3 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)."
            .to_string())
    );
    assert_eq!(
        place(&nodes, using(pod("p"), &["data", "pending"])),
        Err("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.".to_string())
    );
    assert_eq!(
        place(&nodes, using(pod("p"), &["nope"])),
        Err("0/3 nodes are available: persistentvolumeclaim \"nope\" not found.".to_string())
    );
    assert_eq!(
        place(&nodes, using(pod("p"), &["leaving"])),
        Err("0/3 nodes are available: persistentvolumeclaim \"leaving\" is being deleted.".to_string())
    );
    // Another namespace's claim of the same name is not the pod's.
    let elsewhere = with(using(pod("p"), &["data"]), "/metadata/namespace", json!("other"));
    assert!(place(&nodes, elsewhere).unwrap_err().contains("not found"));
}

#[test]
fn no_nodes_and_bound_pods() {
    assert_eq!(cluster(&[], &[]).place(&pod("p")).unwrap_err().to_string(), "no nodes available to schedule pods");
    // A bound pod is not placed: its node comes back and nothing is recorded.
    let mut c = cluster(&[node("a")], &[]);
    assert_eq!(c.place(&bound(pod("p"), "elsewhere")), Ok("elsewhere".to_string()));
    // Pods bound to unknown nodes are ignored by the snapshot.
    let huge = requesting(pod("h"), json!({"cpu": "4"}));
    let mut c = cluster(&[node("a")], &[bound(huge.clone(), "zzz")]);
    assert_eq!(c.place(&huge), Ok("a".to_string()));
}

#[test]
fn a_pass_sees_its_own_placements() {
    let mut c = cluster(&[node("a")], &[]);
    let big = |n: &str| requesting(pod(n), json!({"cpu": "3"}));
    assert_eq!(c.place(&big("one")), Ok("a".to_string()));
    assert_eq!(c.place(&big("two")).unwrap_err().to_string(), one_node_message("Insufficient cpu"));
    let port = |n: &str| with(pod(n), "/spec/containers/0/ports", json!([{"containerPort": 80, "hostPort": 80}]));
    assert_eq!(c.place(&port("web-1")), Ok("a".to_string()));
    assert_eq!(
        c.place(&port("web-2")).unwrap_err().to_string(),
        one_node_message("node(s) didn't have free ports for the requested pod ports")
    );
}

#[test]
fn least_allocated_then_name() {
    // Equal nodes: the first name. A busier node loses.
    let c = cluster(
        &[node("b"), node("a"), node("c")],
        &[bound(requesting(pod("x"), json!({"cpu": "2", "memory": "4Gi"})), "a")],
    );
    let ranked = c.rank(&pod("p")).unwrap();
    let names: Vec<&str> = ranked.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "c", "a"]);
    assert_eq!(ranked[0].1, ranked[1].1);
    assert!(ranked[1].1 > ranked[2].1);
    // A bigger node is emptier for the same pods.
    let big =
        with(with(node("z"), "/status/allocatable/cpu", json!("16")), "/status/allocatable/memory", json!("32Gi"));
    assert_eq!(cluster(&[node("a"), big], &[]).place(&pod("p")), Ok("z".to_string()));
    // Containers without requests count as 100m and 200Mi when scoring.
    let unrequested = json!({"metadata": {"name": "u", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let c = cluster(&[node("a"), node("b")], &[bound(unrequested, "a")]);
    assert_eq!(c.rank(&pod("p")).unwrap()[0].0, "b");
}

#[test]
fn preferred_affinity_and_prefer_no_schedule() {
    let preferring = |weight: i64, zone: &str| {
        with(
            pod("p"),
            "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
            json!([
            {"weight": weight, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": [zone]}]}}]),
        )
    };
    let zoned = |name: &str, zone: &str| with(node(name), "/metadata/labels/zone", json!(zone));
    // The preferred zone wins over an emptier node elsewhere.
    let busy = bound(requesting(pod("x"), json!({"cpu": "2", "memory": "4Gi"})), "b");
    let c = cluster(&[zoned("a", "east"), zoned("b", "west")], &[busy]);
    assert_eq!(c.rank(&preferring(10, "west")).unwrap()[0].0, "b");
    assert_eq!(c.rank(&preferring(10, "east")).unwrap()[0].0, "a");
    // Weights add up: two terms on one node beat one heavier-looking term elsewhere.
    let two_terms = with(
        pod("p"),
        "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        json!([
        {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["east"]}]}},
        {"weight": 20, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}},
        {"weight": 25, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["west"]}]}}]),
    );
    assert_eq!(cluster(&[zoned("a", "east"), zoned("b", "west")], &[]).place(&two_terms), Ok("b".to_string()));
    // A PreferNoSchedule taint pushes pods elsewhere unless tolerated.
    let spot = with(node("a"), "/spec/taints", json!([{"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}]));
    let c = cluster(&[spot.clone(), node("b")], &[]);
    assert_eq!(c.rank(&pod("p")).unwrap()[0].0, "b");
    let tolerant = with(
        pod("p"),
        "/spec/tolerations",
        json!([{"key": "spot", "operator": "Exists", "effect": "PreferNoSchedule"}]),
    );
    assert_eq!(c.rank(&tolerant).unwrap()[0].0, "a");
    // A NoSchedule toleration does not count for PreferNoSchedule taints.
    let wrong_effect =
        with(pod("p"), "/spec/tolerations", json!([{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]));
    assert_eq!(c.rank(&wrong_effect).unwrap()[0].0, "b");
    // Preference beats the taint's score only if heavy enough: affinity 2×100 < taints 3×100.
    let both = cluster(&[with(spot, "/metadata/labels/zone", json!("east")), zoned("b", "west")], &[]);
    assert_eq!(both.rank(&preferring(100, "east")).unwrap()[0].0, "b");
}

#[test]
fn six_replicas_spread_two_two_two() {
    let nodes = [node("n1"), node("n2"), node("n3")];
    let mut c = cluster(&nodes, &[]);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..6 {
        let placed = c.place(&owned_by(pod(&format!("web-{i}")), "rs-web")).unwrap();
        *counts.entry(placed).or_insert(0) += 1;
    }
    assert_eq!(counts.into_values().collect::<Vec<_>>(), [2, 2, 2]);
    // Spreading beats packing: with another owner's pods on n1, web replicas still use it
    // once the others hold more of them.
    let others: Vec<Value> = (0..3).map(|i| bound(owned_by(pod(&format!("db-{i}")), "rs-db"), "n1")).collect();
    let mut c = cluster(&nodes, &others);
    let placed: Vec<String> = (0..3).map(|i| c.place(&owned_by(pod(&format!("web-{i}")), "rs-web")).unwrap()).collect();
    assert_eq!(placed, ["n2", "n3", "n1"]);
}

#[test]
fn node_selector_picks_the_only_matching_node() {
    let nodes: Vec<Value> = (1..=5)
        .map(|i| {
            with(
                node(&format!("edge-{i}")),
                "/metadata/labels/site",
                json!(if i == 4 { "shop-12".to_string() } else { format!("shop-{i}") }),
            )
        })
        .collect();
    let mut c = cluster(&nodes, &[]);
    let p = with(pod("till"), "/spec/nodeSelector", json!({"site": "shop-12"}));
    assert_eq!(c.place(&p), Ok("edge-4".to_string()));
    assert_eq!(
        c.place(&with(pod("till-2"), "/spec/nodeSelector", json!({"site": "shop-12"}))),
        Ok("edge-4".to_string())
    );
}

#[test]
fn zero_of_five_message() {
    let small = |n: &str| {
        with(with(node(n), "/metadata/labels/site", json!("shop-12")), "/status/allocatable/memory", json!("1Gi"))
    };
    let nodes = [node("a"), node("b"), node("c"), small("d"), small("e")];
    let p = with(requesting(pod("p"), json!({"memory": "2Gi"})), "/spec/nodeSelector", json!({"site": "shop-12"}));
    assert_eq!(
        cluster(&nodes, &[]).place(&p).unwrap_err().to_string(),
        "0/5 nodes are available: 2 Insufficient memory, 3 node(s) didn't match Pod's node affinity/selector."
    );
    // Mixed: a cordon, a taint, a node short of both cpu and memory (two reasons), and two
    // nodes without the label.
    let nodes = [
        with(small("a"), "/spec/unschedulable", json!(true)),
        with(small("b"), "/spec/taints", json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])),
        with(small("c"), "/status/allocatable/cpu", json!("1")),
        node("d"),
        node("e"),
    ];
    let p = with(
        requesting(pod("p"), json!({"cpu": "2", "memory": "2Gi"})),
        "/spec/nodeSelector",
        json!({"site": "shop-12"}),
    );
    let e = cluster(&nodes, &[]).place(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "0/5 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint(s), \
         1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."
    );
    assert_eq!(e.reasons.values().sum::<usize>(), 6);
}

#[test]
fn deterministic() {
    let nodes: Vec<Value> =
        (0..7).map(|i| with(node(&format!("n{i}")), "/metadata/labels/zone", json!(["a", "b"][i % 2]))).collect();
    let pods: Vec<Value> = (0..40)
        .map(|i| {
            let p = requesting(
                owned_by(pod(&format!("p{i}")), &format!("rs{}", i % 3)),
                json!({"cpu": format!("{}m", 50 + 37 * (i % 5)), "memory": "100Mi"}),
            );
            if i % 4 == 0 {
                with(p, "/spec/nodeSelector", json!({"zone": "b"}))
            } else {
                p
            }
        })
        .collect();
    let run = |nodes: &[Value]| {
        let mut c = cluster(nodes, &[]);
        pods.iter().map(|p| c.place(p)).collect::<Vec<_>>()
    };
    let first = run(&nodes);
    assert_eq!(first, run(&nodes));
    // The order nodes are listed in does not matter.
    let mut reversed = nodes.clone();
    reversed.reverse();
    assert_eq!(first, run(&reversed));
}

// ---------------------------------------------------------------------------------------------
// Property: a placement never violates a filter, and a rejection means no node fits — checked
// by a naive re-implementation straight from the JSON.

fn millis(q: &Value) -> i64 {
    q.as_str().and_then(|s| s.strip_suffix('m')).map_or(0, |n| n.parse().unwrap())
}

fn mebibytes(q: &Value) -> i64 {
    q.as_str().and_then(|s| s.strip_suffix("Mi")).map_or(0, |n| n.parse().unwrap())
}

fn naive_tolerates(pod: &Value, key: &str, value: &str, effect: &str) -> bool {
    pod["spec"]["tolerations"].as_array().into_iter().flatten().any(|t| {
        let effect_ok = t.get("effect").is_none_or(|e| e == effect);
        let key_ok = t.get("key").is_none_or(|k| k == key);
        let value_ok = t["operator"] == "Exists" || t["value"].as_str().unwrap_or("") == value;
        effect_ok && key_ok && value_ok
    })
}

fn naive_fits(pod: &Value, node: &Value, on_node: &[&Value]) -> bool {
    let labels = &node["metadata"]["labels"];
    if node["spec"]["unschedulable"] == true
        && !naive_tolerates(pod, "node.kubernetes.io/unschedulable", "", "NoSchedule")
    {
        return false;
    }
    let ready = node["status"]["conditions"][0]["status"].as_str().unwrap();
    let readiness_taint = match ready {
        "True" => None,
        "False" => Some("node.kubernetes.io/not-ready"),
        _ => Some("node.kubernetes.io/unreachable"),
    };
    if readiness_taint.is_some_and(|k| !naive_tolerates(pod, k, "", "NoSchedule")) {
        return false;
    }
    for t in node["spec"]["taints"].as_array().into_iter().flatten() {
        let effect = t["effect"].as_str().unwrap();
        if effect != "PreferNoSchedule"
            && !naive_tolerates(pod, t["key"].as_str().unwrap(), t["value"].as_str().unwrap(), effect)
        {
            return false;
        }
    }
    for (k, v) in pod["spec"]["nodeSelector"].as_object().into_iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    if let Some(expr) = pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0") {
        let value = labels.get(expr["key"].as_str().unwrap());
        let listed = value.is_some_and(|v| expr["values"].as_array().unwrap().contains(v));
        if (expr["operator"] == "In") != listed {
            return false;
        }
    }
    let ports = |p: &Value| -> Vec<(String, i64)> {
        p["spec"]["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| (x["protocol"].as_str().unwrap().to_string(), x["hostPort"].as_i64().unwrap()))
            .collect()
    };
    let used: Vec<(String, i64)> = on_node.iter().flat_map(|p| ports(p)).collect();
    if ports(pod).iter().any(|p| used.contains(p)) {
        return false;
    }
    let req = |p: &Value| {
        let r = &p["spec"]["containers"][0]["resources"]["requests"];
        (millis(&r["cpu"]), mebibytes(&r["memory"]))
    };
    let (cpu, mem) = req(pod);
    let used_cpu: i64 = on_node.iter().map(|p| req(p).0).sum();
    let used_mem: i64 = on_node.iter().map(|p| req(p).1).sum();
    let alloc = &node["status"]["allocatable"];
    let pods_ok = (on_node.len() as i64) < alloc["pods"].as_str().unwrap().parse::<i64>().unwrap();
    let cpu_ok = cpu == 0 || used_cpu + cpu <= millis(&alloc["cpu"]);
    let mem_ok = mem == 0 || used_mem + mem <= mebibytes(&alloc["memory"]);
    pods_ok && cpu_ok && mem_ok
}

fn arb_node(i: usize) -> impl Strategy<Value = Value> {
    (
        1000i64..8000,
        512i64..8192,
        1i64..5,
        prop::sample::select(vec!["a", "b", "c"]),
        prop::option::weighted(0.3, (prop::sample::select(vec!["x", "y"]), prop::sample::select(vec!["NoSchedule", "NoExecute", "PreferNoSchedule"]))),
        prop::bool::weighted(0.15),
        prop::sample::select(vec!["True", "True", "True", "False", "Unknown"]),
    )
        .prop_map(move |(cpu, mem, pods, zone, taint, cordoned, ready)| {
            let taints: Vec<Value> = taint.into_iter().map(|(v, e)| json!({"key": "dedicated", "value": v, "effect": e})).collect();
            json!({"metadata": {"name": format!("node-{i}"), "labels": {"zone": zone}},
                "spec": {"unschedulable": cordoned, "taints": taints},
                "status": {"allocatable": {"cpu": format!("{cpu}m"), "memory": format!("{mem}Mi"), "pods": pods.to_string()},
                    "conditions": [{"type": "Ready", "status": ready}]}})
        })
}

fn arb_pod(i: usize) -> impl Strategy<Value = Value> {
    let toleration = prop::sample::select(vec![
        json!({"key": "dedicated", "operator": "Equal", "value": "x"}),
        json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}),
        json!({"operator": "Exists"}),
    ]);
    (
        0i64..3000,
        0i64..3000,
        prop::option::weighted(0.25, prop::sample::select(vec!["a", "b", "c"])),
        prop::option::weighted(0.25, (prop::bool::ANY, prop::sample::subsequence(vec!["a", "b", "c"], 1..3))),
        prop::collection::vec(toleration, 0..2),
        prop::option::weighted(0.3, (prop::sample::select(vec![80i64, 81]), prop::sample::select(vec!["TCP", "UDP"]))),
        prop::option::weighted(0.5, 0usize..3),
    )
        .prop_map(move |(cpu, mem, selector, affinity, tolerations, port, owner)| {
            let mut requests = serde_json::Map::new();
            if cpu > 0 {
                requests.insert("cpu".into(), json!(format!("{cpu}m")));
            }
            if mem > 0 {
                requests.insert("memory".into(), json!(format!("{mem}Mi")));
            }
            let ports: Vec<Value> =
                port.into_iter().map(|(p, proto)| json!({"containerPort": 80, "hostPort": p, "protocol": proto})).collect();
            let mut p = json!({"metadata": {"name": format!("pod-{i}"), "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": requests}, "ports": ports}],
                    "tolerations": tolerations}});
            if let Some(zone) = selector {
                p["spec"]["nodeSelector"] = json!({"zone": zone});
            }
            if let Some((is_in, zones)) = affinity {
                p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": if is_in { "In" } else { "NotIn" }, "values": zones}]}]}}});
            }
            if let Some(o) = owner {
                p = owned_by(p, &format!("rs-{o}"));
            }
            p
        })
}

fn arb_case() -> impl Strategy<Value = (Vec<Value>, Vec<Value>)> {
    (1usize..6, 1usize..14)
        .prop_flat_map(|(n, p)| ((0..n).map(arb_node).collect::<Vec<_>>(), (0..p).map(arb_pod).collect::<Vec<_>>()))
}

proptest! {
    #[test]
    fn placements_never_violate_a_filter((nodes, pods) in arb_case()) {
        let mut c = cluster(&nodes, &[]);
        let mut placed: Vec<(String, Value)> = Vec::new();
        for p in &pods {
            let on = |name: &str| placed.iter().filter(|(n, _)| n == name).map(|(_, p)| p).collect::<Vec<&Value>>();
            match c.place(p) {
                Ok(name) => {
                    let node = nodes.iter().find(|n| n["metadata"]["name"] == name.as_str()).unwrap();
                    prop_assert!(naive_fits(p, node, &on(&name)), "{} placed on {} against a filter", p["metadata"]["name"], name);
                    placed.push((name, p.clone()));
                }
                Err(e) => {
                    for node in &nodes {
                        let name = node["metadata"]["name"].as_str().unwrap();
                        prop_assert!(!naive_fits(p, node, &on(name)), "{} rejected ({}) but fits {}", p["metadata"]["name"], e, name);
                    }
                    prop_assert_eq!(e.nodes, nodes.len());
                    prop_assert!(e.reasons.values().sum::<usize>() >= nodes.len());
                }
            }
        }
    }
}
