//! The `skerry-dns` dummy link that holds the cluster DNS address (a /32) in the daemon's
//! network namespace, so the server can bind it and pods reach it through their gateway.
//! Kernels built without dummy links (some VM kernels) get the /32 on `lo` instead, labelled
//! `lo:skerry-dns` so that it can be told apart and removed; a local address is delivered the
//! same whichever link holds it. Netlink only (`rtnetlink`), in the namespace of the calling
//! thread.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkDummy, LinkUnspec};

use super::DnsError;

/// The name of the dummy link.
pub const LINK_NAME: &str = "skerry-dns";
/// The label of the address on `lo` when the kernel has no dummy links.
pub const LO_LABEL: &str = "lo:skerry-dns";

/// Which link ended up holding the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The `skerry-dns` dummy link.
    Dummy,
    /// `lo`, labelled [`LO_LABEL`] (the kernel cannot make dummy links).
    Loopback,
}

fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DnsError {
    let context = context.into();
    move |source| DnsError::Netlink { context, source }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

async fn with_handle<T, F, Fut>(f: F) -> Result<T, DnsError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, DnsError>>,
{
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let result = f(handle).await;
    task.abort();
    result
}

async fn get(h: &Handle, name: &str) -> Result<Option<LinkMessage>, DnsError> {
    match h.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if errno(&e) == libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

fn kind(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}

/// Makes sure the `skerry-dns` dummy link exists, is up and holds `ip/32` and no other
/// IPv4 address (a changed cluster DNS address replaces the old one). Idempotent. When the
/// kernel cannot make dummy links, puts the address on `lo` instead (see the module doc).
pub async fn ensure_dns_address(ip: Ipv4Addr) -> Result<Holder, DnsError> {
    with_handle(|h| async move {
        let link = match get(&h, LINK_NAME).await? {
            Some(link) => link,
            None => {
                match h.link().add(LinkDummy::new(LINK_NAME).build()).execute().await {
                    Err(e) if errno(&e) == libc::EOPNOTSUPP => {
                        tracing::info!("this kernel has no dummy links; the cluster DNS address goes on lo");
                        ensure_on_loopback(&h, ip).await?;
                        return Ok(Holder::Loopback);
                    }
                    Err(e) if errno(&e) != libc::EEXIST => {
                        return Err(nl(format!("creating dummy link {LINK_NAME}"))(e))
                    }
                    _ => {}
                }
                get(&h, LINK_NAME).await?.ok_or_else(|| DnsError::Link(format!("link {LINK_NAME} disappeared")))?
            }
        };
        if kind(&link).as_deref() != Some("dummy") {
            return Err(DnsError::Link(format!(
                "link {LINK_NAME} exists but is not a dummy link; remove it (ip link del {LINK_NAME})"
            )));
        }
        let index = link.header.index;
        set_only_address(&h, index, ip, |_| true).await?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("setting {LINK_NAME} up")))?;
        // Drop what a run on a kernel without dummy links may have left on lo.
        remove_from_loopback(&h).await?;
        Ok(Holder::Dummy)
    })
    .await
}

fn label(msg: &AddressMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| if let AddressAttribute::Label(l) = a { Some(l.as_str()) } else { None })
}

/// Leaves `ip/32` as the only IPv4 address of link `index` among those `ours` accepts.
async fn set_only_address(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    ours: impl Fn(&AddressMessage) -> bool,
) -> Result<bool, DnsError> {
    let addresses: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses"))?;
    let mut present = false;
    for msg in addresses.into_iter().filter(|m| ours(m)) {
        let addr = address_of(&msg);
        if addr == Some(IpAddr::V4(ip)) && msg.header.prefix_len == 32 {
            present = true;
        } else if matches!(addr, Some(IpAddr::V4(_))) {
            h.address().del(msg).execute().await.map_err(nl("removing a stale cluster DNS address"))?;
        }
    }
    Ok(present)
}

async fn loopback_index(h: &Handle) -> Result<u32, DnsError> {
    Ok(get(h, "lo").await?.ok_or_else(|| DnsError::Link("this namespace has no lo".into()))?.header.index)
}

async fn ensure_on_loopback(h: &Handle, ip: Ipv4Addr) -> Result<(), DnsError> {
    let index = loopback_index(h).await?;
    if set_only_address(h, index, ip, |m| label(m) == Some(LO_LABEL)).await? {
        return Ok(());
    }
    let mut add = h.address().add(index, IpAddr::V4(ip), 32);
    add.message_mut().attributes.push(AddressAttribute::Label(LO_LABEL.into()));
    match add.execute().await {
        Err(e) if errno(&e) != libc::EEXIST => Err(nl(format!("adding {ip}/32 to lo"))(e)),
        _ => Ok(()),
    }
}

/// Removes the addresses on `lo` labelled [`LO_LABEL`]; whether there were any.
async fn remove_from_loopback(h: &Handle) -> Result<bool, DnsError> {
    let index = loopback_index(h).await?;
    let addresses: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses of lo"))?;
    let mut removed = false;
    for msg in addresses.into_iter().filter(|m| label(m) == Some(LO_LABEL)) {
        h.address().del(msg).execute().await.map_err(nl("removing the cluster DNS address from lo"))?;
        removed = true;
    }
    Ok(removed)
}

/// Removes the `skerry-dns` link (and so its address) and any address labelled
/// [`LO_LABEL`] on `lo`; `Ok(false)` when there was nothing to remove.
pub async fn remove_dns_address() -> Result<bool, DnsError> {
    with_handle(|h| async move {
        let from_lo = remove_from_loopback(&h).await?;
        let Some(link) = get(&h, LINK_NAME).await? else { return Ok(from_lo) };
        match h.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == libc::ENODEV => Ok(from_lo),
            Err(e) => Err(nl(format!("deleting link {LINK_NAME}"))(e)),
        }
    })
    .await
}
