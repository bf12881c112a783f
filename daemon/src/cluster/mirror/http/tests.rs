//! The HTTP source and the remote proposer against the real API router served over mutual TLS
//! on 127.0.0.1 (the real cluster port), with certificates of one test CA.

use crate::cluster::identity::Credentials;

use axum::http::StatusCode as AxumStatus;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cluster::identity::{Ca, Role};
use crate::cluster::mirror::{self, streams};
use crate::objects::{meta, resource};
use crate::store::{Proposer, Store};

fn credentials(ca: &Ca, name: &str, role: Role) -> Credentials {
    crate::cluster::identity::test_credentials(ca, name, role)
}

/// Serves `router` over mutual TLS on 127.0.0.1 until `stop`; returns its URL.
async fn serve_tls(router: axum::Router, creds: &Credentials, stop: &CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(creds.server_config().unwrap()));
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let (acceptor, router, stop) = (acceptor.clone(), router.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    url
}

/// A server: the real API over a store with the built-in namespaces, plus the propose stand-in.
struct TestServer {
    store: Store,
    proposer: Proposer,
    url: String,
}

async fn server(ca: &Ca, stop: &CancellationToken) -> TestServer {
    let (store, proposer) = crate::store::test_store().await;
    let mut state = crate::api::node::tests::test_state(store.clone(), proposer.clone());
    state.shutdown = stop.clone();
    // The real cluster port: the API (with its propose endpoint) for peers with a certificate.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let port = crate::cluster::peer::Port { raft: None, authority: None, api: Some(crate::api::router(state)) };
    let live = crate::cluster::renew::Live::new(credentials(ca, "server-1", Role::Server)).unwrap();
    let stop = stop.clone();
    tokio::spawn(async move { crate::cluster::peer::serve(listener, &live, port, stop).await.unwrap() });
    TestServer { store, proposer, url }
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("https://{}", listener.local_addr().unwrap())
}

fn quick() -> Timeouts {
    Timeouts { connect: Duration::from_secs(5), request: Duration::from_secs(10), watch: Duration::from_secs(60) }
}

fn servers(urls: Vec<String>, creds: &Credentials) -> Arc<Servers> {
    Arc::new(Servers::new(urls, creds.client_config().unwrap(), quick()).unwrap())
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
}

async fn create(proposer: &Proposer, resource: &str, object: Value) -> Value {
    proposer.propose(Command::Create { resource: resource.into(), object }).await.unwrap().object
}

async fn next_event(events: &mut Events) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event")
        .expect("the watch goes on")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_lists_watches_and_gets_through_the_next_server_when_one_is_down() {
    let ca = Ca::create().unwrap();
    let stop = CancellationToken::new();
    let srv = server(&ca, &stop).await;
    let a = create(&srv.proposer, "pods", pod("a", "n1")).await;
    create(&srv.proposer, "pods", pod("b", "n2")).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}, "data": {"k": "dg=="}});
    let secret = create(&srv.proposer, "secrets", secret).await;
    let agent = credentials(&ca, "n1", Role::Agent);
    let source = HttpSource::new(servers(vec![dead_url().await, srv.url.clone()], &agent));
    let pods = &streams("n1")[0];
    assert_eq!(pods.id, "pods");

    let listed = source.list(pods).await.unwrap();
    assert_eq!(listed.items.as_slice(), std::slice::from_ref(&a), "only the node's pods, verbatim");
    assert_eq!(listed.resource_version, srv.store.revision().await.unwrap());

    let mut events = source.watch(pods, listed.resource_version).await.unwrap();
    let c = create(&srv.proposer, "pods", pod("c", "n1")).await;
    create(&srv.proposer, "pods", pod("d", "n2")).await;
    srv.proposer.propose(Command::delete_of("pods", &a)).await.unwrap();
    assert_eq!(next_event(&mut events).await, WatchEvent::Added(c));
    match next_event(&mut events).await {
        WatchEvent::Deleted(o) => {
            assert_eq!(meta::name(&o), "a");
            assert_eq!(meta::resource_version(&o), srv.store.revision().await.unwrap().to_string());
        }
        other => panic!("{other:?}"),
    }

    // The Node authorizer lets the node read only Secrets its pods use.
    let e = source.get(&resource::SECRETS, "default", "s").await.unwrap_err();
    assert!(e.to_string().contains("no relationship found between node 'n1' and this object"), "{e}");
    let mut user = pod("user", "n1");
    user["spec"]["volumes"] =
        json!([{"name": "s", "secret": {"secretName": "s"}}, {"name": "n", "secret": {"secretName": "nope"}}]);
    create(&srv.proposer, "pods", user).await;
    assert_eq!(source.get(&resource::SECRETS, "default", "s").await.unwrap(), Some(secret));
    assert_eq!(source.get(&resource::SECRETS, "default", "nope").await.unwrap(), None);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "uid": "n2"}});
    let node = create(&srv.proposer, "nodes", node).await;
    assert_eq!(source.get(&resource::NODES, "", "n2").await.unwrap(), Some(node));

    // Nothing reachable: a clear error naming each server.
    let (dead1, dead2) = (dead_url().await, dead_url().await);
    let nowhere = HttpSource::new(servers(vec![dead1.clone(), dead2.clone()], &agent));
    match nowhere.list(pods).await {
        Err(SourceError::Unreachable(why)) => assert!(why.contains(&dead1) && why.contains(&dead2), "{why}"),
        other => panic!("{other:?}"),
    }
    // A certificate of another cluster is refused at the handshake.
    let stranger = credentials(&Ca::create().unwrap(), "n1", Role::Agent);
    let refused = HttpSource::new(servers(vec![srv.url.clone()], &stranger));
    assert!(matches!(refused.list(pods).await, Err(SourceError::Unreachable(_))));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_runs_over_the_http_source() {
    let ca = Ca::create().unwrap();
    let stop = CancellationToken::new();
    let srv = server(&ca, &stop).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}});
    create(&srv.proposer, "secrets", secret).await;
    let mut web = pod("web", "n1");
    web["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "s"}}]);
    create(&srv.proposer, "pods", web).await;
    create(&srv.proposer, "pods", pod("other", "n2")).await;

    let agent = credentials(&ca, "n1", Role::Agent);
    let source: Arc<dyn mirror::Source> = Arc::new(HttpSource::new(servers(vec![srv.url.clone()], &agent)));
    let local = Store::in_memory().unwrap();
    let cancel = CancellationToken::new();
    let options =
        mirror::Options { backoff: (Duration::from_millis(10), Duration::from_millis(200)), ..Default::default() };
    let task = tokio::spawn(mirror::run_with(local.clone(), source, "n1".into(), options, cancel.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pods = local.list("pods", None).await.unwrap().0;
        let secrets = local.list("secrets", None).await.unwrap().0;
        if pods.len() == 1 && secrets.len() == 1 && mirror::synced(&local, "n1").await.unwrap() {
            assert_eq!(meta::name(&pods[0]), "web");
            assert_eq!(Some(&pods[0]), srv.store.get("pods", "default", "web").await.unwrap().as_ref());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the mirror did not sync over HTTP: {pods:?} {secrets:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), task).await.expect("the mirror stops").unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_proposer_writes_through_a_server_and_keeps_its_answers() {
    let ca = Ca::create().unwrap();
    let stop = CancellationToken::new();
    let srv = server(&ca, &stop).await;
    let a = create(&srv.proposer, "pods", pod("a", "n1")).await;
    // A server without a leader: 503 to everything.
    let no_leader = axum::Router::new().fallback(|| async { (AxumStatus::SERVICE_UNAVAILABLE, "no Raft leader") });
    let sick = serve_tls(no_leader, &credentials(&ca, "server-2", Role::Server), &stop).await;
    let agent = credentials(&ca, "n1", Role::Agent);
    let remote =
        Proposer::new(RemoteProposer::new(servers(vec![dead_url().await, sick.clone(), srv.url.clone()], &agent)));

    let status = Command::UpdateStatus {
        resource: "pods".into(),
        namespace: "default".into(),
        name: "a".into(),
        uid: Some(meta::uid(&a).into()),
        resource_version: Some(meta::resource_version(&a).into()),
        status: json!({"phase": "Running"}),
    };
    let applied = remote.propose(status.clone()).await.unwrap();
    assert_eq!(applied.revision, srv.store.revision().await.unwrap(), "the server's revision");
    assert_eq!(srv.store.get("pods", "default", "a").await.unwrap().unwrap()["status"]["phase"], "Running");

    // The command's answer comes back as the same rejection.
    match remote.propose(status).await {
        Err(StoreError::Rejected(Rejection::Conflict { name, .. })) => assert_eq!(name, "a"),
        other => panic!("{other:?}"),
    }
    // 403: the Status's message, as a Forbidden rejection.
    match remote.propose(Command::Create { resource: "pods".into(), object: pod("new", "n1") }).await {
        Err(StoreError::Rejected(Rejection::Forbidden { message })) => {
            assert!(message.contains("User \"system:node:n1\" cannot create resource \"pods\""), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // Only unreachable or sick servers: an error that names them, and nothing applied.
    let dead = dead_url().await;
    let nowhere = Proposer::new(RemoteProposer::new(servers(vec![dead.clone(), sick.clone()], &agent)));
    let before = srv.store.revision().await.unwrap();
    let e = nowhere.propose(Command::delete_of("pods", &a)).await.unwrap_err();
    let message = e.to_string();
    assert!(message.contains("servers are unreachable") && message.contains(&dead), "{message}");
    assert!(message.contains("503") && message.contains("no Raft leader"), "{message}");
    assert_eq!(srv.store.revision().await.unwrap(), before);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_not_sent_to_another_server() {
    let ca = Ca::create().unwrap();
    let stop = CancellationToken::new();
    let srv = server(&ca, &stop).await;
    let a = create(&srv.proposer, "pods", pod("a", "n1")).await;
    // A server that takes the write and never answers.
    let silent = axum::Router::new().route(PROPOSE_PATH, axum::routing::post(std::future::pending::<String>));
    let silent = serve_tls(silent, &credentials(&ca, "server-2", Role::Server), &stop).await;
    let agent = credentials(&ca, "n1", Role::Agent);
    let timeouts = Timeouts { request: Duration::from_millis(300), ..quick() };
    let both = Arc::new(Servers::new(vec![silent, srv.url.clone()], agent.client_config().unwrap(), timeouts).unwrap());
    let remote = Proposer::new(RemoteProposer::new(both));
    let before = srv.store.revision().await.unwrap();
    let e = remote.propose(Command::delete_of("pods", &a)).await.unwrap_err();
    assert!(e.to_string().contains("may or may not have been applied"), "{e}");
    assert_eq!(srv.store.revision().await.unwrap(), before, "not sent again to the next server");
    assert!(srv.store.get("pods", "default", "a").await.unwrap().is_some());
    stop.cancel();
}

#[test]
fn watch_lines_parse_as_the_api_writes_them() {
    let rt = resource::PODS;
    let line = br#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (9)"}}"#;
    match parse_event(line, &rt).unwrap() {
        Some(WatchEvent::Error(status)) => assert_eq!(status["code"], 410),
        other => panic!("{other:?}"),
    }
    assert_eq!(parse_event(b"  ", &rt).unwrap(), None);
    assert_eq!(
        parse_event(br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"5"}}}"#, &rt).unwrap(),
        None
    );
    // An object from a list or event without kind and apiVersion gets them.
    match parse_event(br#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#, &rt).unwrap() {
        Some(WatchEvent::Added(o)) => {
            assert_eq!((o["kind"].as_str(), o["apiVersion"].as_str()), (Some("Pod"), Some("v1")))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse_event(b"{not json", &rt), Err(SourceError::Malformed(_))));
    assert!(matches!(parse_event(br#"{"type":"ADDED"}"#, &rt), Err(SourceError::Malformed(_))));
    assert!(matches!(parse_event(br#"{"type":"RENAMED","object":{}}"#, &rt), Err(SourceError::Malformed(_))));
    assert!(matches!(refused(StatusCode::GONE, b"{\"message\":\"old\"}"), SourceError::Expired(m) if m == "old"));
    assert!(Servers::new(
        vec!["http://x:1".into()],
        credentials(&Ca::create().unwrap(), "n1", Role::Agent).client_config().unwrap(),
        quick()
    )
    .is_err());
}
