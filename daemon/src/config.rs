//! Daemon configuration: command-line flags over `/etc/skerry/config.yaml` over defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Flags of `skerryd`. Every flag has the same key in the config file (`data-dir: /srv/skerry`).
#[derive(Debug, Default, clap::Parser)]
#[command(name = "skerryd", version, about = "Skerry node daemon: runs Kubernetes-style workloads on containerd")]
pub struct Flags {
    /// Config file; flags win over it.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Where state, logs and pod files live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The API socket the CLI talks to.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// containerd's gRPC socket.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// containerd namespace that holds Skerry's images and containers.
    #[arg(long)]
    pub containerd_namespace: Option<String>,
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Registries reached over plain HTTP (host:port); may be repeated.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Folder of image archives imported at start (air-gapped hosts).
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `skerryd=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
    /// cgroup under which every pod gets `pod<uid>/<container>`.
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// This node's address (default: the address of the interface holding the default route).
    #[arg(long)]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// The pod network of this node.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Where CNI network configurations live (skerryd writes its default when none exists).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// `:`-separated directories searched for CNI plugin binaries.
    #[arg(long)]
    pub cni_bin_dir: Option<String>,
    /// Masquerade pod traffic leaving the pod network (`--masquerade=false` to turn off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub masquerade: Option<bool>,
    /// The cluster's pod network: the leader gives each node without one a /24 of it.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// The Service network (ClusterIPs are allocated from it).
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// The cluster DNS address (the `kube-system/kube-dns` Service).
    #[arg(long)]
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster domain served by the cluster DNS.
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// NodePorts are allocated from this range.
    #[arg(long)]
    pub node_port_range: Option<String>,
    /// Remove Skerry's nftables table and exit.
    #[arg(long)]
    pub cleanup: bool,
    /// How long a node may not answer the leader before its Ready condition is Unknown (a Go
    /// duration, as kube-controller-manager's flag; default 40s).
    #[arg(long)]
    pub node_monitor_grace_period: Option<String>,
    /// Raft heartbeat interval in milliseconds (servers; default 500, for slow edge links).
    #[arg(long)]
    pub raft_heartbeat_ms: Option<u64>,
    /// A follower that hears no leader for this many milliseconds (at random up to twice as
    /// many) stands for election (default 2500).
    #[arg(long)]
    pub raft_election_ms: Option<u64>,
    /// Join the cluster of the server at this URL (`https://HOST:6443`) on the first start;
    /// needs --token. A node that has joined ignores both.
    #[arg(long)]
    pub join: Option<String>,
    /// The join token (`SKR1.…`) from `skerry token create` on a server.
    #[arg(long)]
    pub token: Option<String>,
    /// Make this server, whose cluster has lost its quorum for good, a cluster of one with the
    /// state it has; then exit (start again without the flag).
    #[arg(long)]
    pub cluster_reset: bool,
}

pub const DEFAULT_CONFIG: &str = "/etc/skerry/config.yaml";

/// Skerry's own news at `info`; openraft's only when something is wrong (its `info` lines
/// describe every election and start-up step).
pub const DEFAULT_LOG_LEVEL: &str = "info,openraft=warn";

/// The config file's keys; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    containerd_socket: Option<PathBuf>,
    containerd_namespace: Option<String>,
    node_name: Option<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    image_dir: Option<PathBuf>,
    log_level: Option<String>,
    cgroup_parent: Option<String>,
    node_ip: Option<std::net::Ipv4Addr>,
    pod_cidr: Option<String>,
    cni_conf_dir: Option<PathBuf>,
    cni_bin_dir: Option<String>,
    masquerade: Option<bool>,
    service_cidr: Option<String>,
    cluster_cidr: Option<String>,
    cluster_dns: Option<std::net::Ipv4Addr>,
    cluster_domain: Option<String>,
    node_port_range: Option<String>,
    join: Option<String>,
    token: Option<String>,
    raft_heartbeat_ms: Option<u64>,
    raft_election_ms: Option<u64>,
    node_monitor_grace_period: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub containerd_socket: PathBuf,
    pub containerd_namespace: String,
    pub node_name: String,
    pub insecure_registries: Vec<String>,
    pub image_dir: Option<PathBuf>,
    pub log_level: String,
    pub cgroup_parent: String,
    /// `None`: detect at start.
    pub node_ip: Option<std::net::Ipv4Addr>,
    pub pod_cidr: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: String,
    pub masquerade: bool,
    pub service_cidr: (std::net::Ipv4Addr, u8),
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub cluster_dns: std::net::Ipv4Addr,
    pub cluster_domain: String,
    pub node_port_range: (u16, u16),
    /// The server to join through on the first start.
    pub join: Option<String>,
    /// The join token (secret: never logged; `Debug` redacts it).
    pub token: Option<crate::cluster::token::JoinToken>,
    pub raft_timing: crate::cluster::raft::Timing,
    pub node_monitor_grace_period: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("node name {0:?} is not a valid DNS-1123 subdomain; pass --node-name")]
    NodeName(String),
    #[error("pod CIDR {0:?} is not an IPv4 network like 10.42.0.0/24")]
    PodCidr(String),
    #[error("cluster CIDR {0:?} is not an IPv4 network of /24 or wider like 10.42.0.0/16")]
    ClusterCidr(String),
    #[error("service CIDR {0:?} is not an IPv4 network like 10.43.0.0/16")]
    ServiceCidr(String),
    #[error("cluster DNS address {0} is not inside the service CIDR")]
    ClusterDns(std::net::Ipv4Addr),
    #[error("node port range {0:?} is not like 30000-32767")]
    NodePortRange(String),
    #[error("the join token is not valid: {0}")]
    Token(#[from] crate::cluster::token::TokenError),
    #[error("{0}")]
    Join(String),
    #[error(
        "raft timing: the election timeout ({election} ms) must be at least three heartbeats ({heartbeat} ms each), \
         or followers stand for election while the leader is fine"
    )]
    RaftTiming { heartbeat: u64, election: u64 },
    #[error("node monitor grace period {0:?} is not a duration like 40s or 2m")]
    GracePeriod(String),
}

impl Config {
    /// Resolves flags over the config file over defaults. A missing default config file is fine;
    /// a missing file named with `--config` is an error.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = read_file(&flags.config, flags.config.as_os_str() != DEFAULT_CONFIG)?;
        let hostname = || {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
                .to_lowercase()
        };
        let node_name = flags.node_name.or(file.node_name).unwrap_or_else(hostname);
        crate::objects::validation::dns1123_subdomain(&node_name)
            .map_err(|_| ConfigError::NodeName(node_name.clone()))?;
        let pod_cidr = flags.pod_cidr.clone().or(file.pod_cidr.clone()).unwrap_or_else(|| "10.42.0.0/24".into());
        if crate::net::nft::parse_cidr(&pod_cidr).is_none() {
            return Err(ConfigError::PodCidr(pod_cidr));
        }
        let service_text =
            flags.service_cidr.clone().or(file.service_cidr.clone()).unwrap_or_else(|| "10.43.0.0/16".into());
        let service_cidr = crate::net::nft::parse_cidr(&service_text).ok_or(ConfigError::ServiceCidr(service_text))?;
        let cluster_text =
            flags.cluster_cidr.clone().or(file.cluster_cidr.clone()).unwrap_or_else(|| "10.42.0.0/16".into());
        let cluster_cidr = crate::net::nft::parse_cidr(&cluster_text)
            .filter(|(_, len)| *len <= crate::controllers::nodeipam::NODE_MASK)
            .ok_or(ConfigError::ClusterCidr(cluster_text))?;
        let cluster_dns =
            flags.cluster_dns.or(file.cluster_dns).unwrap_or_else(|| std::net::Ipv4Addr::new(10, 43, 0, 10));
        let mask = if service_cidr.1 == 0 { 0 } else { u32::MAX << (32 - service_cidr.1) };
        if u32::from(cluster_dns) & mask != u32::from(service_cidr.0) & mask {
            return Err(ConfigError::ClusterDns(cluster_dns));
        }
        let range_text =
            flags.node_port_range.clone().or(file.node_port_range.clone()).unwrap_or_else(|| "30000-32767".into());
        let node_port_range = range_text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| a <= b && *a > 0)
            .ok_or(ConfigError::NodePortRange(range_text))?;
        let join = flags.join.or(file.join);
        let token = flags.token.or(file.token).map(|t| crate::cluster::token::parse(&t)).transpose()?;
        match (&join, &token) {
            (Some(url), None) => {
                return Err(ConfigError::Join(format!(
                    "--join {url} needs --token: create one with `skerry token create` on a server"
                )))
            }
            (None, Some(_)) => {
                return Err(ConfigError::Join(
                    "--token needs --join https://SERVER:6443 (the server to join through)".into(),
                ))
            }
            (Some(url), Some(_)) => {
                crate::cluster::join::server_url(url).map_err(|e| ConfigError::Join(e.to_string()))?;
            }
            (None, None) => {}
        }
        let default_timing = crate::cluster::raft::Timing::default();
        let heartbeat =
            flags.raft_heartbeat_ms.or(file.raft_heartbeat_ms).unwrap_or(default_timing.heartbeat.as_millis() as u64);
        let election =
            flags.raft_election_ms.or(file.raft_election_ms).unwrap_or(default_timing.election.0.as_millis() as u64);
        if heartbeat == 0 || election < 3 * heartbeat {
            return Err(ConfigError::RaftTiming { heartbeat, election });
        }
        let raft_timing = crate::cluster::raft::Timing {
            heartbeat: std::time::Duration::from_millis(heartbeat),
            election: (std::time::Duration::from_millis(election), std::time::Duration::from_millis(2 * election)),
        };
        let node_monitor_grace_period = match flags.node_monitor_grace_period.or(file.node_monitor_grace_period) {
            None => crate::controllers::nodelifecycle::DEFAULT_GRACE,
            Some(text) => crate::clock::parse_duration(&text)
                .and_then(|d| std::time::Duration::try_from(d).ok())
                .ok_or(ConfigError::GracePeriod(text))?,
        };
        let mut insecure = file.insecure_registries;
        insecure.extend(flags.insecure_registries);
        Ok(Config {
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or_else(|| "/var/lib/skerry".into()),
            socket: flags.socket.or(file.socket).unwrap_or_else(|| "/run/skerry/skerry.sock".into()),
            containerd_socket: flags
                .containerd_socket
                .or(file.containerd_socket)
                .unwrap_or_else(|| "/run/containerd/containerd.sock".into()),
            containerd_namespace: flags
                .containerd_namespace
                .or(file.containerd_namespace)
                .unwrap_or_else(|| "skerry".into()),
            node_name,
            insecure_registries: insecure,
            image_dir: flags.image_dir.or(file.image_dir),
            log_level: flags.log_level.or(file.log_level).unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
            cgroup_parent: flags.cgroup_parent.or(file.cgroup_parent).unwrap_or_else(|| "/skerry".into()),
            node_ip: flags.node_ip.or(file.node_ip),
            pod_cidr,
            cni_conf_dir: flags.cni_conf_dir.or(file.cni_conf_dir).unwrap_or_else(|| "/etc/cni/net.d".into()),
            cni_bin_dir: flags.cni_bin_dir.or(file.cni_bin_dir).unwrap_or_else(|| "/usr/lib/cni:/opt/cni/bin".into()),
            masquerade: flags.masquerade.or(file.masquerade).unwrap_or(true),
            service_cidr,
            cluster_cidr,
            cluster_dns,
            cluster_domain: flags.cluster_domain.or(file.cluster_domain).unwrap_or_else(|| "cluster.local".into()),
            node_port_range,
            join,
            token,
            raft_timing,
            node_monitor_grace_period,
        })
    }
}

fn read_file(path: &Path, required: bool) -> Result<File, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(File::default()),
        Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
    };
    if text.trim().is_empty() {
        return Ok(File::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "data-dir: /srv/skerry\nsocket: /tmp/file.sock\ninsecure-registries: [\"127.0.0.1:5000\"]\n",
        )
        .unwrap();
        let flags = Flags {
            config: path.clone(),
            socket: Some("/tmp/flag.sock".into()),
            node_name: Some("n1".into()),
            ..Default::default()
        };
        let c = Config::load(flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/skerry"));
        assert_eq!(c.socket, PathBuf::from("/tmp/flag.sock"));
        assert_eq!(c.containerd_namespace, "skerry");
        assert_eq!(c.insecure_registries, vec!["127.0.0.1:5000".to_string()]);

        std::fs::write(&path, "data-dir: [oops\n").unwrap();
        let err = Config::load(Flags { config: path.clone(), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("is not valid"), "{err}");
        std::fs::write(&path, "colour: red\n").unwrap();
        assert!(Config::load(Flags { config: path, ..Default::default() }).is_err());
        let missing = Flags { config: dir.path().join("none.yaml"), ..Default::default() };
        assert!(Config::load(missing).is_err());
    }

    #[test]
    fn raft_timing_defaults_for_slow_links_and_refuses_elections_faster_than_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "raft-heartbeat-ms: 1000\n").unwrap();
        let flags = |hb: Option<u64>, el: Option<u64>| Flags {
            config: path.clone(),
            node_name: Some("n1".into()),
            raft_heartbeat_ms: hb,
            raft_election_ms: el,
            ..Default::default()
        };
        let c = Config::load(Flags {
            config: dir.path().join("none.yaml"),
            node_name: Some("n1".into()),
            ..Default::default()
        });
        assert!(c.is_err(), "a missing --config file is an error");
        std::fs::write(&path, "").unwrap();
        let t = Config::load(flags(None, None)).unwrap().raft_timing;
        assert_eq!((t.heartbeat.as_millis(), t.election.0.as_millis(), t.election.1.as_millis()), (500, 2500, 5000));
        std::fs::write(&path, "raft-heartbeat-ms: 1000\n").unwrap();
        let err = Config::load(flags(None, None)).unwrap_err();
        assert!(err.to_string().contains("at least three heartbeats"), "{err}");
        let t = Config::load(flags(None, Some(4000))).unwrap().raft_timing;
        assert_eq!((t.heartbeat.as_millis(), t.election.0.as_millis()), (1000, 4000));
        assert!(Config::load(flags(Some(0), None)).is_err());
    }
}
