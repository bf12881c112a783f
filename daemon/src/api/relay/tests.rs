//! The relay in one process: node `a`'s API (on a Unix socket) relays to node `b`'s API served
//! over mutual TLS on loopback with certificates of one test CA; both read one store. Node `c`
//! has a Node whose port refuses connections, node `d` none at all.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use futures::stream::BoxStream;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::node::frame;
use crate::cluster::authz::Principal;
use crate::cluster::identity::{Ca, Credentials, Identity, NodeKey, Role, SignRequest, Validity};
use crate::node_ops::{BoxFuture, Capacity, ExecStreams, LogOptions, NodeError, NodeOps, NodeUsage, PodUsage, Usage};
use crate::store::{Command, Proposer, Store};

#[test]
fn a_nodes_cluster_port_is_its_internal_ip_and_kubelet_port() {
    let node = |status: Value| json!({"metadata": {"name": "edge-1"}, "status": status});
    let addresses = json!([{"type": "Hostname", "address": "edge-1"}, {"type": "InternalIP", "address": "10.0.0.5"}, {"type": "InternalIP", "address": "10.0.0.6"}]);
    let ep = |status| endpoint(&node(status));
    assert_eq!(
        ep(json!({"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": 7443}}})),
        Ok("10.0.0.5:7443".parse().unwrap()),
        "the first InternalIP, the reported port"
    );
    assert_eq!(ep(json!({"addresses": addresses})), Ok("10.0.0.5:6443".parse().unwrap()), "6443 when none is reported");
    assert_eq!(
        ep(json!({"addresses": [{"type": "InternalIP", "address": "fd00::5"}]})),
        Ok("[fd00::5]:6443".parse().unwrap())
    );
    assert_eq!(
        ep(json!({"addresses": [{"type": "Hostname", "address": "edge-1"}]})),
        Err("node \"edge-1\" reports no InternalIP address".into())
    );
    assert_eq!(ep(json!({})), Err("node \"edge-1\" reports no InternalIP address".into()));
    assert_eq!(
        ep(json!({"addresses": [{"type": "InternalIP", "address": "edge-1.lan"}]})),
        Err("node \"edge-1\" reports the InternalIP \"edge-1.lan\", which is not an IP address".into())
    );
    for bad in [json!(0), json!(70000), json!("6443")] {
        let e = ep(json!({"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": bad}}}));
        assert!(e.as_ref().is_err_and(|e| e.contains("which is not a port")), "{bad}: {e:?}");
    }
}

#[test]
fn a_request_goes_on_only_to_another_node_and_only_once() {
    assert_eq!(destination("a", false, Some("b")), Some("b"));
    assert_eq!(destination("a", false, Some("a")), None, "this node's pods are served here");
    assert_eq!(destination("a", true, Some("b")), None, "a relayed request is never relayed again");
    assert_eq!(destination("a", false, None), None, "an unscheduled pod has no node to go to");
    assert_eq!(destination("a", false, Some("")), None);
    let mut headers = HeaderMap::new();
    assert!(!is_relayed(&headers));
    headers.insert("X-Skerry-Relayed", HeaderValue::from_static("1"));
    assert!(is_relayed(&headers));
}

/// A node's machinery that names itself in what it returns. Exec runs `cat`: its output is its
/// input, and it exits 3 once its input is closed.
struct Fake {
    name: &'static str,
}

fn unsupported<T>() -> Result<T, NodeError> {
    Err(NodeError::Internal("not in this fake".into()))
}

impl NodeOps for Fake {
    fn containerd_version(&self) -> BoxFuture<'_, Result<String, NodeError>> {
        Box::pin(async { unsupported() })
    }
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<Value>, NodeError>> {
        Box::pin(async { unsupported() })
    }
    fn remove_image(&self, _: String) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async { unsupported() })
    }
    fn import_image(&self, _: PathBuf) -> BoxFuture<'_, Result<Vec<Value>, NodeError>> {
        Box::pin(async { unsupported() })
    }
    fn pull_image(
        &self,
        _: String,
        _: Option<(String, String)>,
        _: tokio::sync::mpsc::UnboundedSender<Value>,
    ) -> BoxFuture<'_, Result<Value, NodeError>> {
        Box::pin(async { unsupported() })
    }
    fn logs(&self, pod: Value, o: LogOptions) -> BoxFuture<'_, Result<BoxStream<'static, Bytes>, NodeError>> {
        let line = Bytes::from(format!("{} from {}\n", crate::objects::meta::name(&pod), self.name));
        Box::pin(async move {
            let lines = futures::stream::iter([line]);
            // A followed log stays open after what there is.
            Ok(if o.follow { lines.chain(futures::stream::pending()).boxed() } else { lines.boxed() })
        })
    }
    fn exec(
        &self,
        _: Value,
        _: String,
        _: Vec<String>,
        _: bool,
        _: bool,
    ) -> BoxFuture<'_, Result<ExecStreams, NodeError>> {
        let (input, output) = tokio::io::duplex(1024);
        let closed = Arc::new(tokio::sync::Notify::new());
        let notify = closed.clone();
        Box::pin(async move {
            Ok(ExecStreams {
                stdin: Some(Box::new(input)),
                stdout: Box::new(output),
                stderr: None,
                resize: Box::new(|_, _| Box::pin(async {})),
                close_stdin: Box::new(move || {
                    let n = notify.clone();
                    Box::pin(async move { n.notify_one() })
                }),
                wait: Box::pin(async move {
                    closed.notified().await;
                    Ok(3)
                }),
            })
        })
    }
    fn pod_metrics(&self, pods: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<PodUsage>>, NodeError>> {
        let name = self.name;
        let out = pods
            .iter()
            .map(|p| {
                (p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(name)).then(|| PodUsage {
                    containers: vec![("c".into(), Usage { cpu_nanocores: 1_000_000, memory_bytes: 1 << 20 })],
                    timestamp: jiff::Timestamp::UNIX_EPOCH,
                    window: Duration::from_secs(10),
                })
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }
    fn node_metrics(&self) -> BoxFuture<'_, Result<Option<NodeUsage>, NodeError>> {
        let u = NodeUsage {
            usage: Usage { cpu_nanocores: 5_000_000, memory_bytes: 1 << 30 },
            timestamp: jiff::Timestamp::UNIX_EPOCH,
            window: Duration::from_secs(10),
        };
        Box::pin(async move { Ok(Some(u)) })
    }
    fn node_capacity(&self) -> BoxFuture<'_, Result<Capacity, NodeError>> {
        Box::pin(async { Ok(Capacity { cpus: 2, memory_bytes: 4 << 30 }) })
    }
}

fn credentials(ca: &Ca, name: &str) -> Arc<Live> {
    let key = NodeKey::generate().unwrap();
    let req = SignRequest {
        node_name: name.into(),
        addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        role: Role::Server,
        validity: Validity::node(jiff::Timestamp::now()),
    };
    let cert = ca.sign(&key.csr(name).unwrap(), &req).unwrap();
    Live::new(Credentials::new(ca.bundle_pem().to_string(), cert, key).unwrap()).unwrap()
}

fn state(store: &Store, proposer: &Proposer, name: &'static str, peers: Option<Arc<Peers>>) -> ApiState {
    ApiState {
        store: store.clone(),
        proposer: proposer.clone(),
        info: Arc::new(crate::api::ServerInfo {
            node_name: name.into(),
            socket: String::new(),
            containerd_socket: String::new(),
            containerd_namespace: String::new(),
            data_dir: String::new(),
            ca_hash: None,
            servers: Vec::new(),
        }),
        node: Arc::new(Fake { name }),
        services: Arc::new(crate::api::services::ServiceNet {
            cidr: ("10.96.0.0".parse().unwrap(), 12),
            dns_ip: "10.96.0.10".parse().unwrap(),
            node_ports: (30000, 32767),
        }),
        peers,
        shutdown: CancellationToken::new(),
    }
}

/// Serves `app` over mutual TLS with `creds` on a loopback port, as the cluster port does.
async fn serve_tls(app: Router, creds: &Arc<Live>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(creds.port_config().unwrap()));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                // As the cluster port: the peer's certificate is who asks.
                let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("a client certificate");
                let principal = Principal::Node(Identity::from_cert(cert).unwrap());
                let service = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(principal)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

fn node_object(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": format!("n-{name}"), "labels": {"site": name}},
           "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}})
}

/// Node `a` on a Unix socket (relaying), node `b` behind TLS, `c` refusing, `d` unknown.
async fn cluster() -> (tempfile::TempDir, PathBuf, u16) {
    let (store, proposer) = crate::store::test_store().await;
    let ca = Ca::create().unwrap();
    let b = serve_tls(crate::api::router(state(&store, &proposer, "b", None)), &credentials(&ca, "b")).await;
    // A port nothing listens on any more: connections are refused.
    let c = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    for (name, port) in [("b", b), ("c", c)] {
        proposer
            .propose(Command::Create { resource: resource::NODES.key(), object: node_object(name, port) })
            .await
            .unwrap();
    }
    for (name, node) in [("web-a", "a"), ("web-b", "b"), ("web-c", "c"), ("web-d", "d")] {
        proposer.propose(Command::Create { resource: resource::PODS.key(), object: pod(name, node) }).await.unwrap();
    }
    let peers = Arc::new(Peers::new("a".into(), &credentials(&ca, "a")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("a.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(crate::api::serve(listener, state(&store, &proposer, "a", Some(peers))));
    (dir, socket, c)
}

async fn send(socket: &std::path::Path, req: hyper::Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender.send_request(req).await.unwrap()
}

fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(path).header("host", "localhost").body(Full::new(Bytes::new())).unwrap()
}

async fn text(resp: hyper::Response<Incoming>) -> (u16, String) {
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

const LOG: &str = "/api/v1/namespaces/default/pods";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_the_pods_node_and_stream_back() {
    let (_dir, socket, c) = cluster().await;
    assert_eq!(text(send(&socket, get(&format!("{LOG}/web-a/log"))).await).await, (200, "web-a from a\n".into()));
    assert_eq!(text(send(&socket, get(&format!("{LOG}/web-b/log"))).await).await, (200, "web-b from b\n".into()));

    // A followed log streams: the first line arrives while the stream stays open.
    let resp = send(&socket, get(&format!("{LOG}/web-b/log?follow=true"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(20), body.frame()).await.expect("the first line in time");
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "web-b from b\n");
    let more = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(more.is_err(), "the followed stream is still open: {more:?}");

    // The marker: a relayed request is served where it arrives.
    let mut marked = get(&format!("{LOG}/web-b/log"));
    marked.headers_mut().insert(RELAYED_HEADER, HeaderValue::from_static("1"));
    assert_eq!(text(send(&socket, marked).await).await, (200, "web-b from a\n".into()));

    // Nodes that cannot be reached are a clear 503, not a hang.
    let (code, body) = text(send(&socket, get(&format!("{LOG}/web-c/log"))).await).await;
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, status["reason"].as_str()), (503, Some("ServiceUnavailable")), "{body}");
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("unable to reach node \"c\" (127.0.0.1:{c}): cannot connect: ")), "{message}");
    assert!(message.ends_with("; the node may be down"), "{message}");
    let (code, body) = text(send(&socket, get(&format!("{LOG}/web-d/log"))).await).await;
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, status["message"].as_str()),
        (
            503,
            Some("unable to reach node \"d\": there is no such Node (deleted, or not registered yet); the node may be down")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_spliced_both_ways_with_its_exit_code() {
    let (_dir, socket, _) = cluster().await;
    let exec = |query: &str| {
        hyper::Request::post(format!("{LOG}/web-b/exec?{query}"))
            .header("host", "localhost")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "skerry-exec/1")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // What the pod's node refuses comes back as it said it.
    let (code, body) = text(send(&socket, exec("stdin=true")).await).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("you must specify at least one command for the container"), "{body}");

    let resp = send(&socket, exec("command=cat&stdin=true&stdout=true")).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()[header::UPGRADE], "skerry-exec/1");
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    io.write_all(&frame::encode(frame::STDIN, b"hello\n")).await.unwrap();
    io.write_all(&frame::encode(frame::STDIN_EOF, b"")).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), io.read_to_end(&mut got)).await.expect("the session ends").unwrap();
    let mut want = frame::encode(frame::STDOUT, b"hello\n");
    want.extend(frame::encode(frame::EXIT, br#"{"exitCode":3}"#));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_gathered_from_every_node() {
    let (_dir, socket, _) = cluster().await;
    const V: &str = "/apis/metrics.k8s.io/v1beta1";
    let json_of = |resp: hyper::Response<Incoming>| async move {
        let warnings: Vec<String> =
            resp.headers().get_all(header::WARNING).iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let (code, body) = text(resp).await;
        (code, serde_json::from_str::<Value>(&body).unwrap(), warnings)
    };
    let names = |list: &Value| -> Vec<String> {
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };

    let (code, list, warnings) = json_of(send(&socket, get(&format!("{V}/namespaces/default/pods"))).await).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["web-a", "web-b"], "a's own pod and b's, not c's (unreachable) or d's (unknown)");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("299 - \"metrics of the pods on node \\\"c\\\" are missing: unable to reach node"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("there is no such Node"), "{warnings:?}");

    let (code, one, _) = json_of(send(&socket, get(&format!("{V}/namespaces/default/pods/web-b"))).await).await;
    assert_eq!(
        (code, one["kind"].as_str(), one["metadata"]["name"].as_str()),
        (200, Some("PodMetrics"), Some("web-b"))
    );
    let (code, status, _) = json_of(send(&socket, get(&format!("{V}/namespaces/default/pods/web-c"))).await).await;
    assert_eq!(code, 503, "{status}");

    let (code, list, warnings) = json_of(send(&socket, get(&format!("{V}/nodes"))).await).await;
    assert_eq!((code, names(&list)), (200, vec!["a".to_string(), "b".to_string()]), "{list}");
    assert_eq!(list["items"][1]["metadata"]["labels"], json!({"site": "b"}), "b's labels, from b");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("metrics of node \\\"c\\\" are missing"), "{warnings:?}");
    let (_, list, warnings) = json_of(send(&socket, get(&format!("{V}/nodes?labelSelector=site%3Db"))).await).await;
    assert_eq!((names(&list), warnings.len()), (vec!["b".to_string()], 0));

    let (code, one, _) = json_of(send(&socket, get(&format!("{V}/nodes/b"))).await).await;
    assert_eq!((code, one["kind"].as_str(), one["metadata"]["name"].as_str()), (200, Some("NodeMetrics"), Some("b")));
    let (code, status, _) = json_of(send(&socket, get(&format!("{V}/nodes/c"))).await).await;
    assert_eq!((code, status["reason"].as_str()), (503, Some("ServiceUnavailable")), "{status}");
    let (code, status, _) = json_of(send(&socket, get(&format!("{V}/nodes/d"))).await).await;
    assert_eq!((code, status["message"].as_str()), (404, Some("nodes \"d\" not found")));
}
