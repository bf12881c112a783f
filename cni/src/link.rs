//! Netlink operations on links, addresses and routes, in the host or in a pod's namespace.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it. Work in
//! the host namespace runs on the calling thread ([`in_host`]); work in a pod's namespace
//! runs on a fresh OS thread that `setns`'d into it and then opens its own connection, on
//! its own current-thread tokio runtime ([`in_netns`]). The thread exits afterwards, so no
//! thread is ever returned to the host namespace by hand.
//!
//! Boundary: everything here is mechanism (create, move, address, route, delete, inspect);
//! the order of operations and rollback live in `cmd`. Nothing shells out to `ip`.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::config::Subnet;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("network namespace {0} does not exist")]
    NetnsMissing(PathBuf),
    #[error("network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("{context}: {source}")]
    Netlink { context: String, source: rtnetlink::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    State(String),
}

/// Wraps a netlink error with what we were doing.
fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let context = context.into();
    move |source| LinkError::Netlink { context, source }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

/// An opened network namespace file (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    pub fn open(path: &Path) -> Result<Netns, LinkError> {
        match File::open(path) {
            Ok(file) => Ok(Netns { path: path.to_owned(), file }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LinkError::NetnsMissing(path.to_owned())),
            Err(source) => Err(LinkError::Netns { path: path.to_owned(), source }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

fn run<T, F, Fut>(f: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| LinkError::Io { context: "starting a tokio runtime".into(), source })?;
    runtime.block_on(async move {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|source| LinkError::Io { context: "opening a netlink socket".into(), source })?;
        tokio::spawn(connection);
        f(handle).await
    })
}

/// Runs `f` with a netlink handle in the namespace of the calling thread (the host's, for
/// the plugin's main thread).
pub fn in_host<T, F, Fut>(f: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, LinkError>>,
{
    run(f)
}

/// Runs `f` with a netlink handle inside `ns`, on a dedicated thread.
pub fn in_netns<T, F, Fut>(ns: &Netns, f: F) -> Result<T, LinkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let file = ns.file.try_clone().map_err(|source| LinkError::Netns { path: ns.path.clone(), source })?;
    let path = ns.path.clone();
    let thread = std::thread::Builder::new()
        .name("skerry-cni-netns".into())
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| LinkError::Netns { path: path.clone(), source: io::Error::from(e) })?;
            run(f)
        })
        .map_err(|source| LinkError::Io { context: "spawning the netns thread".into(), source })?;
    thread.join().unwrap_or_else(|_| Err(LinkError::State("the netns thread panicked".into())))
}

/// What callers need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub controller: Option<u32>,
    pub kind: Option<String>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link =
            Link { index: msg.header.index, name: String::new(), mac: String::new(), controller: None, kind: None };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = format_mac(a),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The link called `name`, if there is one.
pub async fn get(h: &Handle, name: &str) -> Result<Option<Link>, LinkError> {
    match h.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
        Err(e) if errno(&e) == libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

async fn must_get(h: &Handle, name: &str) -> Result<Link, LinkError> {
    get(h, name).await?.ok_or_else(|| LinkError::State(format!("link {name} disappeared")))
}

/// Every link of the namespace.
pub async fn list(h: &Handle) -> Result<Vec<Link>, LinkError> {
    let msgs: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(nl("listing links"))?;
    Ok(msgs.iter().map(Link::from_message).collect())
}

/// Makes sure the bridge exists and is up (creating it with `mtu` if needed), and, with
/// `address`, holds that address. Safe to race with other plugin processes.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mtu: u32,
    address: Option<(Ipv4Addr, u8)>,
) -> Result<Link, LinkError> {
    let bridge = match get(h, name).await? {
        Some(link) => link,
        None => {
            match h.link().add(LinkBridge::new(name).mtu(mtu).build()).execute().await {
                Err(e) if errno(&e) != libc::EEXIST => return Err(nl(format!("creating bridge {name}"))(e)),
                _ => {}
            }
            let bridge = must_get(h, name).await?;
            // Pin the bridge's MAC: otherwise the kernel gives it the lowest MAC of its ports,
            // and the pods' gateway MAC changes whenever a pod comes or goes.
            let mac: Vec<u8> = bridge.mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
            if mac.len() == 6 {
                h.link()
                    .set(LinkUnspec::new_with_index(bridge.index).address(mac).build())
                    .execute()
                    .await
                    .map_err(nl(format!("pinning the MAC address of bridge {name}")))?;
            }
            bridge
        }
    };
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(LinkError::State(format!(
            "link {name} exists but is a {}, not a bridge; choose another bridge name",
            bridge.kind.as_deref().unwrap_or("device of unknown kind")
        )));
    }
    if let Some((ip, prefix)) = address {
        add_address(h, bridge.index, ip, prefix).await.map_err(|e| with_context(e, format!("on bridge {name}")))?;
    }
    set_up(h, bridge.index).await?;
    Ok(bridge)
}

fn with_context(e: LinkError, more: String) -> LinkError {
    match e {
        LinkError::Netlink { context, source } => LinkError::Netlink { context: format!("{context} {more}"), source },
        other => other,
    }
}

/// Adds `ip/prefix` to the link; an address that is already there is fine.
pub async fn add_address(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
    match h.address().add(index, IpAddr::V4(ip), prefix).execute().await {
        Err(e) if errno(&e) != libc::EEXIST => Err(nl(format!("adding address {ip}/{prefix}"))(e)),
        _ => Ok(()),
    }
}

pub async fn set_up(h: &Handle, index: u32) -> Result<(), LinkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("setting link {index} up")))
}

/// Creates a veth pair in this namespace; returns (host end, peer).
pub async fn create_veth(h: &Handle, host: &str, peer: &str, mtu: u32) -> Result<(Link, Link), LinkError> {
    h.link()
        .add(LinkVeth::new(host, peer).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("creating veth pair {host}/{peer}")))?;
    let (host, peer) = (must_get(h, host).await?, must_get(h, peer).await?);
    h.link()
        .set(LinkUnspec::new_with_index(peer.index).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("setting the mtu of {}", peer.name)))?;
    Ok((host, peer))
}

/// Enslaves `index` to the bridge, sets hairpin mode and brings it up.
pub async fn attach_to_bridge(h: &Handle, index: u32, bridge: u32, hairpin: bool) -> Result<(), LinkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).controller(bridge).build())
        .execute()
        .await
        .map_err(nl(format!("attaching link {index} to the bridge")))?;
    h.link()
        .set_port(LinkBridgePort::new(index).hairpin(hairpin).build())
        .execute()
        .await
        .map_err(nl(format!("setting hairpin mode on link {index}")))?;
    set_up(h, index).await
}

/// Moves a link of this namespace into `ns`.
pub async fn move_to_netns(h: &Handle, index: u32, ns_fd: i32) -> Result<(), LinkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).setns_by_fd(ns_fd).build())
        .execute()
        .await
        .map_err(nl(format!("moving link {index} into the pod's namespace")))
}

/// Deletes the link called `name`; `Ok(false)` when there was none.
pub async fn delete(h: &Handle, name: &str) -> Result<bool, LinkError> {
    let Some(link) = get(h, name).await? else { return Ok(false) };
    match h.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == libc::ENODEV => Ok(false),
        Err(e) => Err(nl(format!("deleting link {name}"))(e)),
    }
}

/// The pod side: renames the moved peer to `ifname`, addresses it, brings it and `lo` up and
/// installs `routes`. Returns the configured interface.
pub async fn configure_pod_side(
    h: &Handle,
    temp_name: &str,
    ifname: &str,
    address: (Ipv4Addr, u8),
    routes: &[(Subnet, Option<Ipv4Addr>)],
) -> Result<Link, LinkError> {
    if get(h, ifname).await?.is_some() {
        return Err(LinkError::State(format!("the pod's namespace already has an interface named {ifname}")));
    }
    let peer = must_get(h, temp_name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(peer.index).name(ifname.to_owned()).build())
        .execute()
        .await
        .map_err(nl(format!("renaming {temp_name} to {ifname}")))?;
    add_address(h, peer.index, address.0, address.1).await?;
    set_up(h, peer.index).await?;
    if let Some(lo) = get(h, "lo").await? {
        set_up(h, lo.index).await?;
    }
    for (dst, gw) in routes {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network, dst.prefix)
            .output_interface(peer.index);
        if let Some(gw) = gw {
            route = route.gateway(*gw);
        }
        match h.route().add(route.build()).execute().await {
            Err(e) if errno(&e) != libc::EEXIST => return Err(nl(format!("adding route to {dst}"))(e)),
            _ => {}
        }
    }
    must_get(h, ifname).await
}

/// IPv4 addresses (with prefix length) on a link.
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, LinkError> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses"))?;
    let mut out = Vec::new();
    for msg in msgs.iter().filter(|m| m.header.index == index) {
        for attr in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                out.push((*ip, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// IPv4 routes of the main table as (destination, gateway).
pub async fn routes(h: &Handle) -> Result<Vec<(Subnet, Option<Ipv4Addr>)>, LinkError> {
    let msgs: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing routes"))?;
    let mut out = Vec::new();
    for msg in msgs {
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut gw = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(*a),
                _ => {}
            }
        }
        out.push((Subnet { network: dst, prefix: msg.header.destination_prefix_length }, gw));
    }
    Ok(out)
}
