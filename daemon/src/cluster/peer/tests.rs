//! Raft over the real cluster port: three servers on loopback, mutual TLS with certificates of
//! one test CA; strangers and agents are refused.

use std::collections::BTreeMap;

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::cluster::identity::Ca;
use crate::cluster::raft::{log::LogStore, Timing};
use crate::store::{Command, Store};

fn credentials(ca: &Ca, name: &str, role: Role) -> Arc<Live> {
    Live::new(crate::cluster::identity::test_credentials(ca, name, role)).unwrap()
}

fn fast() -> Timing {
    Timing { heartbeat: Duration::from_millis(50), election: (Duration::from_millis(300), Duration::from_millis(600)) }
}

struct Node {
    server: Server,
    store: Store,
    member: Member,
}

async fn start(ca: &Ca, dir: &std::path::Path, id: NodeId, stop: &CancellationToken) -> Node {
    let creds = credentials(ca, &format!("server-{id}"), Role::Server);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let member = Member { name: format!("server-{id}"), addr: listener.local_addr().unwrap().to_string() };
    let dir = dir.join(id.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("state.db")).unwrap();
    let log = LogStore::open(&dir.join("raft.db")).unwrap();
    let transport = Arc::new(HttpTransport::new(&creds).unwrap());
    let server = Server::start(id, store.clone(), log, &dir.join("snapshots"), transport, fast()).await.unwrap();
    tokio::spawn({
        let (server, stop) = (server.clone(), stop.clone());
        async move { serve(listener, &creds, Port { raft: Some(server), authority: None, api: None }, stop).await.unwrap() }
    });
    Node { server, store, member }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_replicate_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create().unwrap();
    let stop = CancellationToken::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&ca, dir.path(), id, &stop).await);
    }
    let members: BTreeMap<NodeId, Member> = nodes.iter().map(|n| (n.server.id, n.member.clone())).collect();
    nodes[0].server.bootstrap(members).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(l) = nodes[0].server.raft.metrics().borrow().current_leader {
            break l;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader over TLS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = nodes.iter().find(|n| n.server.id != leader).unwrap();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "uid": "ns"}});
    follower.server.proposer().propose(Command::Create { resource: "namespaces".into(), object: ns }).await.unwrap();
    for node in &nodes {
        node.server
            .raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(follower.server.raft.metrics().borrow().last_applied.map(|l| l.index), "replicated")
            .await
            .unwrap();
        assert!(node.store.get("namespaces", "", "default").await.unwrap().is_some());
    }

    // An agent's certificate of the same cluster may not speak Raft; a stranger's is refused.
    let target = &nodes[0];
    let vote = || Rpc::Vote(openraft::raft::VoteRequest::new(openraft::Vote::new(99, 99), None));
    let agent = HttpTransport::new(&credentials(&ca, "edge-1", Role::Agent)).unwrap();
    let e = agent.send(target.server.id, &target.member, vote()).await.unwrap_err();
    assert!(e.to_string().contains("403") && e.to_string().contains("only servers may"), "{e}");
    let stranger = HttpTransport::new(&credentials(&Ca::create().unwrap(), "server-9", Role::Server)).unwrap();
    let e = stranger.send(target.server.id, &target.member, vote()).await.unwrap_err();
    assert!(matches!(e, TransportError::Unreachable(..)), "{e}");
    stop.cancel();
    for node in nodes {
        node.server.raft.shutdown().await.unwrap();
    }
}
