//! The workload commands (`scale`, `rollout`, `set image`, `annotate`) against the fake
//! skerryd: the requests they send and exactly what they print.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};
use support::{json_reply, start, status, Reply, Seen};

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const REPLICASETS: &str = "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3Dweb";

fn body(s: &Seen) -> Value {
    serde_json::from_slice(&s.body).unwrap()
}

fn patches(fake: &support::Fake) -> Vec<Seen> {
    fake.requests().into_iter().filter(|r| r.method == "PATCH").collect()
}

/// A Deployment `web` (uid d1, selector app=web) whose template runs `image`.
fn deployment(image: &str, extra: Value) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "d1", "resourceVersion": "10", "generation": 3,
                     "annotations": {"deployment.kubernetes.io/revision": "3"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}},
        "status": {"observedGeneration": 3}
    });
    merge(&mut d, &extra);
    d
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// A ReplicaSet of revision `rev` running `image`, controlled by `owner`.
fn replica_set(rev: u32, image: &str, owner: &str, cause: Option<&str>) -> Value {
    let mut annotations = json!({"deployment.kubernetes.io/revision": rev.to_string()});
    if let Some(c) = cause {
        annotations["kubernetes.io/change-cause"] = json!(c);
    }
    json!({
        "metadata": {"name": format!("web-h{rev}"), "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner, "controller": true}]},
        "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": format!("h{rev}")}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}
    })
}

fn not_found(what: &str) -> Reply {
    status(404, "NotFound", &format!("{what} not found"))
}

#[tokio::test]
async fn scale_patches_replicas_with_preconditions() {
    let fake = start(|s| match (s.method.as_str(), s.uri.as_str()) {
        (_, DEPLOY) => json_reply(200, deployment("nginx:1.25", json!({"metadata": {"resourceVersion": "5"}}))),
        (_, "/api/v1/namespaces/default/replicationcontrollers/legacy") => json_reply(
            200,
            json!({"kind": "ReplicationController", "metadata": {"name": "legacy"}, "spec": {"replicas": 1}}),
        ),
        (_, "/api/v1/namespaces/default/pods/p") => json_reply(200, json!({"kind": "Pod", "metadata": {"name": "p"}})),
        _ => not_found("deployments.apps \"missing\""),
    })
    .await;

    let (code, out, err) = fake.run(&["scale", "--replicas=3", "deployment/web"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "deployment.apps/web scaled\n", ""));
    let sent = patches(&fake);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, DEPLOY);
    assert_eq!(sent[0].headers.get("content-type").unwrap(), "application/merge-patch+json");
    assert_eq!(body(&sent[0]), json!({"spec": {"replicas": 3}}));

    let (code, out, err) = fake.run(&["scale", "deploy", "web"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: required flag(s) \"replicas\" not set\n"));

    let (code, out, err) = fake.run(&["scale", "--replicas=1", "--current-replicas=3", "deploy/web"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: Expected replicas to be 3, was 2\n"));
    assert_eq!(patches(&fake).len(), 1, "a failed precondition sends nothing");

    let (code, out, _) = fake.run(&["scale", "--replicas", "1", "--current-replicas", "2", "deploy", "web"]).await;
    assert_eq!((code, out.as_str()), (0, "deployment.apps/web scaled\n"));
    // The checked version goes along, so a concurrent change is a conflict rather than lost.
    assert_eq!(body(&patches(&fake)[1]), json!({"metadata": {"resourceVersion": "5"}, "spec": {"replicas": 1}}));

    let (code, _, err) = fake.run(&["scale", "--replicas=1", "--resource-version=4", "deploy/web"]).await;
    assert_eq!((code, err.as_str()), (1, "error: Expected resource version to be 4, was 5\n"));

    let (code, out, _) = fake.run(&["scale", "rc/legacy", "--replicas=0"]).await;
    assert_eq!((code, out.as_str()), (0, "replicationcontroller/legacy scaled\n"));
    assert_eq!(patches(&fake).last().unwrap().uri, "/api/v1/namespaces/default/replicationcontrollers/legacy");

    let (code, out, err) = fake.run(&["scale", "--replicas=2", "pod/p"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "Error from server (NotFound): the server could not find the requested resource\n")
    );

    let (code, out, err) = fake.run(&["scale", "--replicas=2", "deploy/missing"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "Error from server (NotFound): deployments.apps \"missing\" not found\n")
    );

    let (code, _, err) = fake.run(&["scale", "--replicas=-1", "deploy/web"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0\n")
    );
    assert_eq!(patches(&fake).len(), 3);
}

/// The rollout of a 2-replica Deployment, one state per watch event.
fn rollout_states() -> Vec<Value> {
    let st = |generation: i64, replicas: i64, updated: i64, available: i64| {
        deployment(
            "nginx:1.27",
            json!({"metadata": {"generation": generation},
                   "status": {"observedGeneration": 4, "replicas": replicas, "updatedReplicas": updated, "availableReplicas": available}}),
        )
    };
    vec![st(5, 2, 0, 2), st(4, 3, 1, 2), st(4, 3, 2, 2), st(4, 2, 2, 1), st(4, 2, 2, 2), st(4, 2, 2, 2)]
}

fn ndjson(events: &[(&str, Value)]) -> Reply {
    let mut text = String::new();
    for (kind, obj) in events {
        text.push_str(&json!({"type": kind, "object": obj}).to_string());
        text.push('\n');
    }
    Response::new(Full::new(Bytes::from(text)))
}

#[tokio::test]
async fn rollout_status_follows_the_deployment_until_rolled_out() {
    let fake = start(|s| {
        let states = rollout_states();
        if s.uri.contains("watch=true") {
            let events: Vec<(&str, Value)> = states[1..].iter().map(|d| ("MODIFIED", d.clone())).collect();
            return ndjson(&events);
        }
        json_reply(200, states[0].clone())
    })
    .await;
    let (code, out, err) = fake.run(&["rollout", "status", "deployment/web"]).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "Waiting for deployment spec update to be observed...\n\
         Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...\n\
         Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...\n\
         Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available...\n\
         deployment \"web\" successfully rolled out\n"
    );
    let reqs = fake.requests();
    assert_eq!(reqs[0].uri, DEPLOY);
    assert_eq!(
        reqs[1].uri,
        "/apis/apps/v1/namespaces/default/deployments?watch=true&fieldSelector=metadata.name%3Dweb&resourceVersion=10"
    );
    assert_eq!(reqs.len(), 2, "the command stops at the first done state");

    let (code, out, _) = fake.run(&["rollout", "status", "deploy", "web", "--watch=false"]).await;
    assert_eq!((code, out.as_str()), (0, "Waiting for deployment spec update to be observed...\n"));
    assert!(!fake.requests()[2..].iter().any(|r| r.uri.contains("watch")));
}

#[tokio::test]
async fn rollout_status_errors() {
    let fake = start(|s| {
        let stuck = json!({"metadata": {"name": "stuck"}, "status": {"conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}});
        let waiting = json!({"status": {"replicas": 2, "updatedReplicas": 1}});
        match s.uri.as_str() {
            "/apis/apps/v1/namespaces/default/deployments/stuck" => json_reply(200, deployment("a", stuck)),
            DEPLOY => json_reply(200, deployment("a", waiting)),
            u if u.contains("watch=true") && u.contains("gone") => {
                ndjson(&[("DELETED", deployment("a", json!({"metadata": {"name": "gone"}})))])
            }
            "/apis/apps/v1/namespaces/default/deployments/gone" => json_reply(
                200,
                deployment("a", json!({"metadata": {"name": "gone"}, "status": {"replicas": 2, "updatedReplicas": 1}})),
            ),
            // A watch on web that never sees a change.
            u if u.contains("watch=true") => ndjson(&[]),
            _ => not_found("deployments.apps \"nope\""),
        }
    })
    .await;
    let (code, out, err) = fake.run(&["rollout", "status", "deploy/stuck"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "error: deployment \"stuck\" exceeded its progress deadline\n")
    );

    let (code, out, err) = fake.run(&["rollout", "status", "deploy/gone"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "Waiting for deployment \"gone\" rollout to finish: 1 out of 2 new replicas have been updated...\n"
    );
    assert_eq!(err, "error: object has been deleted\n");

    let (code, out, err) = fake.run(&["rollout", "status", "deploy/web", "--timeout=1500ms"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...\n");
    assert_eq!(err, "error: timed out waiting for the condition\n");

    let (code, _, err) = fake.run(&["rollout", "status", "deploy/web", "--revision=2"]).await;
    assert_eq!((code, err.as_str()), (1, "error: desired revision (2) is different from the running revision (3)\n"));

    let (code, _, err) = fake.run(&["rollout", "status", "rs/web-h1"]).await;
    assert_eq!((code, err.as_str()), (1, "error: no status viewer has been implemented for ReplicaSet.apps\n"));

    let (code, _, err) = fake.run(&["rollout", "status", "deploy/nope"]).await;
    assert_eq!((code, err.as_str()), (1, "Error from server (NotFound): deployments.apps \"nope\" not found\n"));

    let (code, _, err) = fake.run(&["rollout", "status"]).await;
    assert_eq!((code, err.as_str()), (1, "error: required resource not specified\n"));
}

/// A fake with Deployment `web` (template `image`, `extra` merged in) and its ReplicaSets of
/// revisions 1 to 3 (images a, b, c; revision 2 has a change-cause), plus another owner's.
async fn with_history(image: &'static str, extra: Value) -> support::Fake {
    start(move |s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", DEPLOY) => json_reply(200, deployment(image, extra.clone())),
        ("GET", REPLICASETS) => json_reply(
            200,
            json!({"kind": "ReplicaSetList", "items": [
                replica_set(1, "nginx:a", "d1", None),
                replica_set(3, "nginx:c", "d1", None),
                replica_set(2, "nginx:b", "d1", Some("skerry set image deployment/web web=nginx:b")),
                replica_set(7, "nginx:z", "someone-else", Some("not ours")),
            ]}),
        ),
        ("PATCH", DEPLOY) => json_reply(200, deployment(image, json!({}))),
        _ => not_found("deployments.apps \"nope\""),
    })
    .await
}

#[tokio::test]
async fn rollout_history_lists_owned_revisions() {
    let fake = with_history("nginx:c", json!({})).await;
    let (code, out, err) = fake.run(&["rollout", "history", "deployment/web"]).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         skerry set image deployment/web web=nginx:b\n3         <none>\n\n"
    );
    assert_eq!(fake.requests()[1].uri, REPLICASETS);

    let (code, out, _) = fake.run(&["rollout", "history", "deploy/web", "--revision=2"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "deployment.apps/web with revision #2\nPod Template:\n  Labels:\tapp=web\n\tpod-template-hash=h2\n  \
         Annotations:\tkubernetes.io/change-cause: skerry set image deployment/web web=nginx:b\n  Containers:\n   web:\n    \
         Image:\tnginx:b\n    Port:\t<none>\n    Host Port:\t<none>\n    Environment:\t<none>\n    Mounts:\t<none>\n  \
         Volumes:\t<none>\n  Node-Selectors:\t<none>\n  Tolerations:\t<none>\n\n"
    );

    let (code, out, err) = fake.run(&["rollout", "history", "deploy/web", "--revision=7"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: unable to find the specified revision\n"));

    let (code, _, err) = fake.run(&["rollout", "history", "rc/legacy"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: no history viewer has been implemented for \"ReplicationController\"\n")
    );
}

#[tokio::test]
async fn rollout_undo_restores_the_previous_template() {
    let fake = with_history(
        "nginx:c",
        json!({"metadata": {"annotations": {"team": "x", "kubernetes.io/change-cause": "to c"}}}),
    )
    .await;
    let (code, out, err) = fake.run(&["rollout", "undo", "deployment/web"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "deployment.apps/web rolled back\n", ""));
    let sent = patches(&fake);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].headers.get("content-type").unwrap(), "application/json-patch+json");
    assert_eq!(
        body(&sent[0]),
        json!([
            {"op": "replace", "path": "/spec/template",
             "value": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:b"}]}}},
            {"op": "add", "path": "/metadata/annotations",
             "value": {"deployment.kubernetes.io/revision": "3",
                       "kubernetes.io/change-cause": "skerry set image deployment/web web=nginx:b"}}
        ])
    );

    let (code, out, _) = fake.run(&["rollout", "undo", "deploy/web", "--to-revision=1"]).await;
    assert_eq!((code, out.as_str()), (0, "deployment.apps/web rolled back\n"));
    let sent = patches(&fake);
    assert_eq!(body(&sent[1])[0]["value"]["spec"]["containers"][0]["image"], "nginx:a");
    // The annotations become revision 1's (it has none but the revision, which the Deployment keeps).
    assert_eq!(body(&sent[1])[1]["value"], json!({"deployment.kubernetes.io/revision": "3"}));

    let (code, out, _) = fake.run(&["rollout", "undo", "deploy/web", "--to-revision=3"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "deployment.apps/web skipped rollback (current template already matches revision 3)\n")
    );

    let (code, out, err) = fake.run(&["rollout", "undo", "deploy/web", "--to-revision=9"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: unable to find specified revision 9 in history\n"));
    assert_eq!(patches(&fake).len(), 2);

    let paused = with_history("nginx:c", json!({"spec": {"paused": true}})).await;
    let (code, _, err) = paused.run(&["rollout", "undo", "deploy/web"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: you cannot rollback a paused deployment; resume it first with 'skerry rollout resume' and try again\n")
    );
    assert!(patches(&paused).is_empty());
}

#[tokio::test]
async fn rollout_restart_pause_and_resume() {
    let fake = start(|s| match (s.method.as_str(), s.uri.as_str()) {
        (_, DEPLOY) => json_reply(200, deployment("a", json!({}))),
        (_, "/apis/apps/v1/namespaces/default/deployments/frozen") => {
            json_reply(200, deployment("a", json!({"metadata": {"name": "frozen"}, "spec": {"paused": true}})))
        }
        _ => not_found("deployments.apps \"nope\""),
    })
    .await;
    let (code, out, err) = fake.run(&["rollout", "restart", "deployment/web"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "deployment.apps/web restarted\n", ""));
    let sent = patches(&fake);
    assert_eq!(sent[0].headers.get("content-type").unwrap(), "application/strategic-merge-patch+json");
    let stamp =
        body(&sent[0])["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].clone();
    let stamp = stamp.as_str().unwrap();
    assert!(stamp.len() >= 20 && stamp.as_bytes()[10] == b'T', "{stamp}");

    let (code, out, _) = fake.run(&["rollout", "pause", "deploy/web"]).await;
    assert_eq!((code, out.as_str()), (0, "deployment.apps/web paused\n"));
    assert_eq!(body(&patches(&fake)[1]), json!({"spec": {"paused": true}}));

    let (code, out, err) = fake.run(&["rollout", "resume", "deploy/web"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: deployments.apps \"web\" is not paused\n"));

    let (code, _, err) = fake.run(&["rollout", "pause", "deploy/frozen"]).await;
    assert_eq!((code, err.as_str()), (1, "error: deployments.apps \"frozen\" is already paused\n"));

    let (code, _, err) = fake.run(&["rollout", "restart", "deploy/frozen"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: deployments.apps \"frozen\" can't restart paused deployment (run rollout resume first)\n")
    );

    let (code, out, _) = fake.run(&["rollout", "resume", "deploy", "frozen"]).await;
    assert_eq!((code, out.as_str()), (0, "deployment.apps/frozen resumed\n"));
    let sent = patches(&fake);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].uri, "/apis/apps/v1/namespaces/default/deployments/frozen");
    assert_eq!(body(&sent[2]), json!({"spec": {"paused": null}}));

    let (code, _, err) = fake.run(&["rollout", "pause"]).await;
    assert_eq!((code, err.as_str()), (1, "error: required resource not specified\n"));
}

#[tokio::test]
async fn set_image_patches_the_named_containers() {
    let fake = start(|s| match (s.method.as_str(), s.uri.as_str()) {
        (_, DEPLOY) => json_reply(200, deployment("nginx:1.25", json!({}))),
        ("GET", "/api/v1/namespaces/default/pods/p") => json_reply(
            200,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}}),
        ),
        ("PATCH", "/api/v1/namespaces/default/pods/p") => status(
            422,
            "Invalid",
            "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
        ),
        _ => not_found("deployments.apps \"nope\""),
    })
    .await;
    let (code, out, err) = fake.run(&["set", "image", "deployment/web", "web=nginx:1.27"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "deployment.apps/web image updated\n", ""));
    let sent = patches(&fake);
    assert_eq!(sent[0].uri, DEPLOY);
    assert_eq!(sent[0].headers.get("content-type").unwrap(), "application/strategic-merge-patch+json");
    assert_eq!(
        body(&sent[0]),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.27", "name": "web"}]}}}})
    );

    let (code, out, err) = fake.run(&["set", "image", "deploy", "web", "nope=x:1"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: unable to find container named \"nope\"\n"));

    // Already that image: kubectl sends nothing and prints nothing.
    let (code, out, err) = fake.run(&["set", "image", "deploy/web", "*=nginx:1.25"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    assert_eq!(patches(&fake).len(), 1);

    let (code, out, err) = fake.run(&["set", "image", "pod/p", "c=b"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: failed to patch image update to pod template: Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`\n"
    );
    assert_eq!(body(&patches(&fake)[1]), json!({"spec": {"containers": [{"image": "b", "name": "c"}]}}));

    let (code, _, err) = fake.run(&["set", "image", "deploy/web", "*=a", "web=b"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: all containers are already specified by *, but saw more than one container_name=container_image pairs\n")
    );
    let (code, _, err) = fake.run(&["set", "image", "deploy/web"]).await;
    assert_eq!((code, err.as_str()), (1, "error: at least one image update is required\n"));
}

#[tokio::test]
async fn annotate_sets_and_removes_annotations() {
    let fake = start(|s| match s.uri.as_str() {
        DEPLOY => json_reply(
            200,
            deployment("a", json!({"metadata": {"annotations": {"team": "a", "kubernetes.io/change-cause": "first"}}})),
        ),
        _ => not_found("deployments.apps \"nope\""),
    })
    .await;
    let (code, out, err) =
        fake.run(&["annotate", "deploy/web", "kubernetes.io/change-cause=image nginx:1.27 for CVE-1"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "deployment.apps/web annotated\n", ""));
    let sent = patches(&fake);
    assert_eq!(sent[0].headers.get("content-type").unwrap(), "application/merge-patch+json");
    assert_eq!(
        body(&sent[0]),
        json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "image nginx:1.27 for CVE-1"}}})
    );

    let (code, out, err) = fake.run(&["annotate", "deployment", "web", "team=b"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "error: --overwrite is false but found the following declared annotation(s): 'team' already has a value (a)\n")
    );

    let (code, out, _) = fake.run(&["annotate", "deploy/web", "team=b", "--overwrite", "--resource-version=10"]).await;
    assert_eq!((code, out.as_str()), (0, "deployment.apps/web annotated\n"));
    assert_eq!(body(&patches(&fake)[1]), json!({"metadata": {"annotations": {"team": "b"}, "resourceVersion": "10"}}));

    let (code, out, _) = fake.run(&["annotate", "deploy/web", "team-"]).await;
    assert_eq!((code, out.as_str()), (0, "deployment.apps/web annotated\n"));
    assert_eq!(body(&patches(&fake)[2]), json!({"metadata": {"annotations": {"team": null}}}));
}
