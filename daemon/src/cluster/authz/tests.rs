//! Table-driven tests of the Node authorizer, after Kubernetes' `node_authorizer_test.go`.

use serde_json::json;

use super::*;

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn claim(ns: &str, name: &str, volume: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"volumeName": volume},
    }))
    .unwrap()
}

/// edge-1 runs `default/web`, which uses one object of each kind by each route; edge-2 runs
/// `default/other`; `default/pending` is bound to no node yet.
fn graph() -> PodGraph {
    let web = pod(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {
            "nodeName": "edge-1",
            "imagePullSecrets": [{"name": "pull-secret"}],
            "initContainers": [{
                "name": "init", "image": "busybox",
                "envFrom": [{"secretRef": {"name": "envfrom-secret"}}, {"configMapRef": {"name": "envfrom-config"}}],
            }],
            "containers": [{
                "name": "app", "image": "nginx",
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "password"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "env-config", "key": "mode"}}},
                    {"name": "PLAIN", "value": "x"},
                ],
            }],
            "ephemeralContainers": [{
                "name": "debug", "image": "busybox",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "debug-secret", "key": "t"}}}],
            }],
            "volumes": [
                {"name": "certs", "secret": {"secretName": "vol-secret"}},
                {"name": "conf", "configMap": {"name": "vol-config"}},
                {"name": "all", "projected": {"sources": [
                    {"secret": {"name": "projected-secret"}},
                    {"configMap": {"name": "projected-config"}},
                ]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "nfs", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
            ],
        },
    }));
    let other = pod(json!({
        "metadata": {"namespace": "default", "name": "other"},
        "spec": {
            "nodeName": "edge-2",
            "containers": [{"name": "app", "image": "nginx",
                "envFrom": [{"secretRef": {"name": "other-secret"}}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "other-data"}}],
        },
    }));
    let pending = pod(json!({
        "metadata": {"namespace": "default", "name": "pending"},
        "spec": {"containers": [{"name": "app", "image": "nginx",
            "envFrom": [{"secretRef": {"name": "pending-secret"}}]}]},
    }));
    let claims = [claim("default", "data", "pv-data"), claim("default", "other-data", "pv-other")];
    PodGraph::build([&web, &other, &pending], &claims)
}

fn agent(name: &str) -> Principal {
    Principal::Node(Identity { node_name: name.into(), role: Role::Agent })
}

fn req<'a>(verb: Verb, what: &'a str, namespace: Option<&'a str>, name: Option<&'a str>) -> Request<'a> {
    let (resource, subresource) = match what.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (what, None),
    };
    Request { verb, resource, subresource, namespace, name }
}

use Verb::*;

const NS: Option<&str> = Some("default");

/// A table row: verb, resource[/subresource], namespace, name, allowed.
type Case = (Verb, &'static str, Option<&'static str>, Option<&'static str>, bool);

/// What agent `edge-1` may do.
const EDGE_1: &[Case] = &[
    // Secrets: each route by which a pod of edge-1 uses one…
    (Get, "secrets", NS, Some("vol-secret"), true),
    (Get, "secrets", NS, Some("env-secret"), true),
    (Get, "secrets", NS, Some("envfrom-secret"), true),
    (Get, "secrets", NS, Some("pull-secret"), true),
    (Get, "secrets", NS, Some("projected-secret"), true),
    (Get, "secrets", NS, Some("debug-secret"), true),
    (Get, "secrets", NS, Some("csi-secret"), true),
    (Watch, "secrets", NS, Some("vol-secret"), true),
    (List, "secrets", NS, Some("env-secret"), true),
    // …and nothing else: another node's, an unbound pod's, the same name elsewhere, a list, writes.
    (Get, "secrets", NS, Some("other-secret"), false),
    (Get, "secrets", NS, Some("pending-secret"), false),
    (Get, "secrets", NS, Some("unused"), false),
    (Get, "secrets", Some("kube-system"), Some("vol-secret"), false),
    (Get, "secrets", None, Some("vol-secret"), false),
    (List, "secrets", NS, None, false),
    (Watch, "secrets", None, None, false),
    (Create, "secrets", NS, Some("vol-secret"), false),
    (Update, "secrets", NS, Some("vol-secret"), false),
    (Patch, "secrets", NS, Some("vol-secret"), false),
    (Delete, "secrets", NS, Some("vol-secret"), false),
    (DeleteCollection, "secrets", NS, None, false),
    // ConfigMaps, the same way.
    (Get, "configmaps", NS, Some("vol-config"), true),
    (Get, "configmaps", NS, Some("env-config"), true),
    (Get, "configmaps", NS, Some("envfrom-config"), true),
    (Get, "configmaps", NS, Some("projected-config"), true),
    (Watch, "configmaps", NS, Some("vol-config"), true),
    (Get, "configmaps", NS, Some("unused"), false),
    (List, "configmaps", NS, None, false),
    (Update, "configmaps", NS, Some("vol-config"), false),
    // Claims and volumes: its pods', also the ephemeral volume's claim, and the volume bound.
    (Get, "persistentvolumeclaims", NS, Some("data"), true),
    (Get, "persistentvolumeclaims", NS, Some("web-scratch"), true),
    (Get, "persistentvolumeclaims", NS, Some("other-data"), false),
    (List, "persistentvolumeclaims", NS, None, false),
    (Get, "persistentvolumes", None, Some("pv-data"), true),
    (Get, "persistentvolumes", None, Some("pv-other"), false),
    (Watch, "persistentvolumes", None, Some("pv-data"), false),
    (Delete, "persistentvolumes", None, Some("pv-data"), false),
    // Pods: read its own, list and watch (the API narrows), status and deletion of its own.
    (Get, "pods", NS, Some("web"), true),
    (Get, "pods", NS, Some("other"), false),
    (Get, "pods", NS, Some("pending"), false),
    (Get, "pods", Some("kube-system"), Some("web"), false),
    (List, "pods", None, None, true),
    (Watch, "pods", NS, None, true),
    (Watch, "pods", NS, Some("web"), true),
    (Watch, "pods", NS, Some("other"), false),
    (Update, "pods/status", NS, Some("web"), true),
    (Patch, "pods/status", NS, Some("web"), true),
    (Patch, "pods/status", NS, Some("other"), false),
    (Get, "pods/status", NS, Some("web"), false),
    (Delete, "pods", NS, Some("web"), true),
    (Delete, "pods", NS, Some("other"), false),
    (DeleteCollection, "pods", NS, None, false),
    (Create, "pods", NS, Some("web"), false),
    (Update, "pods", NS, Some("web"), false),
    (Patch, "pods", NS, Some("web"), false),
    (Create, "pods/eviction", NS, Some("other"), false),
    (Create, "pods/exec", NS, Some("web"), false),
    (Get, "pods/log", NS, Some("other"), false),
    (Create, "pods/binding", NS, Some("pending"), false),
    // Nodes: read all, change only its own.
    (Get, "nodes", None, Some("edge-2"), true),
    (List, "nodes", None, None, true),
    (Watch, "nodes", None, None, true),
    (Create, "nodes", None, Some("edge-1"), true),
    (Update, "nodes", None, Some("edge-1"), true),
    (Patch, "nodes", None, Some("edge-1"), true),
    (Update, "nodes/status", None, Some("edge-1"), true),
    (Patch, "nodes/status", None, Some("edge-1"), true),
    (Create, "nodes", None, Some("edge-2"), false),
    (Create, "nodes", None, None, false),
    (Update, "nodes", None, Some("edge-2"), false),
    (Patch, "nodes", None, Some("edge-2"), false),
    (Patch, "nodes/status", None, Some("edge-2"), false),
    (Get, "nodes/status", None, Some("edge-1"), false),
    (Delete, "nodes", None, Some("edge-1"), false),
    (Delete, "nodes", None, Some("edge-2"), false),
    // What the proxy and DNS read.
    (List, "services", None, None, true),
    (Watch, "endpoints", None, None, true),
    (Get, "namespaces", None, Some("default"), true),
    (Create, "services", NS, Some("evil"), false),
    (Update, "endpoints", NS, Some("web"), false),
    (Delete, "namespaces", None, Some("default"), false),
    // Events: write, not read or delete.
    (Create, "events", NS, None, true),
    (Patch, "events", NS, Some("web.1"), true),
    (Update, "events.events.k8s.io", NS, Some("web.1"), true),
    (List, "events", NS, None, false),
    (Delete, "events", NS, Some("web.1"), false),
    // Everything else.
    (List, "deployments.apps", None, None, false),
    (Create, "deployments.apps", NS, Some("web"), false),
    (Get, "jointokens.skerry.io", None, Some("abc123"), false),
    (Get, "secrets/token", NS, Some("vol-secret"), false),
    (List, "storageclasses.storage.k8s.io", None, None, false),
];

#[test]
fn an_agent_may_do_what_a_kubelet_may() {
    let graph = graph();
    let edge1 = agent("edge-1");
    let mut wrong = Vec::new();
    for &(verb, what, namespace, name, allowed) in EDGE_1 {
        let decision = authorize(&edge1, &req(verb, what, namespace, name), &graph);
        if (decision == Decision::Allow) != allowed {
            wrong.push(format!("{verb} {what} {namespace:?}/{name:?}: {decision:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
}

#[test]
fn another_node_sees_only_its_own() {
    let graph = graph();
    let edge2 = agent("edge-2");
    let cases = [
        (Get, "secrets", NS, Some("other-secret"), true),
        (Get, "secrets", NS, Some("vol-secret"), false),
        (Get, "pods", NS, Some("other"), true),
        (Get, "pods", NS, Some("web"), false),
        (Get, "persistentvolumes", None, Some("pv-other"), true),
        (Get, "persistentvolumes", None, Some("pv-data"), false),
        (Update, "nodes/status", None, Some("edge-2"), true),
        (Update, "nodes/status", None, Some("edge-1"), false),
    ];
    for (verb, what, namespace, name, allowed) in cases {
        let decision = authorize(&edge2, &req(verb, what, namespace, name), &graph);
        assert_eq!(decision == Decision::Allow, allowed, "{verb} {what} {name:?}: {decision:?}");
    }
    // A node with no pods — or one the graph has never heard of — reads no Secret at all.
    let decision = authorize(&agent("edge-9"), &req(Get, "secrets", NS, Some("vol-secret")), &graph);
    assert!(matches!(decision, Decision::Deny(_)));
}

#[test]
fn the_admin_and_servers_may_do_anything() {
    let graph = graph();
    let server = Principal::Node(Identity { node_name: "server-1".into(), role: Role::Server });
    for principal in [Principal::Admin, server] {
        for &(verb, what, namespace, name, _) in EDGE_1 {
            let decision = authorize(&principal, &req(verb, what, namespace, name), &graph);
            assert_eq!(decision, Decision::Allow, "{principal:?} {verb} {what}");
        }
        assert_eq!(pod_list_filter(&principal), None);
        assert!(unrestricted(&principal));
    }
    assert_eq!(pod_list_filter(&agent("edge-1")), Some("edge-1"));
    assert!(!unrestricted(&agent("edge-1")));
}

#[test]
fn denials_say_why() {
    let graph = graph();
    let edge1 = agent("edge-1");
    let cases = [
        (req(Get, "secrets", NS, Some("other-secret")), "no relationship found between node 'edge-1' and this object"),
        (req(Create, "pods", NS, Some("x")), "node 'edge-1' cannot create pods; pods are created through a server"),
        (req(Patch, "nodes", None, Some("edge-2")), "node 'edge-1' can only change its own Node object, not 'edge-2'"),
        (req(Get, "pods", NS, Some("other")), "no relationship found between node 'edge-1' and this object"),
        (
            req(List, "secrets", NS, None),
            "node 'edge-1' can only read individual secrets that its pods use, not list them",
        ),
        (req(Create, "pods/exec", NS, Some("web")), "node 'edge-1' cannot create pods/exec"),
        (req(List, "deployments.apps", None, None), "node 'edge-1' cannot list deployments.apps"),
    ];
    for (request, want) in cases {
        assert_eq!(authorize(&edge1, &request, &graph), Decision::Deny(want.into()));
    }
}

#[test]
fn the_graph_follows_claims_only_when_bound() {
    let p = pod(json!({
        "metadata": {"namespace": "apps", "name": "db"},
        "spec": {"nodeName": "edge-3", "containers": [{"name": "db", "image": "pg"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "unbound"}}]},
    }));
    let unbound: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"namespace": "apps", "name": "unbound"}, "spec": {}})).unwrap();
    let g = PodGraph::build([&p], [&unbound]);
    assert!(g.relates("edge-3", Kind::PersistentVolumeClaim, "apps", "unbound"));
    assert!(g.relates("edge-3", Kind::Pod, "apps", "db"));
    assert!(!g.relates("edge-3", Kind::PersistentVolume, "", ""));
    // A claim of the same name in another namespace binds nothing here.
    let g = PodGraph::build([&p], [&claim("default", "unbound", "pv-x")]);
    assert!(!g.relates("edge-3", Kind::PersistentVolume, "", "pv-x"));
}
#[test]
fn an_agent_may_not_give_itself_a_role_or_change_its_taints() {
    use serde_json::json;
    let agent = Principal::Node(Identity { node_name: "edge-1".into(), role: Role::Agent });
    let node = |labels: serde_json::Value, taints: serde_json::Value| json!({"metadata": {"name": "edge-1", "labels": labels}, "spec": {"taints": taints}});
    let old =
        node(json!({"kubernetes.io/hostname": "edge-1", "site": "a"}), json!([{"key": "k", "effect": "NoSchedule"}]));
    // Its own status-like changes and ordinary labels are fine.
    let fine =
        node(json!({"kubernetes.io/hostname": "edge-1", "site": "b"}), json!([{"key": "k", "effect": "NoSchedule"}]));
    assert_eq!(node_restriction(&agent, Some(&old), &fine), Ok(()));
    let role = node(
        json!({"kubernetes.io/hostname": "edge-1", "node-role.kubernetes.io/control-plane": ""}),
        json!([{"key": "k", "effect": "NoSchedule"}]),
    );
    assert_eq!(
        node_restriction(&agent, Some(&old), &role),
        Err("node \"edge-1\" is not allowed to modify labels: node-role.kubernetes.io/control-plane".into())
    );
    assert_eq!(
        node_restriction(&agent, None, &role),
        Err("node \"edge-1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane".into())
    );
    let untainted = node(json!({"kubernetes.io/hostname": "edge-1", "site": "a"}), json!(null));
    assert_eq!(
        node_restriction(&agent, Some(&old), &untainted),
        Err("node \"edge-1\" is not allowed to modify taints".into())
    );
    // Admins and servers are not restricted.
    let server = Principal::Node(Identity { node_name: "s".into(), role: Role::Server });
    assert_eq!(node_restriction(&server, Some(&old), &untainted), Ok(()));
    assert_eq!(node_restriction(&Principal::Admin, Some(&old), &role), Ok(()));
}
