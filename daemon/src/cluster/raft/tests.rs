//! A Raft group in one process: each member a real store and log (SQLite files in a temp dir),
//! the network an in-memory transport that serialises every message (the wire format is
//! exercised) and can cut members off. Waits poll conditions with deadlines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::network::{Reply, Rpc, Transport, TransportError};
use super::*;
use crate::objects::meta;

/// Members by id; messages to or from a member in `cut` are lost.
#[derive(Default)]
struct Memory {
    servers: Mutex<HashMap<NodeId, Server>>,
    cut: Mutex<HashSet<NodeId>>,
}

impl Transport for Memory {
    fn send(&self, target: NodeId, _member: &Member, rpc: Rpc) -> BoxFuture<'_, Result<Reply, TransportError>> {
        Box::pin(async move {
            let server = self.servers.lock().unwrap().get(&target).cloned();
            let server = server.ok_or_else(|| TransportError::Unreachable(target, "not running".into()))?;
            if self.cut.lock().unwrap().contains(&target) {
                return Err(TransportError::Unreachable(target, "cut off".into()));
            }
            // Through the wire format, both ways.
            let rpc: Rpc = serde_json::from_slice(&serde_json::to_vec(&rpc).unwrap()).unwrap();
            let reply = server.serve(rpc).await;
            Ok(serde_json::from_slice(&serde_json::to_vec(&reply).unwrap()).unwrap())
        })
    }
}

/// A transport as seen from one member: a member that is cut off reaches nobody.
struct From {
    id: NodeId,
    net: Arc<Memory>,
}

impl Transport for From {
    fn send(&self, target: NodeId, member: &Member, rpc: Rpc) -> BoxFuture<'_, Result<Reply, TransportError>> {
        if self.net.cut.lock().unwrap().contains(&self.id) {
            return Box::pin(async move { Err(TransportError::Unreachable(target, "this member is cut off".into())) });
        }
        self.net.send(target, member, rpc)
    }
}

/// How long a wait may take on a loaded 2-core CI machine before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

fn fast() -> Timing {
    Timing { heartbeat: Duration::from_millis(50), election: (Duration::from_millis(300), Duration::from_millis(600)) }
}

struct Group {
    dir: tempfile::TempDir,
    net: Arc<Memory>,
    stores: BTreeMap<NodeId, Store>,
}

fn member(id: NodeId) -> Member {
    Member { name: format!("server-{id}"), addr: format!("10.0.0.{id}:6443") }
}

impl Group {
    fn new() -> Group {
        Group { dir: tempfile::tempdir().unwrap(), net: Arc::default(), stores: BTreeMap::new() }
    }

    /// Starts member `id` from its files (new or left by an earlier run).
    async fn start(&mut self, id: NodeId) -> Server {
        let dir = self.dir.path().join(id.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("state.db")).unwrap();
        let log = log::LogStore::open(&dir.join("raft.db")).unwrap();
        let transport = Arc::new(From { id, net: self.net.clone() });
        let server = Server::start(id, store.clone(), log, &dir.join("snapshots"), transport, fast()).await.unwrap();
        self.net.servers.lock().unwrap().insert(id, server.clone());
        self.stores.insert(id, store);
        server
    }

    async fn stop(&mut self, id: NodeId) {
        let server = self.net.servers.lock().unwrap().remove(&id).unwrap();
        server.raft.shutdown().await.unwrap();
        self.stores.remove(&id);
    }

    fn server(&self, id: NodeId) -> Server {
        self.net.servers.lock().unwrap()[&id].clone()
    }

    /// Waits until some running member not cut off is leader; returns it.
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let servers: Vec<Server> = self.net.servers.lock().unwrap().values().cloned().collect();
            let cut = self.net.cut.lock().unwrap().clone();
            for s in servers.iter().filter(|s| !cut.contains(&s.id)) {
                if s.raft.ensure_linearizable().await.is_ok() {
                    return s.id;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader was elected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running member's store holds `n` pods and one revision.
    async fn converged(&self, n: usize) -> u64 {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mut seen = Vec::new();
            for store in self.stores.values() {
                let (pods, revision) = store.list("pods", None).await.unwrap();
                seen.push((pods.len(), revision));
            }
            if seen.iter().all(|s| *s == (n, seen[0].1)) {
                return seen[0].1;
            }
            assert!(tokio::time::Instant::now() < deadline, "the stores did not converge on {n} pods: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn pod(name: &str) -> Command {
    Command::Create {
        resource: "pods".into(),
        object: json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}}),
    }
}

fn namespace() -> Command {
    Command::Create {
        resource: "namespaces".into(),
        object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "uid": "ns-default"}}),
    }
}

async fn three() -> Group {
    let mut g = Group::new();
    for id in 1..=3 {
        g.start(id).await;
    }
    g.server(1).bootstrap((1..=3).map(|id| (id, member(id))).collect()).await.unwrap();
    let leader = g.leader().await;
    g.server(leader).proposer().propose(namespace()).await.unwrap();
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_member_replicate_with_the_same_revisions() {
    let g = three().await;
    let leader = g.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let a = g.server(leader).proposer().propose(pod("a")).await.unwrap();
    // A write on a follower is forwarded, and acknowledged only once applied there too.
    let b = g.server(follower).proposer().propose(pod("b")).await.unwrap();
    assert_eq!(b.revision, a.revision + 1, "revisions are dense whoever wrote");
    assert!(
        g.stores[&follower].get("pods", "default", "b").await.unwrap().is_some(),
        "read-your-write on the follower"
    );
    // A rejection is the same answer everywhere.
    let dup = g.server(follower).proposer().propose(pod("a")).await.unwrap_err();
    assert!(matches!(dup, StoreError::Rejected(crate::store::Rejection::AlreadyExists { .. })), "{dup:?}");
    let revision = g.converged(2).await;
    for store in g.stores.values() {
        let got = store.get("pods", "default", "b").await.unwrap().unwrap();
        assert_eq!(meta::resource_version(&got), b.revision.to_string());
        assert_eq!(store.revision().await.unwrap(), revision);
    }
}

/// A follower's read barrier (read index) waits for everything the leader committed before it:
/// a follower that missed a write for a moment (cut off, shorter than an election timeout) has
/// it once the barrier returns — at once after it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_the_barrier_on_a_follower_sees_every_earlier_write() {
    let g = three().await;
    let leader = g.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for k in 0..5 {
        let name = format!("p{k}");
        g.net.cut.lock().unwrap().insert(follower);
        g.server(leader).proposer().propose(pod(&name)).await.unwrap();
        g.net.cut.lock().unwrap().remove(&follower);
        g.server(follower).proposer().barrier().await.unwrap();
        let seen = g.stores[&follower].get("pods", "default", &name).await.unwrap();
        assert!(seen.is_some(), "{name} missing after the barrier");
    }
    // On the leader it is a leadership check and nothing to wait for.
    g.server(leader).proposer().barrier().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_nothing_acknowledged_is_lost() {
    let mut g = three().await;
    let old = g.leader().await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        g.server(old).proposer().propose(pod(&name)).await.unwrap();
        acknowledged.push(name);
    }
    g.stop(old).await;
    let new = g.leader().await;
    assert_ne!(new, old);
    let survivor = (1..=3).find(|id| *id != old && *id != new).unwrap();
    for i in 0..5 {
        let name = format!("after-{i}");
        g.server(survivor).proposer().propose(pod(&name)).await.unwrap();
        acknowledged.push(name);
    }
    // The old leader comes back from its files and catches up; nothing doubled, nothing lost.
    g.start(old).await;
    g.converged(acknowledged.len()).await;
    for store in g.stores.values() {
        let (pods, _) = store.list("pods", None).await.unwrap();
        let names: Vec<&str> = pods.iter().map(meta::name).collect();
        for name in &acknowledged {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name} exactly once: {names:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_write_and_a_cut_member_catches_up() {
    let g = three().await;
    let leader = g.leader().await;
    let cut = (1..=3).find(|id| *id != leader).unwrap();
    g.net.cut.lock().unwrap().insert(cut);
    g.server(leader).proposer().propose(pod("while-cut")).await.unwrap();
    // The cut member holds no leader that can commit its write: it fails, changing nothing.
    let lonely = g.server(cut);
    let attempt = tokio::time::timeout(Duration::from_secs(30), lonely.proposer().propose(pod("lonely"))).await;
    assert!(matches!(attempt, Ok(Err(_))), "a write without a quorum fails: {attempt:?}");
    g.net.cut.lock().unwrap().clear();
    g.converged(1).await;
    assert!(g.stores[&cut].get("pods", "default", "lonely").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_is_sent_a_snapshot_file() {
    let mut g = three().await;
    let leader = g.leader().await;
    let behind = (1..=3).find(|id| *id != leader).unwrap();
    g.stop(behind).await;
    let proposer = g.server(leader).proposer();
    for i in 0..20 {
        proposer.propose(pod(&format!("p{i}"))).await.unwrap();
    }
    // Every running member snapshots and drops the log the absent member would need (so
    // whichever leads when it returns must send a snapshot).
    g.converged(20).await;
    for id in (1..=3).filter(|id| *id != behind) {
        let raft = &g.server(id).raft;
        raft.trigger().snapshot().await.unwrap();
        let last = raft.metrics().borrow().last_applied.unwrap().index;
        raft.wait(Some(DEADLINE)).metrics(|m| m.snapshot.is_some_and(|s| s.index >= last), "a snapshot").await.unwrap();
        raft.trigger().purge_log(last).await.unwrap();
        raft.wait(Some(DEADLINE))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "the log purged")
            .await
            .unwrap();
    }
    g.start(behind).await;
    g.converged(20).await;
    let snapshots = g.dir.path().join(behind.to_string()).join("snapshots");
    let files: Vec<_> =
        std::fs::read_dir(&snapshots).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    let m = g.server(behind).raft.metrics().borrow().clone();
    assert!(
        snapshots.join("snapshot.db").exists(),
        "the member was brought up to date by a snapshot file: {files:?} {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_data_dir_is_taken_over_by_raft_in_place() {
    let mut g = Group::new();
    let dir = g.dir.path().join("1");
    std::fs::create_dir_all(&dir).unwrap();
    {
        // Written by the local proposer, as an earlier release did: applied index 2.
        let store = Store::open(&dir.join("state.db")).unwrap();
        let local = Proposer::local(&store);
        local.propose(namespace()).await.unwrap();
        local.propose(pod("old")).await.unwrap();
        assert_eq!(store.applied_index().await.unwrap(), 2);
    }
    let server = g.start(1).await;
    server.bootstrap([(1, member(1))].into()).await.unwrap();
    g.leader().await;
    let before = g.stores[&1].revision().await.unwrap();
    // Raft's first entries are applied, not mistaken for the old log's.
    let new = server.proposer().propose(pod("new")).await.unwrap();
    assert_eq!(new.revision, before + 1);
    g.converged(2).await;
    // And a restart resumes from Raft's own bookkeeping.
    g.stop(1).await;
    let server = g.start(1).await;
    g.leader().await;
    server.proposer().propose(pod("after-restart")).await.unwrap();
    g.converged(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_quorum_is_reset_into_a_cluster_of_one() {
    let mut g = three().await;
    let leader = g.leader().await;
    let proposer = g.server(leader).proposer();
    for i in 0..3 {
        proposer.propose(pod(&format!("p{i}"))).await.unwrap();
    }
    let revision = g.converged(3).await;
    // Two servers are gone for good; the survivor alone has no quorum.
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    for id in (1..=3).filter(|id| *id != survivor) {
        g.stop(id).await;
    }
    let lonely = tokio::time::timeout(Duration::from_secs(30), g.server(survivor).proposer().propose(pod("x"))).await;
    assert!(matches!(lonely, Ok(Err(_))), "no quorum, no write: {lonely:?}");
    g.stop(survivor).await;

    let dir = g.dir.path().join(survivor.to_string());
    let store = Store::open(&dir.join("state.db")).unwrap();
    let kept = reset(&store, &dir).await.unwrap();
    drop(store);
    assert!(kept.join("raft.db").exists(), "the old log is kept, not deleted");
    let server = g.start(survivor).await;
    server.bootstrap([(survivor, member(survivor))].into()).await.unwrap();
    g.leader().await;
    let next = server.proposer().propose(pod("after-reset")).await.unwrap();
    assert_eq!(next.revision, revision + 1, "the state and its revisions go on");
    g.converged(4).await;
    assert!(g.stores[&survivor].get("pods", "default", "x").await.unwrap().is_none());
}
