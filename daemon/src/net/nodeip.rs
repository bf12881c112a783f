//! Finds the node's address: the IPv4 address of the interface that holds the default route,
//! read through netlink in the daemon's own network namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::RouteMessageBuilder;

/// The default-route interface's first IPv4 address; else the first global IPv4 address of
/// any interface; else loopback.
pub async fn detect() -> Ipv4Addr {
    match try_detect().await {
        Ok(Some(ip)) => ip,
        Ok(None) => Ipv4Addr::LOCALHOST,
        Err(e) => {
            tracing::warn!(error = %e, "could not read addresses through netlink; using 127.0.0.1 as the node address (pass --node-ip)");
            Ipv4Addr::LOCALHOST
        }
    }
}

async fn try_detect() -> Result<Option<Ipv4Addr>, String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let result = async {
        let routes: Vec<_> = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let default_oif = routes.iter().filter(|r| r.header.destination_prefix_length == 0).find_map(|r| {
            r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None })
        });
        let addrs: Vec<_> = handle.address().get().execute().try_collect().await.map_err(|e| e.to_string())?;
        let v4 = |m: &rtnetlink::packet_route::address::AddressMessage| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        };
        if let Some(oif) = default_oif {
            if let Some(ip) = addrs.iter().filter(|m| m.header.index == oif).find_map(v4) {
                return Ok(Some(ip));
            }
        }
        Ok(addrs.iter().filter_map(v4).find(|ip| !ip.is_loopback() && !ip.is_link_local()))
    }
    .await;
    task.abort();
    result
}
