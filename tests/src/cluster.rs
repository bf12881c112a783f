//! Several real `skerryd`s on one machine, as hosts on one LAN, with tools to fail them.
//!
//! # Network
//! [`TestCluster::start`] makes one test switch ([`Switch`]): a network namespace `sk-s<tag>`
//! holding the bridge `sk-b<tag>`. The root namespace gets nothing at all — no link, no
//! address, no route — so nothing of a cluster can leak to the machine's networks, and two
//! clusters cannot meet. Node `i` (1-based) is the namespace `sk-n<tag>-<i>` whose `eth0` is a
//! veth to the switch's port `sk-p<tag>-<i>`, with the address `10.251.X.i/24` (X = the first two
//! hex digits of the tag; one /24 per cluster, see [`Switch::create`]). Nodes have no default
//! route: the /24 is all they reach, and anything else fails at once with "network
//! unreachable". The CLI talks to a node over its Unix socket, so the root namespace never needs
//! to reach a node. Pods use [`crate::skerryd::POD_CIDR`] on every node (each node's pod network
//! is inside its own namespace).
//!
//! # Nodes
//! Each node is a [`TestNode`] (`skerry`, `skerry_ok`, `api`, `log_tail`, `in_netns`,
//! `node_ip`, …) named `sk-node-<i>`, started with `--node-ip 10.251.X.i`, with its own data
//! dir, socket, CNI config and IPAM dir. By default each node has its own containerd: one costs
//! ≈ 40 MiB (PSS, measured here) and a fraction of a second at start (nodes start in
//! parallel), and in return a node's power loss takes its containerd with it, as on a real
//! host, and every node has its own image store. [`ClusterBuilder::shared_containerd`] runs one containerd with a containerd
//! namespace per node (`<ctd namespace>-<i>`: runc keeps state per namespace name) and a cgroup
//! parent per node below the containerd's, for tests with many nodes; there
//! [`TestCluster::kill9`] kills the node's shims and containers but not the shared containerd.
//!
//! # Failures
//! - [`TestCluster::cut`] / [`TestCluster::heal`]: the node's switch port down / up — a pulled
//!   cable: frames to and from the node are dropped silently (connections time out), nothing
//!   changes inside the node's namespace.
//! - [`TestCluster::kill9`]: power loss ([`TestNode::kill9`]); [`TestCluster::restart`] boots the
//!   node again (or restarts a running skerryd).
//!
//! Dropping the cluster stops every node (skerryd, then containerd), deletes the node
//! namespaces and then the switch namespace. [`remains`] lists what is left of a tag.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::containerd::{self, Containerd};
pub use crate::netns::Switch;
use crate::skerryd::{CniPlugins, CtdShare, Options, TestNode};

/// How to start a [`TestCluster`]; see [`TestCluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    n: u8,
    shared_containerd: bool,
    args: Vec<String>,
    node_args: Vec<(u8, Vec<String>)>,
    bin_dir: Option<PathBuf>,
    cni: CniPlugins,
    servers: Option<u8>,
}

impl ClusterBuilder {
    /// One containerd for all nodes, a containerd namespace each (default: one per node).
    pub fn shared_containerd(mut self) -> Self {
        self.shared_containerd = true;
        self
    }

    /// Extra skerryd flags for every node.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// Extra skerryd flags for node `i` only (after the ones for every node). Server and agent
    /// roles, once skerryd has them, are such flags.
    pub fn node_args(mut self, i: u8, extra: &[&str]) -> Self {
        assert!((1..=self.n).contains(&i), "node {i} is not in 1..={}", self.n);
        self.node_args.push((i, extra.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// The directory holding the binaries (default: the test's own target dir).
    pub fn bin_dir(mut self, dir: PathBuf) -> Self {
        self.bin_dir = Some(dir);
        self
    }

    /// Which CNI plugins every node's conflist uses.
    pub fn cni(mut self, plugins: CniPlugins) -> Self {
        self.cni = plugins;
        self
    }

    /// Makes one cluster of the nodes: node 1 starts first (a fresh server, which makes the
    /// cluster CA); nodes `2..=servers` join it with a server token and the rest with an agent
    /// token, both made with `skerry token create` on node 1 (default: every node is a separate
    /// cluster of one).
    pub fn servers(mut self, servers: u8) -> Self {
        assert!((1..=self.n).contains(&servers), "{servers} servers of {} nodes", self.n);
        self.servers = Some(servers);
        self
    }

    /// Makes the switch and the node namespaces, then starts every node's containerd and
    /// skerryd in parallel (with [`ClusterBuilder::servers`], node 1 first and then the others)
    /// and waits until each API answers. Panics (after removing everything) when a node does
    /// not start.
    pub fn start(self) -> TestCluster {
        containerd::require_prerequisites();
        let switch = Switch::create();
        let shared = self.shared_containerd.then(|| Arc::new(Containerd::start()));
        let mut nets: Vec<_> = (1..=self.n).map(|i| Some(switch.attach(i))).collect();
        let mut started = Vec::new();
        let mut rest: Vec<(u8, Vec<String>)> = (1..=self.n).map(|i| (i, Vec::new())).collect();
        if let Some(servers) = self.servers {
            started.extend(self.start_nodes(&switch, &shared, &mut nets, vec![(1, Vec::new())]));
            rest.remove(0);
            if let Some(Ok(first)) = started.first() {
                let url = format!("https://{}:6443", switch.address(1));
                let token = |role: &str| {
                    first
                        .skerry_ok(&["token", "create", "--role", role, "--description", "test cluster"])
                        .trim()
                        .to_string()
                };
                let (server_token, agent_token) = (token("server"), token("agent"));
                for (i, args) in rest.iter_mut() {
                    let token = if *i <= servers { &server_token } else { &agent_token };
                    args.extend(["--join".to_string(), url.clone(), "--token".to_string(), token.clone()]);
                }
            } else {
                rest.clear();
            }
        }
        started.extend(self.start_nodes(&switch, &shared, &mut nets, rest));
        let mut nodes = Vec::new();
        for r in started {
            match r {
                Ok(node) => nodes.push(node),
                // The nodes that did start are dropped first (then the switch), so nothing stays.
                Err(panic) => {
                    drop(nodes);
                    std::panic::resume_unwind(panic)
                }
            }
        }
        TestCluster { nodes, _shared: shared, switch }
    }

    /// Starts nodes `which` (index, extra flags) in parallel.
    fn start_nodes(
        &self,
        switch: &Switch,
        shared: &Option<Arc<Containerd>>,
        nets: &mut [Option<crate::netns::NodeNet>],
        which: Vec<(u8, Vec<String>)>,
    ) -> Vec<std::thread::Result<TestNode>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = which
                .into_iter()
                .map(|(i, extra)| {
                    let net = nets[i as usize - 1].take().expect("each node starts once");
                    let mut args = vec!["--node-ip".to_string(), switch.address(i).to_string()];
                    args.extend(self.args.iter().cloned());
                    args.extend(self.node_args.iter().filter(|(n, _)| *n == i).flat_map(|(_, a)| a.iter().cloned()));
                    args.extend(extra);
                    let share = shared.as_ref().map(|ctd| {
                        let namespace = format!("{}-{i}", ctd.namespace());
                        ctd.add_namespace(&namespace);
                        CtdShare { namespace, cgroup_parent: format!("{}/n{i}", ctd.cgroup_parent()) }
                    });
                    let opts = Options {
                        bin_dir: self.bin_dir.clone(),
                        args,
                        net: Some(net),
                        cni: self.cni,
                        node_name: Some(format!("sk-node-{i}")),
                        share,
                        ..Default::default()
                    };
                    let shared = shared.clone();
                    s.spawn(move || {
                        let ctd = shared.unwrap_or_else(|| Arc::new(Containerd::start()));
                        TestNode::start_on(ctd, opts)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        })
    }
}

/// Guard owning a cluster: its nodes, the shared containerd if any, and the switch. Field order
/// is drop order: nodes first, the switch last.
pub struct TestCluster {
    nodes: Vec<TestNode>,
    _shared: Option<Arc<Containerd>>,
    switch: Switch,
}

impl TestCluster {
    /// `n` nodes (1..=250), each with its own containerd.
    pub fn start(n: u8) -> TestCluster {
        Self::builder(n).start()
    }

    /// Options for a cluster of `n` nodes; [`ClusterBuilder::start`] starts it.
    pub fn builder(n: u8) -> ClusterBuilder {
        assert!((1..=250).contains(&n), "a test cluster has 1..=250 nodes, not {n}");
        ClusterBuilder {
            n,
            shared_containerd: false,
            args: Vec::new(),
            node_args: Vec::new(),
            bin_dir: None,
            cni: CniPlugins::default(),
            servers: None,
        }
    }

    /// Node `i`, counting from 1 (`sk-node-<i>`, `10.251.X.i`).
    pub fn node(&self, i: u8) -> &TestNode {
        &self.nodes[self.index(i)]
    }

    pub fn node_mut(&mut self, i: u8) -> &mut TestNode {
        let k = self.index(i);
        &mut self.nodes[k]
    }

    /// Every node; `nodes()[0]` is node 1.
    pub fn nodes(&self) -> &[TestNode] {
        &self.nodes
    }

    fn index(&self, i: u8) -> usize {
        assert!((1..=self.nodes.len()).contains(&(i as usize)), "node {i} is not in 1..={}", self.nodes.len());
        i as usize - 1
    }

    /// Node `i`'s address.
    pub fn node_ip(&self, i: u8) -> Ipv4Addr {
        self.node(i).node_ip()
    }

    /// The cluster's /24.
    pub fn subnet(&self) -> (Ipv4Addr, u8) {
        self.switch.subnet()
    }

    /// The six hex digits in the name of every namespace and link of this cluster.
    pub fn tag(&self) -> &str {
        self.switch.tag()
    }

    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// Cuts node `i` off the LAN (its switch port down); [`TestCluster::heal`] undoes it.
    pub fn cut(&self, i: u8) {
        self.index(i);
        self.switch.set_port(i, false);
    }

    /// Puts node `i` back on the LAN.
    pub fn heal(&self, i: u8) {
        self.index(i);
        self.switch.set_port(i, true);
    }

    /// Power loss of node `i` (see [`TestNode::kill9`]).
    pub fn kill9(&mut self, i: u8) {
        self.node_mut(i).kill9();
    }

    /// Stops every node's skerryd (SIGTERM; containers keep running), then starts them all again
    /// at once — a whole cluster's maintenance restart. Returns when every API answers.
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            node.skerryd.stop();
        }
        std::thread::scope(|s| {
            for node in &mut self.nodes {
                s.spawn(move || node.skerryd.start_again());
            }
        });
    }

    /// Boots node `i` again after [`TestCluster::kill9`], or restarts its running skerryd.
    pub fn restart(&mut self, i: u8) {
        self.node_mut(i).restart();
    }
}

/// What the machine still has of the cluster tagged `tag`: network namespaces and root-namespace
/// links whose name contains it (empty once the cluster is gone).
pub fn remains(tag: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| format!("netns {}", e.file_name().to_string_lossy())).collect())
        .unwrap_or_default();
    let links = crate::netns::ip(&["-o", "link", "show"]).unwrap_or_else(|e| panic!("{e}"));
    found.extend(links.lines().map(|l| format!("link {l}")));
    found.retain(|l| l.contains(tag));
    found
}
