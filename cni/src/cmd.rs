//! The CNI commands (ADD, DEL, CHECK, GC, STATUS, VERSION): environment checks, order of
//! operations and rollback.
//!
//! Each command takes the parsed environment ([`Env`]) and stdin and returns what to print
//! (nothing for DEL, CHECK, GC and STATUS) or an [`Error`] whose [`Error::code`] is the
//! spec's error code. ADD undoes what it created when a later step fails; DEL and GC
//! never fail because something is already gone.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{self, check_ifname, ConfigError, NetConf, Subnet};
use crate::ipam::{self, FileStore, IpamError, Owner};
use crate::link::{self, LinkError, Netns};
use crate::result::{self, AddResult, Interface};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Env(String),
    #[error("check failed: {0}")]
    Check(String),
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    #[error("enabling IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
}

/// Plugin-specific error codes (100 and up).
pub mod code {
    pub const RANGE_EXHAUSTED: u32 = 100;
    pub const IPAM_STATE: u32 = 101;
    pub const NETLINK: u32 = 102;
    pub const CHECK_FAILED: u32 = 103;
}

impl Error {
    /// The spec's error code for this error.
    pub fn code(&self) -> u32 {
        match self {
            Error::Config(ConfigError::IncompatibleVersion(_)) => 1,
            Error::Config(ConfigError::Unsupported(_)) => 2,
            Error::Config(ConfigError::Decode(_)) => 6,
            Error::Config(ConfigError::Invalid(_)) => 7,
            Error::Link(LinkError::NetnsMissing(_)) => 3,
            Error::Env(_) => 4,
            Error::NotAvailable(_) => 50,
            Error::Ipam(IpamError::Exhausted { .. }) => code::RANGE_EXHAUSTED,
            Error::Ipam(_) => code::IPAM_STATE,
            Error::Link(_) | Error::Forwarding(_) => code::NETLINK,
            Error::Check(_) => code::CHECK_FAILED,
        }
    }

    /// A hint for the operator, when there is one.
    pub fn details(&self) -> String {
        match self {
            Error::Ipam(IpamError::Exhausted { .. }) => {
                "every address of the range is held; delete pods, run GC, or widen ipam.subnet".into()
            }
            Error::Link(LinkError::Netlink { source, .. }) => format!("{source:?}"),
            _ => String::new(),
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Env {
    pub fn from_process() -> Env {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Env {
        let get = |k| get(k).unwrap_or_default();
        Env {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    fn attachment(&self) -> Result<Owner, Error> {
        let id = &self.container_id;
        let id_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !id_ok {
            return Err(Error::Env(format!(
                "CNI_CONTAINERID {id:?} is missing or invalid; it must start with a letter or digit followed by letters, digits, '_', '.' or '-'"
            )));
        }
        check_ifname(&self.ifname).map_err(|why| Error::Env(format!("CNI_IFNAME {:?}: {why}", self.ifname)))?;
        Ok(Owner::new(id, &self.ifname))
    }

    fn netns(&self) -> Result<PathBuf, Error> {
        if self.netns.is_empty() {
            return Err(Error::Env(format!("CNI_NETNS is required for {}", self.command)));
        }
        Ok(PathBuf::from(&self.netns))
    }
}

/// The host end of an attachment's veth: `sk` + 11 hex digits of a hash of container ID and
/// interface name, so DEL and GC find it without the pod's namespace.
pub fn host_veth_name(owner: &Owner) -> String {
    format!("sk{}", &attachment_hash(owner)[..11])
}

/// The name the pod end has while it is still in the host namespace.
fn temp_peer_name(owner: &Owner) -> String {
    format!("sp{}", &attachment_hash(owner)[..11])
}

fn attachment_hash(owner: &Owner) -> String {
    let digest = Sha256::new()
        .chain_update(owner.container_id.as_bytes())
        .chain_update([0u8])
        .chain_update(owner.ifname.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_host_veth_name(name: &str) -> bool {
    name.len() == 13
        && name.starts_with("sk")
        && name[2..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Runs one command; `Ok(Some(json))` is printed on stdout.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, Error> {
    match env.command.as_str() {
        "VERSION" => Ok(Some(result::render_version(config::requested_version(stdin).as_deref()))),
        "ADD" => add(env, &config::parse(stdin)?).map(Some),
        "DEL" => del(env, &config::parse(stdin)?).map(|()| None),
        "CHECK" => check(env, &config::parse(stdin)?).map(|()| None),
        "GC" => gc(&config::parse(stdin)?).map(|()| None),
        "STATUS" => status(&config::parse(stdin)?).map(|()| None),
        "" => Err(Error::Env("CNI_COMMAND is not set".into())),
        other => {
            Err(Error::Env(format!("unknown CNI_COMMAND {other:?}; expected ADD, DEL, CHECK, GC, STATUS or VERSION")))
        }
    }
}

/// The routes to install in the pod: `ipam.routes` (a route without `gw` goes via the
/// gateway), plus the default route via the gateway when `isDefaultGateway`.
pub fn pod_routes(conf: &NetConf) -> Vec<(Subnet, Option<Ipv4Addr>)> {
    let gw = conf.ipam.gateway;
    let mut routes: Vec<_> = conf.ipam.routes.iter().map(|r| (r.dst, Some(r.gw.unwrap_or(gw)))).collect();
    if conf.is_default_gateway && !routes.iter().any(|(dst, _)| dst.prefix == 0) {
        routes.push((Subnet { network: Ipv4Addr::UNSPECIFIED, prefix: 0 }, Some(gw)));
    }
    routes
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, Error> {
    let owner = env.attachment()?;
    let ns = Netns::open(&env.netns()?)?;
    let store = FileStore::open(&conf.ipam.data_dir, &conf.name)?;
    let (ip, fresh) = ipam::allocate(&mut store.lock()?, &conf.ipam, &owner)?;
    match wire(conf, &owner, &ns, ip) {
        Ok(result) => Ok(result::render_add(&conf.cni_version, &result)),
        Err(e) => {
            // Roll back: the veth pair (deleting the host end deletes both) and a fresh address.
            // The bridge stays: other pods may share it, or another ADD may be attaching to it.
            let host = host_veth_name(&owner);
            let _ = link::in_host(|h| async move { link::delete(&h, &host).await });
            if fresh {
                let _ = store.lock().and_then(|mut s| ipam::release(&mut s, &owner));
            }
            Err(e)
        }
    }
}

fn wire(conf: &NetConf, owner: &Owner, ns: &Netns, ip: Ipv4Addr) -> Result<AddResult, Error> {
    let prefix = conf.ipam.subnet.prefix;
    let (host_name, peer_name) = (host_veth_name(owner), temp_peer_name(owner));
    let bridge_addr = conf.is_gateway.then_some((conf.ipam.gateway, prefix));
    let ns_fd = ns.raw_fd();
    let (host_name, peer_name_host) = (host_name.as_str(), peer_name.as_str());
    let (bridge, host) = link::in_host(|h| async move {
        let bridge = link::ensure_bridge(&h, &conf.bridge, conf.mtu, bridge_addr).await?;
        // A leftover of an earlier ADD of this same attachment.
        link::delete(&h, host_name).await?;
        link::delete(&h, peer_name_host).await?;
        let (host, peer) = link::create_veth(&h, host_name, peer_name_host, conf.mtu).await?;
        link::attach_to_bridge(&h, host.index, bridge.index, conf.hairpin_mode).await?;
        link::move_to_netns(&h, peer.index, ns_fd).await?;
        // Re-read: the host end's MAC and state after enslaving.
        let host = link::get(&h, host_name).await?.unwrap_or(host);
        Ok((bridge, host))
    })?;
    if conf.is_gateway && conf.ip_forward {
        enable_ipv4_forwarding().map_err(Error::Forwarding)?;
    }
    let routes = pod_routes(conf);
    let ifname = owner.ifname.clone();
    let pod_routes = routes.clone();
    let pod = link::in_netns(ns, move |h| async move {
        link::configure_pod_side(&h, &peer_name, &ifname, (ip, prefix), &pod_routes).await
    })?;
    Ok(AddResult {
        interfaces: vec![
            Interface { name: bridge.name, mac: bridge.mac, sandbox: None },
            Interface { name: host.name, mac: host.mac, sandbox: None },
            Interface { name: pod.name, mac: pod.mac, sandbox: Some(ns.path().display().to_string()) },
        ],
        address: ip,
        prefix,
        gateway: conf.ipam.gateway,
        interface: 2,
        routes,
    })
}

fn enable_ipv4_forwarding() -> std::io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)?.trim() != "1" {
        std::fs::write(PATH, "1")?;
    }
    Ok(())
}

fn del(env: &Env, conf: &NetConf) -> Result<(), Error> {
    let owner = env.attachment()?;
    let host = host_veth_name(&owner);
    let deleted = link::in_host(|h| async move { link::delete(&h, &host).await })?;
    if !deleted && !env.netns.is_empty() {
        // No host end under our name: remove the pod's interface if it is a veth. A missing
        // namespace means there is nothing left to remove.
        if let Ok(ns) = Netns::open(&PathBuf::from(&env.netns)) {
            let ifname = owner.ifname.clone();
            link::in_netns(&ns, move |h| async move {
                match link::get(&h, &ifname).await? {
                    Some(l) if l.kind.as_deref() == Some("veth") => link::delete(&h, &ifname).await.map(drop),
                    _ => Ok(()),
                }
            })?;
        }
    }
    if conf.ipam.data_dir.join(&conf.name).is_dir() {
        let store = FileStore::open(&conf.ipam.data_dir, &conf.name)?;
        ipam::release(&mut store.lock()?, &owner)?;
    }
    Ok(())
}

fn check(env: &Env, conf: &NetConf) -> Result<(), Error> {
    let owner = env.attachment()?;
    let ns = Netns::open(&env.netns()?)?;
    let store = FileStore::open(&conf.ipam.data_dir, &conf.name)?;
    let ip = ipam::find(&store.lock()?, &owner)?.ok_or_else(|| {
        Error::Check(format!(
            "network {} has no address for container {} interface {}",
            conf.name, owner.container_id, owner.ifname
        ))
    })?;
    let prefix = conf.ipam.subnet.prefix;
    let cidr = format!("{ip}/{prefix}");
    if let Some(ips) = conf.prev_result.as_ref().and_then(|p| p.get("ips")).and_then(Value::as_array) {
        if !ips.iter().any(|i| i.get("address").and_then(Value::as_str) == Some(cidr.as_str())) {
            return Err(Error::Check(format!("prevResult does not list the allocated address {cidr}")));
        }
    }
    let host = host_veth_name(&owner);
    let (bridge_name, host_name) = (conf.bridge.clone(), host.clone());
    let (bridge, host_link) =
        link::in_host(|h| async move { Ok((link::get(&h, &bridge_name).await?, link::get(&h, &host_name).await?)) })?;
    let bridge = bridge.ok_or_else(|| Error::Check(format!("bridge {} does not exist", conf.bridge)))?;
    let host_link = host_link.ok_or_else(|| Error::Check(format!("host veth {host} does not exist")))?;
    if host_link.controller != Some(bridge.index) {
        return Err(Error::Check(format!("host veth {host} is not attached to bridge {}", conf.bridge)));
    }
    let ifname = owner.ifname.clone();
    let (pod_if, addrs, routes) = link::in_netns(&ns, move |h| async move {
        let Some(l) = link::get(&h, &ifname).await? else { return Ok((None, vec![], vec![])) };
        let addrs = link::addresses(&h, l.index).await?;
        Ok((Some(l), addrs, link::routes(&h).await?))
    })?;
    if pod_if.is_none() {
        return Err(Error::Check(format!("interface {} does not exist in {}", owner.ifname, env.netns)));
    }
    if !addrs.contains(&(ip, prefix)) {
        return Err(Error::Check(format!("interface {} in {} does not have address {cidr}", owner.ifname, env.netns)));
    }
    for (dst, gw) in pod_routes(conf) {
        if !routes.contains(&(dst, gw)) {
            return Err(Error::Check(format!(
                "the pod has no route to {dst} via {}",
                gw.map(|g| g.to_string()).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), Error> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        ConfigError::Invalid("GC needs cni.dev/valid-attachments (an empty list frees everything)".into())
    })?;
    let owners: Vec<Owner> = valid.iter().map(|a| Owner::new(&a.container_id, &a.ifname)).collect();
    if conf.ipam.data_dir.join(&conf.name).is_dir() {
        let store = FileStore::open(&conf.ipam.data_dir, &conf.name)?;
        ipam::gc(&mut store.lock()?, &owners)?;
    }
    // Leaked host veths on our bridge (named by us, not belonging to a valid attachment).
    let keep: HashSet<String> = owners.iter().map(host_veth_name).collect();
    let bridge_name = conf.bridge.clone();
    link::in_host(|h| async move {
        let Some(bridge) = link::get(&h, &bridge_name).await? else { return Ok(()) };
        for l in link::list(&h).await? {
            if l.controller == Some(bridge.index) && is_host_veth_name(&l.name) && !keep.contains(&l.name) {
                link::delete(&h, &l.name).await?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), Error> {
    FileStore::open(&conf.ipam.data_dir, &conf.name)
        .and_then(|s| s.lock().map(drop))
        .map_err(|e| Error::NotAvailable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name(&Owner::new("abc", "eth0"));
        assert_eq!(a.len(), 13);
        assert!(is_host_veth_name(&a), "{a}");
        assert_eq!(a, host_veth_name(&Owner::new("abc", "eth0")));
        assert_ne!(a, host_veth_name(&Owner::new("abc", "eth1")));
        assert_ne!(a, temp_peer_name(&Owner::new("abc", "eth0")));
        assert!(!is_host_veth_name("skerry0"));
    }

    #[test]
    fn env_errors_are_code_4() {
        let env = |cmd: &str, id: &str, ifname: &str| Env {
            command: cmd.into(),
            container_id: id.into(),
            ifname: ifname.into(),
            ..Env::default()
        };
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"skerry-cni"}"#;
        assert_eq!(run(&env("", "c", "eth0"), conf).unwrap_err().code(), 4);
        assert_eq!(run(&env("FROB", "c", "eth0"), conf).unwrap_err().code(), 4);
        assert_eq!(run(&env("ADD", "", "eth0"), conf).unwrap_err().code(), 4);
        assert_eq!(run(&env("ADD", "-bad", "eth0"), conf).unwrap_err().code(), 4);
        assert_eq!(run(&env("ADD", "c", "much-too-long-ifname"), conf).unwrap_err().code(), 4);
        assert_eq!(run(&env("ADD", "c", "eth0"), conf).unwrap_err().code(), 4, "no CNI_NETNS");
        assert_eq!(run(&env("ADD", "c", "eth0"), b"{").unwrap_err().code(), 6);
    }

    #[test]
    fn routes_default_via_gateway() {
        let conf = config::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"skerry-cni"}"#).unwrap();
        assert_eq!(pod_routes(&conf), vec![(Subnet::parse("0.0.0.0/0").unwrap(), Some(Ipv4Addr::new(10, 42, 0, 1)))]);
        let conf = config::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"skerry-cni","isDefaultGateway":false,"ipam":{"routes":[{"dst":"10.43.0.0/16"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            pod_routes(&conf),
            vec![(Subnet::parse("10.43.0.0/16").unwrap(), Some(Ipv4Addr::new(10, 42, 0, 1)))]
        );
    }
}
