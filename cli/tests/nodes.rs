//! The node commands (`taint`, `cordon`, `uncordon`, `drain`, `label node`) against the fake
//! skerryd: the requests they send and exactly what they print.

mod support;

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use support::{json_reply, start, status, Seen};

const NODE: &str = "/api/v1/nodes/edge-1";

fn node(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1", "uid": "n1", "labels": {"kubernetes.io/hostname": "edge-1"}}, "spec": spec})
}

fn body(s: &Seen) -> Value {
    serde_json::from_slice(&s.body).unwrap()
}

fn patches(fake: &support::Fake) -> Vec<Seen> {
    fake.requests().into_iter().filter(|r| r.method == "PATCH").collect()
}

fn not_found() -> support::Reply {
    status(404, "NotFound", "nodes \"missing\" not found")
}

#[tokio::test]
async fn taint_adds_removes_and_refuses_like_kubectl() {
    let taints = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    let fake = start(move |s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", NODE) => json_reply(200, node(json!({"taints": taints}))),
        ("PATCH", NODE) => json_reply(200, node(body(s)["spec"].clone())),
        _ => not_found(),
    })
    .await;

    let (code, out, err) = fake.run(&["taint", "nodes", "edge-1", "spot=yes:PreferNoSchedule"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "node/edge-1 tainted\n", ""));
    assert_eq!(
        body(&patches(&fake)[0]),
        json!({"spec": {"taints": [{"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}, {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})
    );
    assert_eq!(patches(&fake)[0].headers.get("content-type").unwrap(), "application/merge-patch+json");

    let (code, out, err) = fake.run(&["taint", "node", "edge-1", "dedicated=cpu:NoSchedule"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err, "error: node edge-1 already has dedicated taint(s) with same effect(s) and --overwrite is false\n");
    let (code, out, _) = fake.run(&["taint", "node", "edge-1", "dedicated=cpu:NoSchedule", "--overwrite"]).await;
    assert_eq!((code, out.as_str()), (0, "node/edge-1 modified\n"));

    let (code, out, _) = fake.run(&["taint", "no", "edge-1", "dedicated:NoSchedule-"]).await;
    assert_eq!((code, out.as_str()), (0, "node/edge-1 untainted\n"));
    assert_eq!(body(patches(&fake).last().unwrap()), json!({"spec": {"taints": null}}));
    let (code, out, _) = fake.run(&["taint", "node", "edge-1", "dedicated-"]).await;
    assert_eq!((code, out.as_str()), (0, "node/edge-1 untainted\n"));
    let (code, _, err) = fake.run(&["taint", "node", "edge-1", "other:NoExecute-"]).await;
    assert_eq!((code, err.as_str()), (1, "error: taint \"other:NoExecute\" not found\n"));

    let sent = patches(&fake).len();
    let (code, _, err) = fake.run(&["taint", "node", "edge-1", "k=v:Sometimes"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: invalid taint effect: Sometimes, unsupported taint effect\nSee 'skerry taint -h' for help and examples\n"
    );
    let (_, _, err) = fake.run(&["taint", "pods", "web", "k=v:NoSchedule"]).await;
    assert_eq!(err, "error: invalid resource type pods, only node types are supported\n");
    let (_, _, err) = fake.run(&["taint", "node", "k=v:NoSchedule"]).await;
    assert_eq!(err, "error: at least one resource name must be specified since 'all' parameter is not set\n");
    let (_, _, err) = fake.run(&["taint", "node", "edge-1"]).await;
    assert_eq!(err, "error: at least one taint update is required\n");
    let (code, out, err) = fake.run(&["taint", "node", "missing", "k=v:NoSchedule"]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err, "Error from server (NotFound): nodes \"missing\" not found\n");
    assert_eq!(patches(&fake).len(), sent, "refusals send nothing");
}

#[tokio::test]
async fn cordon_and_uncordon_patch_only_when_needed() {
    let cordoned = Arc::new(Mutex::new(false));
    let state = cordoned.clone();
    let fake = start(move |s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", NODE) => {
            let spec = if *state.lock().unwrap() { json!({"unschedulable": true}) } else { json!({}) };
            json_reply(200, node(spec))
        }
        ("PATCH", NODE) => {
            *state.lock().unwrap() = body(s)["spec"]["unschedulable"] == true;
            json_reply(200, node(body(s)["spec"].clone()))
        }
        _ => not_found(),
    })
    .await;
    let (code, out, err) = fake.run(&["cordon", "edge-1"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "node/edge-1 cordoned\n", ""));
    assert_eq!(body(&patches(&fake)[0]), json!({"spec": {"unschedulable": true}}));
    let (_, out, _) = fake.run(&["cordon", "edge-1"]).await;
    assert_eq!(out, "node/edge-1 already cordoned\n");
    assert_eq!(patches(&fake).len(), 1, "already cordoned: nothing sent");
    let (_, out, _) = fake.run(&["uncordon", "node/edge-1"]).await;
    assert_eq!(out, "node/edge-1 uncordoned\n");
    assert_eq!(body(&patches(&fake)[1]), json!({"spec": {"unschedulable": null}}));
    let (_, out, _) = fake.run(&["uncordon", "edge-1"]).await;
    assert_eq!(out, "node/edge-1 already uncordoned\n");
    let (code, _, err) = fake.run(&["cordon"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: USAGE: cordon NODE [flags]\nSee 'skerry cordon -h' for help and examples\n")
    );
    let (code, _, err) = fake.run(&["cordon", "missing"]).await;
    assert_eq!((code, err.as_str()), (1, "Error from server (NotFound): nodes \"missing\" not found\n"));
}

#[tokio::test]
async fn label_covers_nodes() {
    let fake = start(|s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", NODE) => json_reply(200, node(json!({}))),
        ("PATCH", NODE) => json_reply(200, node(json!({}))),
        _ => not_found(),
    })
    .await;
    let (code, out, err) = fake.run(&["label", "node", "edge-1", "site=north"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "node/edge-1 labeled\n", ""));
    assert_eq!(body(&patches(&fake)[0]), json!({"metadata": {"labels": {"site": "north"}}}));
    assert_eq!(patches(&fake)[0].uri, NODE);
}

/// A fake node with a ReplicaSet's pod, an unmanaged pod and a pod with emptyDir data; evicted
/// pods disappear after one more read.
async fn drain_server() -> support::Fake {
    let pods = [
        json!({"metadata": {"name": "web-1", "namespace": "default", "uid": "p1", "ownerReferences": [{"kind": "ReplicaSet", "name": "web", "controller": true}]}, "spec": {"nodeName": "edge-1"}, "status": {"phase": "Running"}}),
        json!({"metadata": {"name": "lonely", "namespace": "default", "uid": "p2"}, "spec": {"nodeName": "edge-1"}, "status": {"phase": "Running"}}),
        json!({"metadata": {"name": "cache", "namespace": "prod", "uid": "p3", "ownerReferences": [{"kind": "ReplicaSet", "name": "cache", "controller": true}]}, "spec": {"nodeName": "edge-1", "volumes": [{"name": "tmp", "emptyDir": {}}]}, "status": {"phase": "Running"}}),
    ];
    let evicted: Arc<Mutex<Vec<String>>> = Arc::default();
    let cordoned = Arc::new(Mutex::new(false));
    start(move |s| {
        let uri = s.uri.as_str();
        match s.method.as_str() {
            "GET" if uri == NODE => {
                let spec = if *cordoned.lock().unwrap() { json!({"unschedulable": true}) } else { json!({}) };
                json_reply(200, node(spec))
            }
            "PATCH" if uri == NODE => {
                *cordoned.lock().unwrap() = true;
                json_reply(200, node(json!({"unschedulable": true})))
            }
            "GET" if uri.starts_with("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1") => {
                let gone = evicted.lock().unwrap().clone();
                let left: Vec<&Value> = pods
                    .iter()
                    .filter(|p| !gone.contains(&p["metadata"]["name"].as_str().unwrap().to_string()))
                    .collect();
                json_reply(200, json!({"kind": "PodList", "items": left}))
            }
            "POST" if uri.ends_with("/eviction") => {
                let e = body(s);
                assert_eq!((e["apiVersion"].as_str(), e["kind"].as_str()), (Some("policy/v1"), Some("Eviction")));
                evicted.lock().unwrap().push(e["metadata"]["name"].as_str().unwrap().to_string());
                json_reply(201, json!({"kind": "Status", "status": "Success", "code": 201}))
            }
            "GET" => {
                let name = uri.rsplit('/').next().unwrap();
                if evicted.lock().unwrap().iter().any(|e| e == name) {
                    status(404, "NotFound", &format!("pods \"{name}\" not found"))
                } else {
                    let p = pods.iter().find(|p| p["metadata"]["name"] == name).cloned().unwrap_or(json!({}));
                    json_reply(200, p)
                }
            }
            _ => not_found(),
        }
    })
    .await
}

#[tokio::test]
async fn drain_refuses_what_kubectl_refuses() {
    let fake = drain_server().await;
    let (code, out, err) = fake.run(&["drain", "edge-1"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "node/edge-1 cordoned\n");
    assert_eq!(
        err,
        "error: unable to drain node \"edge-1\" due to error: [cannot delete Pods with local storage (use --delete-emptydir-data to override): prod/cache, \
         cannot delete cannot delete Pods that declare no controller (use --force to override): default/lonely], continuing command...\n\
         There are pending nodes to be drained:\n edge-1\n\
         cannot delete Pods with local storage (use --delete-emptydir-data to override): prod/cache\n\
         cannot delete cannot delete Pods that declare no controller (use --force to override): default/lonely\n"
    );
    assert!(!fake.requests().iter().any(|r| r.method == "POST"), "nothing is evicted when any pod is refused");
}

#[tokio::test]
async fn drain_with_force_evicts_everything_and_waits() {
    let fake = drain_server().await;
    let (code, out, err) =
        fake.run(&["drain", "edge-1", "--force", "--delete-emptydir-data", "--grace-period", "3"]).await;
    assert_eq!(err, "Warning: deleting Pods that declare no controller: default/lonely\n");
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node/edge-1 cordoned");
    assert_eq!(lines[1..4], ["evicting pod default/web-1", "evicting pod default/lonely", "evicting pod prod/cache"]);
    let mut evicted = lines[4..7].to_vec();
    evicted.sort();
    assert_eq!(evicted, ["pod/cache evicted", "pod/lonely evicted", "pod/web-1 evicted"]);
    assert_eq!(lines[7..], ["node/edge-1 drained"]);
    let eviction = fake.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(eviction.uri, "/api/v1/namespaces/default/pods/web-1/eviction");
    assert_eq!(body(&eviction)["deleteOptions"], json!({"gracePeriodSeconds": 3}));
    assert_eq!(body(&eviction)["metadata"], json!({"name": "web-1", "namespace": "default"}));

    // Drained already: cordoned, nothing left.
    let (code, out, _) = fake.run(&["drain", "edge-1"]).await;
    assert_eq!((code, out.as_str()), (0, "node/edge-1 already cordoned\nnode/edge-1 drained\n"));
}

#[tokio::test]
async fn drain_gives_up_at_the_timeout() {
    // The pod never goes.
    let pod = json!({"metadata": {"name": "stuck", "namespace": "default", "uid": "p1", "ownerReferences": [{"kind": "ReplicaSet", "name": "s", "controller": true}]}, "status": {"phase": "Running"}});
    let fake = start(move |s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", NODE) => json_reply(200, node(json!({"unschedulable": true}))),
        ("GET", u) if u.starts_with("/api/v1/pods?") => json_reply(200, json!({"items": [pod]})),
        ("POST", _) => json_reply(201, json!({"kind": "Status", "status": "Success"})),
        ("GET", _) => json_reply(200, pod.clone()),
        _ => not_found(),
    })
    .await;
    let (code, out, err) = fake.run(&["drain", "edge-1", "--timeout", "1s"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "node/edge-1 already cordoned\nevicting pod default/stuck\n");
    let reason =
        "error when waiting for pod \"stuck\" in namespace \"default\" to terminate: global timeout reached: 1s";
    assert_eq!(
        err,
        format!(
            "There are pending pods in node \"edge-1\" when an error occurred: {reason}\npod/stuck\n\
             error: unable to drain node \"edge-1\" due to error: {reason}, continuing command...\n\
             There are pending nodes to be drained:\n edge-1\n{reason}\n"
        )
    );
}
