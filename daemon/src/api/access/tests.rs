//! The API's authorization through the real router, with the principal a listener would attach.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::Extension;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::cluster::authz::Principal;
use crate::cluster::identity::{Identity, Role};
use crate::objects::resource;
use crate::store::{Command, Proposer, Store};

use super::super::node::tests::test_state;
use super::super::router;

fn agent(name: &str) -> Principal {
    Principal::Node(Identity { node_name: name.into(), role: Role::Agent })
}

fn pod(name: &str, node: Option<&str>, secret: &str) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {
            "containers": [{"name": "app", "image": "nginx",
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": secret, "key": "p"}}}]}],
            "volumes": [{"name": "conf", "configMap": {"name": format!("{name}-config")}}],
        },
        "status": {"phase": "Running"},
    });
    if let Some(node) = node {
        p["spec"]["nodeName"] = json!(node);
    }
    p
}

fn named(kind: &str, name: &str, namespace: Option<&str>) -> Value {
    let mut o = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}});
    if let Some(ns) = namespace {
        o["metadata"]["namespace"] = json!(ns);
    }
    o
}

async fn create(proposer: &Proposer, rt: &resource::ResourceType, object: Value) {
    proposer.propose(Command::Create { resource: rt.key(), object }).await.unwrap();
}

/// Nodes edge-1 and edge-2; `default/web` on edge-1 uses Secret `db-pass` and ConfigMap
/// `web-config`; `default/other` on edge-2 uses `other-pass`; `default/pending` is unbound and
/// uses `pending-pass`; Secret `unused` is used by no pod.
async fn cluster() -> (Store, Proposer) {
    let (store, proposer) = crate::store::test_store().await;
    for n in ["edge-1", "edge-2"] {
        create(&proposer, &resource::NODES, named("Node", n, None)).await;
    }
    for s in ["db-pass", "other-pass", "pending-pass", "unused"] {
        create(&proposer, &resource::SECRETS, named("Secret", s, Some("default"))).await;
    }
    create(&proposer, &resource::CONFIG_MAPS, named("ConfigMap", "web-config", Some("default"))).await;
    create(&proposer, &resource::PODS, pod("web", Some("edge-1"), "db-pass")).await;
    create(&proposer, &resource::PODS, pod("other", Some("edge-2"), "other-pass")).await;
    create(&proposer, &resource::PODS, pod("pending", None, "pending-pass")).await;
    (store, proposer)
}

/// The router served on a socket in a temp dir, each request carrying `principal` (none when
/// `None`), as a listener attaches it.
struct Api {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Api {
    fn serve(store: &Store, proposer: &Proposer, principal: Option<Principal>) -> Api {
        let state = test_state(store.clone(), proposer.clone());
        let app = match principal {
            Some(p) => router(state).layer(Extension(p)),
            None => router(state),
        };
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Api { _dir: dir, socket }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", content_type)
            .body(body)
            .unwrap();
        send.send_request(req).await.unwrap()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let content_type = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        let resp = self.send(method, path, content_type, body).await;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn propose(&self, command: Command) -> (u16, Value) {
        self.call("POST", super::PROPOSE_PATH, Some(serde_json::to_value(command).unwrap())).await
    }
}

fn names(list: &Value) -> Vec<&str> {
    list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect()
}

/// Asserts a 403 Forbidden Status with `message`.
#[track_caller]
fn assert_forbidden((code, status): &(u16, Value), message: &str) {
    assert_eq!(*code, 403, "{status}");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["reason"], "Forbidden", "{status}");
    assert_eq!(status["code"], 403, "{status}");
    assert_eq!(status["message"], message, "{status}");
}

const SECRETS: &str = "/api/v1/namespaces/default/secrets";

#[tokio::test]
async fn an_agent_reads_only_the_secrets_its_pods_use() {
    let (store, proposer) = cluster().await;
    let edge1 = Api::serve(&store, &proposer, Some(agent("edge-1")));

    let (code, secret) = edge1.get(&format!("{SECRETS}/db-pass")).await;
    assert_eq!((code, secret["metadata"]["name"].as_str()), (200, Some("db-pass")), "{secret}");
    let (code, _) = edge1.get("/api/v1/namespaces/default/configmaps/web-config").await;
    assert_eq!(code, 200);

    let denied = edge1.get(&format!("{SECRETS}/unused")).await;
    assert_forbidden(
        &denied,
        "secrets \"unused\" is forbidden: User \"system:node:edge-1\" cannot get resource \"secrets\" in API group \"\" \
         in the namespace \"default\": no relationship found between node 'edge-1' and this object",
    );
    assert_eq!(denied.1["details"], json!({"name": "unused", "kind": "secrets"}));
    // Another node's pod's Secret, an unbound pod's, and one of the same name elsewhere.
    for path in [
        format!("{SECRETS}/other-pass"),
        format!("{SECRETS}/pending-pass"),
        "/api/v1/namespaces/kube-system/secrets/db-pass".into(),
    ] {
        assert_eq!(edge1.get(&path).await.0, 403, "{path}");
    }

    // Lists and watches must name one Secret its pods use.
    assert_forbidden(
        &edge1.get(SECRETS).await,
        "secrets is forbidden: User \"system:node:edge-1\" cannot list resource \"secrets\" in API group \"\" in the \
         namespace \"default\": node 'edge-1' can only read individual secrets that its pods use, not list them",
    );
    let (code, list) = edge1.get(&format!("{SECRETS}?fieldSelector=metadata.name%3Ddb-pass")).await;
    assert_eq!((code, names(&list)), (200, vec!["db-pass"]), "{list}");
    let (code, _) = edge1.get(&format!("{SECRETS}?fieldSelector=metadata.name%3Dunused&watch=1")).await;
    assert_eq!(code, 403);
    assert_eq!(
        edge1.get("/api/v1/secrets?fieldSelector=metadata.name%3Ddb-pass").await.0,
        403,
        "a namespace is needed"
    );
    assert_eq!(edge1.get(&format!("{SECRETS}?fieldSelector=metadata.name!%3Ddb-pass")).await.0, 403);

    // Nothing is cached: once a pod of edge-1 uses `unused`, edge-1 may read it.
    create(&proposer, &resource::PODS, pod("late", Some("edge-1"), "unused")).await;
    assert_eq!(edge1.get(&format!("{SECRETS}/unused")).await.0, 200);
    let (code, _) = edge1.call("DELETE", &format!("{SECRETS}/db-pass"), None).await;
    assert_eq!(code, 403, "reading is not writing");

    // A server's certificate and the admin read anything.
    for principal in [Principal::Node(Identity { node_name: "s1".into(), role: Role::Server }), Principal::Admin] {
        let api = Api::serve(&store, &proposer, Some(principal));
        assert_eq!(api.get(&format!("{SECRETS}/other-pass")).await.0, 200);
        assert_eq!(names(&api.get(SECRETS).await.1), ["db-pass", "other-pass", "pending-pass", "unused"]);
    }
}

#[tokio::test]
async fn an_agent_cannot_create_pods_or_change_another_node() {
    let (store, proposer) = cluster().await;
    let edge1 = Api::serve(&store, &proposer, Some(agent("edge-1")));

    let (code, status) =
        edge1.call("POST", "/api/v1/namespaces/default/pods", Some(pod("evil", Some("edge-1"), "unused"))).await;
    assert_forbidden(
        &(code, status),
        "pods is forbidden: User \"system:node:edge-1\" cannot create resource \"pods\" in API group \"\" in the \
         namespace \"default\": node 'edge-1' cannot create pods; pods are created through a server",
    );
    assert_eq!(store.get("pods", "default", "evil").await.unwrap(), None);
    assert_eq!(
        edge1.call("PUT", "/api/v1/namespaces/default/pods/web", Some(pod("web", Some("edge-1"), "x"))).await.0,
        403
    );
    assert_eq!(edge1.call("DELETE", "/api/v1/namespaces/default/pods/other", None).await.0, 403);

    // Another node: neither the object nor its status.
    let node =
        |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"x": "y"}}});
    assert_forbidden(
        &edge1.call("PUT", "/api/v1/nodes/edge-2", Some(node("edge-2"))).await,
        "nodes \"edge-2\" is forbidden: User \"system:node:edge-1\" cannot update resource \"nodes\" in API group \"\" \
         at the cluster scope: node 'edge-1' can only change its own Node object, not 'edge-2'",
    );
    let (code, _) = edge1.call("PUT", "/api/v1/nodes/edge-2/status", Some(node("edge-2"))).await;
    assert_eq!(code, 403);
    let (code, _) = edge1.call("PATCH", "/api/v1/nodes/edge-2", Some(json!({"spec": {"unschedulable": true}}))).await;
    assert_eq!(code, 403);
    assert_eq!(edge1.call("DELETE", "/api/v1/nodes/edge-2", None).await.0, 403);
    let stored = store.get("nodes", "", "edge-2").await.unwrap().unwrap();
    assert_eq!(stored["metadata"].get("labels"), None, "edge-2 is unchanged: {stored}");

    // Its own: yes.
    let (code, own) =
        edge1.call("PATCH", "/api/v1/nodes/edge-1", Some(json!({"metadata": {"labels": {"site": "a"}}}))).await;
    assert_eq!((code, own["metadata"]["labels"]["site"].as_str()), (200, Some("a")), "{own}");
    let mut status = node("edge-1");
    status["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    let (code, own) = edge1.call("PUT", "/api/v1/nodes/edge-1/status", Some(status)).await;
    assert_eq!((code, own["status"]["conditions"][0]["type"].as_str()), (200, Some("Ready")), "{own}");

    // Reads of what the proxy and DNS need; version and discovery; nothing node-local.
    assert_eq!(edge1.get("/api/v1/nodes").await.0, 200);
    assert_eq!(edge1.get("/api/v1/services").await.0, 200);
    assert_eq!(edge1.get("/version").await.0, 200);
    assert_eq!(edge1.get("/skerry/v1/resources").await.0, 200);
    assert_eq!(edge1.get("/apis/apps/v1/deployments").await.0, 403);
    assert_forbidden(
        &edge1.get("/skerry/v1/images").await,
        "forbidden: User \"system:node:edge-1\" cannot get path \"/skerry/v1/images\"",
    );
    assert_eq!(edge1.get("/skerry/v1/info").await.0, 403);
    assert_eq!(edge1.get("/apis/metrics.k8s.io/v1beta1/pods").await.0, 403);
    assert_eq!(edge1.get("/apis/metrics.k8s.io").await.0, 403);
    assert_eq!(edge1.get("/no/such/path").await.0, 403);
    assert_eq!(edge1.call("POST", "/api/v1/namespaces/default/pods/web/exec?command=sh", None).await.0, 403);
    assert_eq!(edge1.get("/api/v1/namespaces/default/pods/web/log").await.0, 403);
}

#[tokio::test]
async fn an_agents_pod_lists_and_watches_show_its_node_only() {
    let (store, proposer) = cluster().await;
    let edge1 = Api::serve(&store, &proposer, Some(agent("edge-1")));

    let (code, list) = edge1.get("/api/v1/pods").await;
    assert_eq!((code, names(&list)), (200, vec!["web"]), "{list}");
    let (_, list) = edge1.get("/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dedge-1").await;
    assert_eq!(names(&list), ["web"]);
    let (_, list) = edge1.get("/api/v1/namespaces/default/pods?labelSelector=app").await;
    assert_eq!(names(&list), Vec::<&str>::new(), "a label selector still applies");
    let (code, _) = edge1.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-2").await;
    assert_eq!(code, 403, "another node's pods");
    let (code, _) = edge1.get("/api/v1/pods?fieldSelector=spec.nodeName!%3Dedge-1").await;
    assert_eq!(code, 403);
    let (code, list) = edge1.get("/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb").await;
    assert_eq!((code, names(&list)), (200, vec!["web"]));
    assert_eq!(edge1.get("/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dother").await.0, 403);
    assert_eq!(edge1.get("/api/v1/namespaces/default/pods/web").await.0, 200);
    assert_eq!(edge1.get("/api/v1/namespaces/default/pods/other").await.0, 403);

    // A watch: the current pods of edge-1, then only edge-1's changes.
    let resp = edge1.send("GET", "/api/v1/pods?watch=1", "application/json", None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    let mut events = Vec::new();
    let mut buffer = Vec::new();
    let read = async {
        create(&proposer, &resource::PODS, pod("there", Some("edge-2"), "x")).await;
        create(&proposer, &resource::PODS, pod("here", Some("edge-1"), "x")).await;
        while events.len() < 2 {
            let frame = body.frame().await.expect("the watch goes on").unwrap();
            buffer.extend_from_slice(frame.data_ref().map(|d| d.as_ref()).unwrap_or_default());
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).unwrap();
                events.push(format!(
                    "{} {}",
                    event["type"].as_str().unwrap(),
                    event["object"]["metadata"]["name"].as_str().unwrap()
                ));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("two events within the deadline");
    assert_eq!(events, ["ADDED web", "ADDED here"]);
}

#[tokio::test]
async fn the_propose_endpoint_authorizes_each_command() {
    let (store, proposer) = cluster().await;
    let edge1 = Api::serve(&store, &proposer, Some(agent("edge-1")));
    let status_of = |name: &str| Command::UpdateStatus {
        resource: "pods".into(),
        namespace: "default".into(),
        name: name.into(),
        uid: None,
        resource_version: None,
        status: json!({"phase": "Succeeded"}),
    };

    // Its own pod's status: applied, the answer in a 200.
    let (code, answer) = edge1.propose(status_of("web")).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["Ok"]["object"]["status"]["phase"], "Succeeded", "{answer}");
    assert!(answer["Ok"]["revision"].as_u64().is_some(), "{answer}");
    // Another node's pod, an unbound pod: refused, nothing written.
    assert_forbidden(
        &edge1.propose(status_of("other")).await,
        "pods \"other\" is forbidden: User \"system:node:edge-1\" cannot update resource \"pods/status\" in API group \
         \"\" in the namespace \"default\": no relationship found between node 'edge-1' and this object",
    );
    assert_eq!(edge1.propose(status_of("pending")).await.0, 403);
    let other = store.get("pods", "default", "other").await.unwrap().unwrap();
    assert_eq!(other["status"]["phase"], "Running");

    // No pods, no spec changes, no binding; events yes, and a rejection is an answer.
    let (code, _) =
        edge1.propose(Command::Create { resource: "pods".into(), object: pod("evil", Some("edge-1"), "unused") }).await;
    assert_eq!(code, 403);
    assert_eq!(store.get("pods", "default", "evil").await.unwrap(), None);
    let (code, _) =
        edge1.propose(Command::Update { resource: "pods".into(), object: pod("web", Some("edge-1"), "unused") }).await;
    assert_eq!(code, 403);
    let bind = Command::Bind {
        namespace: "default".into(),
        name: "pending".into(),
        uid: "uid-pending".into(),
        node: "edge-1".into(),
        at: "2024-01-01T00:00:00Z".into(),
    };
    assert_eq!(edge1.propose(bind.clone()).await.0, 403);
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started"});
    let (code, answer) = edge1.propose(Command::Create { resource: "events".into(), object: event.clone() }).await;
    assert_eq!((code, answer["Ok"]["object"]["reason"].as_str()), (200, Some("Started")), "{answer}");
    let (code, answer) = edge1.propose(Command::Create { resource: "events".into(), object: event }).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["Err"], json!({"AlreadyExists": {"resource": "events", "name": "web.1"}}), "{answer}");

    // Its own Node, not another's.
    let labelled =
        |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"a": "b"}}});
    assert_eq!(edge1.propose(Command::Update { resource: "nodes".into(), object: labelled("edge-1") }).await.0, 200);
    assert_eq!(edge1.propose(Command::Update { resource: "nodes".into(), object: labelled("edge-2") }).await.0, 403);
    assert_eq!(edge1.propose(Command::delete_of("nodes", &labelled("edge-1"))).await.0, 403);

    // Its pods may go (a terminated pod's final removal), not others'.
    let (code, answer) = edge1
        .propose(Command::Delete {
            resource: "pods".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: Some("uid-web".into()),
        })
        .await;
    assert_eq!((code, answer["Ok"]["object"]["metadata"]["name"].as_str()), (200, Some("web")), "{answer}");
    assert_eq!(
        edge1
            .propose(Command::Delete {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "other".into(),
                uid: None
            })
            .await
            .0,
        403
    );

    // The admin may bind; a malformed body is a 400.
    let admin = Api::serve(&store, &proposer, Some(Principal::Admin));
    let (code, answer) = admin.propose(bind).await;
    assert_eq!((code, answer["Ok"]["object"]["spec"]["nodeName"].as_str()), (200, Some("edge-1")), "{answer}");
    let (code, status) = admin.call("POST", super::PROPOSE_PATH, Some(json!({"Launch": {}}))).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
}

#[tokio::test]
async fn a_request_without_a_principal_is_refused() {
    let (store, proposer) = cluster().await;
    let nobody = Api::serve(&store, &proposer, None);
    for path in ["/version", "/api/v1/pods", "/api/v1/namespaces/default/secrets/db-pass", "/skerry/v1/info"] {
        let (code, status) = nobody.get(path).await;
        assert_eq!((code, status["reason"].as_str()), (403, Some("Forbidden")), "{path}: {status}");
        assert!(status["message"].as_str().unwrap().contains("no identity"), "{status}");
    }
    assert_eq!(
        nobody.propose(Command::delete_of("secrets", &named("Secret", "db-pass", Some("default")))).await.0,
        403
    );
    assert!(store.get("secrets", "default", "db-pass").await.unwrap().is_some());

    // The Unix socket's server attaches the admin.
    let (_dir, socket) = super::super::node::tests::serve_store(store, proposer).await;
    let admin = Api { _dir: tempfile::tempdir().unwrap(), socket };
    let (code, list) = admin.get(SECRETS).await;
    assert_eq!((code, names(&list).len()), (200, 4), "{list}");
}
