//! Wires the parts together: opens state, binds the socket, and starts two task sets, each
//! under its own cancellation token: the *leader's* (built-in objects, scheduler, controllers,
//! event expiry, compaction — in a cluster, only the Raft leader runs them, for one term) and
//! the *node's* (API, agent, metrics, service proxy, hostPorts, DNS — every node). Waits for
//! every task on shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, Context, Node};
use crate::api::{self, ApiState, ServerInfo};
use crate::clock::SystemClock;
use crate::cluster::identity::Ca;
use crate::cluster::mirror::{
    self,
    http::{HttpSource, RemoteProposer, Servers, Timeouts},
};
use crate::cluster::pki::{self, Pki};
use crate::cluster::renew::{Live, Renewer};
use crate::cluster::{join, raft};
use crate::config::Config;
use crate::controllers;
use crate::events::Recorder;
use crate::runtime::ContainerdRuntime;
use crate::store::{Proposer, Store};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("preparing {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("another skerryd is already serving {0}; stop it first")]
    SocketBusy(String),
    #[error(transparent)]
    Cni(#[from] crate::net::cni::CniError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the state database is corrupt ({0}); restore it from a snapshot or another server")]
    Corrupt(String),
    #[error("this node's keys and certificates: {0}")]
    Pki(#[from] crate::cluster::pki::PkiError),
    #[error("joining the cluster: {0}")]
    Join(#[from] crate::cluster::join::JoinError),
    #[error("cannot listen on the cluster port {addr}: {source}; another program (k3s? another skerryd?) may hold it")]
    ClusterPort { addr: String, source: std::io::Error },
    #[error("{0}")]
    Role(String),
}

/// The TCP port peers reach a node on (the API, Raft, the log and exec relay).
pub const CLUSTER_PORT: u16 = 6443;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io { path: path.display().to_string(), source }
}

/// Runs the daemon until `shutdown` fires, then waits for every task to finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io_err(&config.data_dir))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&config.data_dir))?;
    let db = config.data_dir.join("state.db");
    let store = Store::open(&db)?;
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let p = config.data_dir.join(file);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io_err(&p))?;
        }
    }
    let node_ip = match config.node_ip {
        Some(ip) => ip,
        None => crate::net::nodeip::detect().await,
    };
    let pki = obtain_identity(&config, node_ip).await?;
    let credentials = Live::new(pki.credentials).map_err(|e| DaemonError::Pki(e.into()))?;
    // A server holds a replica (Raft) and the CA; an agent a mirror, and writes through a server.
    let replica = match pki.ca.map(Arc::new) {
        Some(ca) => {
            let transport = Arc::new(
                crate::cluster::peer::HttpTransport::new(&credentials).map_err(|e| DaemonError::Raft(e.to_string()))?,
            );
            let raft = start_raft(&config, &store, node_ip, transport.clone()).await?;
            Replica::Server { proposer: raft.proposer(), raft, transport, ca }
        }
        None => {
            let urls = server_urls(&config);
            let tls = credentials.client_config().map_err(|e| DaemonError::Pki(e.into()))?;
            let servers = Arc::new(
                Servers::new(urls.clone(), tls, Timeouts::default()).map_err(|e| DaemonError::Role(e.to_string()))?,
            );
            let proposer = Proposer::new(RemoteProposer::new(servers.clone()));
            Replica::Agent { proposer, servers, urls }
        }
    };
    let proposer = replica.proposer().clone();
    let pod_cidr = crate::net::nft::parse_cidr(&config.pod_cidr).expect("validated by config");
    enable_forwarding();
    let list = crate::net::cni::load_or_write_default(&config.cni_conf_dir, &config.pod_cidr)?;
    tracing::info!(network = list.name, config = %list.path.display(), node_ip = %node_ip, "pod network");
    let cni = crate::net::cni::Cni { list, bin_path: config.cni_bin_dir.clone() };
    // Exec FIFOs live in the data dir; a killed skerryd's are removed here.
    let exec_dir = config.data_dir.join("exec");
    crate::runtime::clear_fifo_dir(&exec_dir).await;
    let runtime = ContainerdRuntime::connect(&config.containerd_socket, &config.containerd_namespace)
        .await?
        .with_fifo_dir(exec_dir);
    if let Some(dir) = &config.image_dir {
        import_folder(&runtime, dir).await;
    }
    let ctx = Arc::new(Context {
        store: store.clone(),
        proposer: proposer.clone(),
        runtime: Arc::new(runtime),
        node_name: config.node_name.clone(),
        data_dir: config.data_dir.clone(),
        insecure_registries: config.insecure_registries.clone(),
        cgroup_parent: config.cgroup_parent.clone(),
        cni: Arc::new(cni),
        namespaces: Arc::new(agent::sandbox::KernelNamespaces),
        clock: Arc::new(SystemClock),
        node_ip,
        cluster_dns: config.cluster_dns,
        cluster_domain: config.cluster_domain.clone(),
        recorder: Recorder::new(store.clone(), proposer.clone(), "kubelet", config.node_name.clone()),
    });
    let listener = bind_socket(&config.socket)?;
    let peers = Arc::new(
        api::relay::Peers::new(config.node_name.clone(), &credentials).map_err(|e| DaemonError::Pki(e.into()))?,
    );
    let state = ApiState {
        store: store.clone(),
        proposer: proposer.clone(),
        info: Arc::new(ServerInfo {
            node_name: config.node_name.clone(),
            socket: config.socket.display().to_string(),
            containerd_socket: config.containerd_socket.display().to_string(),
            containerd_namespace: config.containerd_namespace.clone(),
            ca_hash: replica.ca().map(|ca| ca.bundle_hash()),
            data_dir: config.data_dir.display().to_string(),
            servers: match &replica {
                Replica::Server { .. } => Vec::new(),
                Replica::Agent { urls, .. } => urls.clone(),
            },
        }),
        node: Arc::new(Node { ctx: ctx.clone(), shutdown: shutdown.clone() }),
        services: Arc::new(api::services::ServiceNet {
            cidr: config.service_cidr,
            dns_ip: config.cluster_dns,
            node_ports: config.node_port_range,
        }),
        peers: Some(peers.clone()),
        shutdown: shutdown.clone(),
    };

    let port_addr = std::net::SocketAddr::from((node_ip, CLUSTER_PORT));
    let port_listener = tokio::net::TcpListener::bind(port_addr)
        .await
        .map_err(|source| DaemonError::ClusterPort { addr: port_addr.to_string(), source })?;
    let port = crate::cluster::peer::Port {
        raft: replica.raft().cloned(),
        authority: match &replica {
            Replica::Server { raft, ca, .. } => Some(Arc::new(crate::cluster::join::Authority {
                ca: ca.clone(),
                store: store.clone(),
                proposer: proposer.clone(),
                raft: raft.raft.clone(),
                refused: Default::default(),
            })),
            Replica::Agent { .. } => None,
        },
        api: Some(api::router(state.clone())),
    };
    let mut background = TaskSet::new(shutdown.child_token());
    let stop = background.cancel.clone();
    {
        let credentials = credentials.clone();
        background.spawn(async move {
            if let Err(e) = crate::cluster::peer::serve(port_listener, &credentials, port, stop).await {
                tracing::error!(error = %e, "the cluster port stopped; peers cannot reach this node");
            }
        });
    }
    let renewer = match &replica {
        Replica::Server { ca, .. } => Renewer::Local {
            ca: ca.clone(),
            addresses: vec![std::net::IpAddr::V4(node_ip), std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        },
        Replica::Agent { urls, .. } => Renewer::Remote { servers: urls.clone() },
    };
    background.spawn(crate::cluster::renew::run(
        credentials.clone(),
        renewer,
        pki::dir(&config.data_dir),
        background.cancel.clone(),
    ));

    let leading = match &replica {
        Replica::Server { raft, transport, .. } => {
            let marker = config.data_dir.join("raft").join(JOINING_FILE);
            if let Ok(url) = std::fs::read_to_string(&marker) {
                become_voter(raft, transport, url.trim(), &config.node_name, port_addr).await?;
                std::fs::remove_file(&marker).map_err(io_err(&marker))?;
            }
            let leader = Leader {
                store: store.clone(),
                proposer: proposer.clone(),
                node_name: config.node_name.clone(),
                node_ip,
                data_dir: config.data_dir.clone(),
                cluster_dns: config.cluster_dns,
                cluster_cidr: config.cluster_cidr,
                raft: raft.clone(),
                probe: peers.clone(),
                node_monitor_grace_period: config.node_monitor_grace_period,
            };
            // The leader's work runs for exactly the terms this server leads. A fresh or single
            // server leads at once: its node tasks start once the first term has made the
            // built-in objects; a follower's once it has caught up.
            let (first_term, started) = tokio::sync::oneshot::channel();
            let leading = tokio::spawn(lead(raft.raft.clone(), leader, first_term, shutdown.child_token()));
            tokio::select! {
                _ = started => {}
                _ = caught_up(&raft.raft) => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                    tracing::warn!("this server has neither led a term nor caught up with a leader yet; serving what it has");
                }
            }
            Some(leading)
        }
        Replica::Agent { servers, .. } => {
            let source = Arc::new(HttpSource::new(servers.clone()));
            background.spawn(mirror::run(store.clone(), source, config.node_name.clone(), background.cancel.clone()));
            background.spawn(compact_periodically(store.clone(), background.cancel.clone()));
            // An agent runs from its mirror: it waits a while for a first sync, then goes on
            // with what it has (the servers may be away).
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while !mirror::synced(&store, &config.node_name).await.unwrap_or(false) {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!("the mirror has not synced with a server yet; running from what it holds");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            None
        }
    };
    let is_server = replica.raft().is_some();
    let node =
        start_node(&config, store.clone(), ctx, listener, state, pod_cidr, node_ip, is_server, shutdown.child_token())
            .await;
    tracing::info!(socket = %config.socket.display(), node = %config.node_name, role = if is_server { "server" } else { "agent" }, "skerryd is serving");
    let corrupt = tokio::select! {
        _ = shutdown.cancelled() => None,
        why = store.corrupted() => Some(why),
    };
    node.stop().await;
    shutdown.cancel();
    if let Some(leading) = leading {
        let _ = leading.await;
    }
    background.stop().await;
    if let Some(raft) = replica.raft() {
        if let Err(e) = raft.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    if let Some(why) = corrupt {
        tracing::error!(error = %why, "skerryd stops: the state database is corrupt; restore it from a snapshot or another server");
        return Err(DaemonError::Corrupt(why));
    }
    tracing::info!("skerryd stopped");
    Ok(())
}

/// What holds this node's state, by role.
enum Replica {
    /// A Raft member with the CA.
    Server { raft: raft::Server, proposer: Proposer, transport: Arc<crate::cluster::peer::HttpTransport>, ca: Arc<Ca> },
    /// A mirror synced from the servers, written through them.
    Agent { proposer: Proposer, servers: Arc<Servers>, urls: Vec<String> },
}

impl Replica {
    fn proposer(&self) -> &Proposer {
        match self {
            Replica::Server { proposer, .. } | Replica::Agent { proposer, .. } => proposer,
        }
    }

    fn raft(&self) -> Option<&raft::Server> {
        match self {
            Replica::Server { raft, .. } => Some(raft),
            Replica::Agent { .. } => None,
        }
    }

    fn ca(&self) -> Option<&Arc<Ca>> {
        match self {
            Replica::Server { ca, .. } => Some(ca),
            Replica::Agent { .. } => None,
        }
    }
}

/// In `<data-dir>/raft` while a joined server waits to be made a voter: the URL it joined through.
const JOINING_FILE: &str = "joining";

/// The file that keeps the servers an agent talks to (one `https://ip:port` a line).
const SERVERS_FILE: &str = "servers";

/// The servers an agent talks to: those its join brought (kept in `<data-dir>/servers`), and
/// the one it joined through.
fn server_urls(config: &Config) -> Vec<String> {
    let mut urls: Vec<String> = std::fs::read_to_string(config.data_dir.join(SERVERS_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if let Some((url, _)) = config.join.as_deref().and_then(|u| join::server_url(u).ok()) {
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// An agent keeps its change log short too (on servers the leader compacts).
async fn compact_periodically(store: Store, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(300)) => {
                if let Err(e) = store.compact().await {
                    tracing::warn!(error = %e, "compaction failed");
                }
            }
        }
    }
}

/// `skerryd --cluster-reset`: see [`raft::reset`]. Returns where the old log was kept.
pub async fn cluster_reset(config: &Config) -> Result<std::path::PathBuf, DaemonError> {
    let store = Store::open(&config.data_dir.join("state.db"))?;
    let dir = config.data_dir.join("raft");
    raft::reset(&store, &dir).await.map_err(io_err(&dir))
}

/// This node's credentials: kept from an earlier start, brought by a join (`--join`, first
/// start only), or — the first server's first start — made with a new cluster CA.
async fn obtain_identity(config: &Config, node_ip: std::net::Ipv4Addr) -> Result<Pki, DaemonError> {
    if pki::exists(&config.data_dir) {
        return Ok(pki::load(&config.data_dir, &config.node_name)?);
    }
    let addresses = [std::net::IpAddr::V4(node_ip), std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
    let (Some(url), Some(token)) = (&config.join, &config.token) else {
        return Ok(pki::load_or_create(&config.data_dir, &config.node_name, &addresses)?);
    };
    tracing::info!(server = url, token = token.id, node = config.node_name, "joining the cluster");
    let joined = join::join(url, token, &config.node_name).await?;
    let servers: String = joined.servers.iter().map(|s| format!("https://{s}\n")).collect();
    let servers_path = config.data_dir.join(SERVERS_FILE);
    std::fs::write(&servers_path, servers).map_err(io_err(&servers_path))?;
    if joined.ca.is_some() {
        // Until the cluster has taken it as a voter, this server must not make a cluster of its own.
        let raft_dir = config.data_dir.join("raft");
        std::fs::create_dir_all(&raft_dir).map_err(io_err(&raft_dir))?;
        let marker = raft_dir.join(JOINING_FILE);
        std::fs::write(&marker, format!("{url}\n")).map_err(io_err(&marker))?;
    }
    pki::save_joined(&config.data_dir, &joined.credentials, joined.ca.as_ref())
        .map_err(|e| DaemonError::Pki(e.into()))?;
    tracing::info!(role = %joined.credentials.identity().role, servers = ?joined.servers, "joined the cluster");
    Ok(Pki { credentials: joined.credentials, ca: joined.ca })
}

/// A server that joined asks the cluster (through the server it joined) to make it a voter,
/// then waits until it has applied the membership that holds it. A no-op once it is a member.
async fn become_voter(
    raft: &raft::Server,
    transport: &Arc<crate::cluster::peer::HttpTransport>,
    url: &str,
    node_name: &str,
    me: std::net::SocketAddr,
) -> Result<(), DaemonError> {
    if raft.raft.is_initialized().await.map_err(|e| DaemonError::Raft(e.to_string()))? {
        return Ok(());
    }
    let (_, addr) = join::server_url(url)?;
    let through = raft::Member { name: addr.clone(), addr };
    let rpc = raft::network::Rpc::AddVoter {
        id: raft.id,
        member: raft::Member { name: node_name.to_string(), addr: me.to_string() },
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    let index = loop {
        use crate::cluster::raft::network::{Reply, Transport};
        match transport.send(0, &through, rpc.clone()).await {
            Ok(Reply::Membership(Ok(index))) => break index,
            Ok(Reply::Membership(Err(e))) if tokio::time::Instant::now() >= deadline => {
                return Err(DaemonError::Raft(format!("the cluster did not take this server as a voter: {e}")))
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(DaemonError::Raft(format!("asking {url} to take this server as a voter: {e}")))
            }
            Ok(other) => {
                tracing::warn!(reply = ?std::mem::discriminant(&other), "asking to become a voter; will retry")
            }
            Err(e) => tracing::warn!(error = %e, "asking to become a voter; will retry"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    raft.raft
        .wait(Some(std::time::Duration::from_secs(120)))
        .applied_index_at_least(Some(index), "the membership that holds this server")
        .await
        .map_err(|e| DaemonError::Raft(format!("catching up with the cluster: {e}")))?;
    tracing::info!(index, "this server is a voter");
    Ok(())
}

/// Resolves once this server follows a leader and has applied all of its log it has.
async fn caught_up(raft: &raft::Raft) {
    let me = raft.metrics().borrow().id;
    let _ = raft
        .metrics()
        .wait_for(|m| {
            m.current_leader.is_some_and(|l| l != me)
                && m.last_applied.map(|l| l.index) >= m.last_log_index
                && m.membership_config.membership().get_node(&me).is_some()
        })
        .await;
}

/// Starts this server's Raft member: its log and snapshots under `<data-dir>/raft`, its id
/// kept there; a server that is not yet part of a cluster and joins none makes one of itself.
async fn start_raft(
    config: &Config,
    store: &Store,
    node_ip: std::net::Ipv4Addr,
    transport: Arc<dyn raft::network::Transport>,
) -> Result<raft::Server, DaemonError> {
    let dir = config.data_dir.join("raft");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let id = member_id(&dir.join("id"))?;
    let log_path = dir.join("raft.db");
    let log = raft::log::LogStore::open(&log_path).map_err(|e| DaemonError::Raft(e.to_string()))?;
    for file in ["raft.db", "raft.db-wal", "raft.db-shm"] {
        let p = dir.join(file);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io_err(&p))?;
        }
    }
    let server = raft::Server::start(id, store.clone(), log, &dir.join("snapshots"), transport, config.raft_timing)
        .await
        .map_err(|e| DaemonError::Raft(e.to_string()))?;
    // A server that joined becomes a member when the cluster adds it (see `become_voter`); any
    // other server not yet in a cluster — a fresh one, or one just reset — makes one of itself.
    if !dir.join(JOINING_FILE).exists() {
        let me = raft::Member { name: config.node_name.clone(), addr: format!("{node_ip}:{CLUSTER_PORT}") };
        server.bootstrap([(id, me)].into()).await.map_err(|e| DaemonError::Raft(e.to_string()))?;
    }
    Ok(server)
}

/// This server's Raft id: made once (random, never 0) and kept in `path`.
fn member_id(path: &Path) -> Result<raft::NodeId, DaemonError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(id) = text.trim().parse::<raft::NodeId>() {
            return Ok(id);
        }
    }
    let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1).max(1);
    std::fs::write(path, format!("{id}\n")).map_err(io_err(path))?;
    Ok(id)
}

/// Runs the leader's work for each term this server leads: started once the leader has
/// applied an entry of its own term (so it has seen everything committed before it), stopped
/// as a whole when leadership is lost or the term changes — never two terms at once.
async fn lead(
    raft: raft::Raft,
    leader: Leader,
    first_term: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) {
    let mut first_term = Some(first_term);
    let mut metrics = raft.metrics();
    loop {
        let leading = |m: &openraft::RaftMetrics<raft::NodeId, raft::Member>| {
            m.state == openraft::ServerState::Leader
                && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
        };
        let term = tokio::select! {
            _ = cancel.cancelled() => return,
            m = metrics.wait_for(|m| leading(m)) => match m {
                Ok(m) => m.current_term,
                Err(_) => return,
            },
        };
        let set = match leader.start_term(cancel.child_token()).await {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(error = %e, term, "could not start the leader's work; will retry");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        tracing::info!(term, "leading: scheduler and controllers started");
        if let Some(tx) = first_term.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = metrics.wait_for(|m| !(leading(m) && m.current_term == term)) => {
                tracing::info!(term, "leadership lost: scheduler and controllers stopped");
            }
        }
        set.stop().await;
    }
}

/// A set of tasks under one cancellation token, stopped and joined as a whole.
pub struct TaskSet {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl TaskSet {
    fn new(cancel: CancellationToken) -> TaskSet {
        TaskSet { cancel, tasks: JoinSet::new() }
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Cancels every task and waits for all of them.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What only the leader runs: the built-in objects, the scheduler, the controllers and the
/// maintenance loops. Started for a term on its own token and stopped as a whole, so "am I
/// still the leader?" is never asked inside a controller.
pub struct Leader {
    pub store: Store,
    pub proposer: Proposer,
    pub node_name: String,
    pub node_ip: std::net::Ipv4Addr,
    pub data_dir: std::path::PathBuf,
    pub cluster_dns: std::net::Ipv4Addr,
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub raft: raft::Server,
    /// Asks other nodes whether they answer (node liveness until gossip).
    pub probe: Arc<dyn controllers::nodelifecycle::Probe>,
    pub node_monitor_grace_period: std::time::Duration,
}

impl Leader {
    /// Ensures the built-in objects, then starts the leader's loops under `cancel`.
    pub async fn start_term(&self, cancel: CancellationToken) -> Result<TaskSet, DaemonError> {
        let (store, proposer) = (&self.store, &self.proposer);
        controllers::namespace::ensure_built_in(store, proposer).await?;
        controllers::endpoints::ensure_kube_dns(store, proposer, self.cluster_dns).await?;
        controllers::volumes::ensure_default_class(store, proposer).await?;
        let mut set = TaskSet::new(cancel.clone());
        let node = self.node_name.clone();
        set.spawn(controllers::scheduler::run(store.clone(), proposer.clone(), node.clone(), cancel.clone()));
        set.spawn(controllers::namespace::run(store.clone(), proposer.clone(), cancel.clone()));
        set.spawn(controllers::endpoints::run(
            store.clone(),
            proposer.clone(),
            self.node_ip.to_string(),
            cancel.clone(),
        ));
        set.spawn(controllers::replicaset::run(store.clone(), proposer.clone(), node.clone(), cancel.clone()));
        set.spawn(controllers::volumes::run(store.clone(), proposer.clone(), self.data_dir.clone(), cancel.clone()));
        set.spawn(controllers::deployment::run(store.clone(), proposer.clone(), node, cancel.clone()));
        set.spawn(controllers::gc::run(store.clone(), proposer.clone(), cancel.clone()));
        set.spawn(controllers::nodeipam::run(store.clone(), proposer.clone(), self.cluster_cidr, cancel.clone()));
        set.spawn(remove_deleted_servers(store.clone(), self.raft.clone(), cancel.clone()));
        set.spawn(controllers::nodelifecycle::run(
            store.clone(),
            proposer.clone(),
            self.node_name.clone(),
            self.probe.clone(),
            self.node_monitor_grace_period,
            cancel.clone(),
        ));
        let (store, proposer) = (store.clone(), proposer.clone());
        set.spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(300)) => {
                        if let Err(e) = crate::events::expire(&store, &proposer, crate::events::TTL).await {
                            tracing::warn!(error = %e, "expiring events failed");
                        }
                        if let Err(e) = store.compact().await {
                            tracing::warn!(error = %e, "compaction failed");
                        }
                    }
                }
            }
        });
        Ok(set)
    }
}

/// `skerry delete node NAME` of a server takes it out of the Raft group: the leader watches
/// for Node deletions and removes a member of that name (first as a voter, then as a node).
/// Only a deletion seen is acted on, never a Node that is merely missing: a server that has
/// just joined has not registered yet.
async fn remove_deleted_servers(store: Store, server: raft::Server, cancel: CancellationToken) {
    let from = store.revision().await.unwrap_or(0);
    let Ok(mut watcher) = store.watch(from).await else {
        tracing::error!("cannot watch the store; deleted servers will stay in the Raft group");
        return;
    };
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = watcher.next() => match e {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "watching Node deletions failed; deleted servers stay in the Raft group");
                    return;
                }
            },
        };
        if event.resource != "nodes" || event.kind != crate::store::EventType::Deleted {
            continue;
        }
        let name = crate::objects::meta::name(&event.object).to_string();
        let member =
            server.raft.metrics().borrow().membership_config.nodes().find(|(_, m)| m.name == name).map(|(id, _)| *id);
        if let Some(id) = member {
            match server.remove_member(id).await {
                Ok(()) => tracing::info!(server = name, id, "removed a deleted server from the Raft group"),
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "could not remove a deleted server from the Raft group")
                }
            }
        }
    }
}

/// Starts what every node runs: the API, the agent and its metrics, the service proxy, the
/// hostPort rules, the cluster DNS and the memory trimmer.
#[allow(clippy::too_many_arguments)]
async fn start_node(
    config: &Config,
    store: Store,
    ctx: Arc<Context>,
    listener: tokio::net::UnixListener,
    state: ApiState,
    pod_cidr: (std::net::Ipv4Addr, u8),
    node_ip: std::net::Ipv4Addr,
    server: bool,
    cancel: CancellationToken,
) -> TaskSet {
    let mut set = TaskSet::new(cancel.clone());
    set.spawn(async move {
        if let Err(e) = api::serve(listener, state).await {
            tracing::error!(error = %e, "API server failed");
        }
    });
    set.spawn(agent::metrics::run(ctx.clone(), cancel.clone()));
    let identity = agent::register::Identity {
        name: config.node_name.clone(),
        ip: node_ip,
        // A joined node's pod network is assigned by the cluster (its own /24), not assumed.
        pod_cidr: config.join.is_none().then(|| config.pod_cidr.clone()),
        port: CLUSTER_PORT,
        version: api::VERSION.to_string(),
        server,
    };
    set.spawn(agent::register::run(ctx.clone(), identity, cancel.clone()));
    set.spawn(agent::run(ctx, cancel.clone()));
    let proxy_config = crate::net::services::ProxyConfig {
        service_cidr: config.service_cidr,
        pod_cidr,
        node_ip,
        local_ips: vec![config.cluster_dns],
    };
    set.spawn(crate::net::services::run(store.clone(), proxy_config, cancel.clone()));
    set.spawn(crate::net::hostports::run(
        store.clone(),
        config.node_name.clone(),
        pod_cidr,
        config.masquerade,
        cancel.clone(),
    ));
    let stop = cancel.clone();
    set.spawn(async move {
        // Hand memory freed after a burst (pods deleted, a large list served) back to the host.
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                    // SAFETY: malloc_trim only releases free memory; it is safe at any time.
                    unsafe { libc::malloc_trim(0) };
                }
            }
        }
    });
    // Cluster DNS: the address on this node, the records from the store, the server.
    match crate::net::dns::ensure_dns_address(config.cluster_dns).await {
        Ok(_) => {
            let records = crate::net::dns::shared(&config.cluster_domain);
            set.spawn(crate::net::dns::run_records(
                store,
                config.cluster_domain.clone(),
                records.clone(),
                cancel.clone(),
            ));
            let listen = std::net::SocketAddr::from((config.cluster_dns, 53));
            let upstreams = crate::net::dns::host_upstreams();
            set.spawn(async move {
                if let Err(e) = crate::net::dns::run(listen, records, upstreams, cancel).await {
                    tracing::error!(error = %e, "cluster DNS stopped; pods cannot resolve service names");
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, address = %config.cluster_dns, "could not put the cluster DNS address on this node; running without cluster DNS")
        }
    }
    set
}

/// Pods reach each other and the outside through this node: forwarding must be on in the
/// daemon's network namespace (a new namespace's default depends on the host's settings).
fn enable_forwarding() {
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        tracing::warn!(error = %e, "could not enable net.ipv4.ip_forward; pod traffic between interfaces may be dropped");
    }
}

/// Removes Skerry's nftables table (`skerryd --cleanup`).
pub async fn cleanup() -> Result<(), crate::net::nft::NftError> {
    if let Err(e) = crate::net::dns::remove_dns_address().await {
        tracing::warn!(error = %e, "could not remove the cluster DNS address");
    }
    crate::net::nft::apply(&crate::net::nft::render_cleanup()).await
}

/// Binds the API socket: `0660`, owner root, group `skerry` when that group exists.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketBusy(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err(path))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("skerry") {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid))
            .map_err(|e| DaemonError::Io { path: path.display().to_string(), source: e.into() })?;
    }
    Ok(listener)
}

/// Imports every archive in `dir` (air-gapped hosts); failures are logged, not fatal.
async fn import_folder(runtime: &ContainerdRuntime, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "image folder is not readable");
        return;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    paths.sort();
    for p in paths {
        match runtime.import_archive(&p).await {
            Ok(images) => {
                for i in images {
                    tracing::info!(image = i.name, file = %p.display(), "imported image");
                }
            }
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "image import failed"),
        }
    }
}
