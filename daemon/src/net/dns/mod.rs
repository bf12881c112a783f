//! Cluster DNS, served by skerryd itself (what CoreDNS's `kubernetes` plugin does elsewhere).
//!
//! Owns: the records of the cluster domain ([`records`]: pure, built from Services, Endpoints
//! and Pods), the server answering them over UDP and TCP and forwarding every other name to the
//! host's resolvers ([`server`]), the loop keeping the records in step with the store
//! ([`run_records`]), the `skerry-dns` dummy link holding the cluster DNS address ([`link`]),
//! and the resolv.conf pods get ([`pod_resolv_conf`]).
//!
//! Invariant: every question gets an answer — records, NXDOMAIN with the SOA, or SERVFAIL once
//! the upstreams have had their time — never silence. The server reads only the shared
//! [`Records`]; only [`run_records`] replaces them.
//!
//! Boundary: the daemon calls [`ensure_dns_address`], spawns [`run_records`] and [`run`]; the
//! agent calls [`pod_resolv_conf`]. Nothing here writes to the store.

pub mod link;
pub mod records;
pub mod server;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use link::{ensure_dns_address, remove_dns_address, Holder, LINK_NAME, LO_LABEL};
pub use records::{build, Answer, Records};
pub use server::{host_upstreams, run, serve, upstreams_from_resolv_conf, DnsServer, SharedRecords};

use crate::objects::{meta, resource};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr}: {source}; is another DNS server using it?")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("DNS message: {0}")]
    Proto(#[from] hickory_proto::ProtoError),
    #[error("DNS message: {0}")]
    Decode(#[from] hickory_proto::serialize::binary::DecodeError),
    #[error("sending a DNS response: {0}")]
    Net(#[from] hickory_server::net::NetError),
    #[error("upstream DNS: {0}")]
    Upstream(String),
    #[error("{context}: {source}")]
    Netlink { context: String, source: rtnetlink::Error },
    #[error("{0}")]
    Link(String),
}

/// The resolv.conf of a pod with `dnsPolicy: ClusterFirst` in `namespace`.
pub fn pod_resolv_conf(namespace: &str, dns_ip: Ipv4Addr, domain: &str) -> String {
    let d = domain.trim_end_matches('.');
    format!("nameserver {dns_ip}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n")
}

/// An empty record set for `domain`, to share between [`run_records`] and [`run`] before the
/// first build.
pub fn shared(domain: &str) -> SharedRecords {
    Arc::new(std::sync::RwLock::new(build(&[], &[], &[], domain)))
}

/// Rebuilds `records` whenever Services, Endpoints or Pods change (and on the controllers'
/// resync), until `shutdown`.
pub async fn run_records(store: Store, domain: String, records: SharedRecords, shutdown: CancellationToken) {
    let keys = [resource::SERVICES.key(), resource::ENDPOINTS.key(), resource::PODS.key()];
    let watched: Vec<&str> = keys.iter().map(String::as_str).collect();
    crate::controllers::run_loop(store.clone(), &watched, shutdown, || {
        let store = store.clone();
        let records = records.clone();
        let (domain, keys) = (domain.clone(), keys.clone());
        async move {
            let mut lists: Vec<Vec<Value>> = Vec::new();
            let mut revision = 0;
            for key in &keys {
                match store.list(key, None).await {
                    Ok((items, rev)) => {
                        revision = revision.max(rev);
                        lists.push(items.into_iter().filter(|o| !meta::is_deleting(o)).collect());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the store for DNS records failed; will retry");
                        return;
                    }
                }
            }
            let mut next = build(&lists[0], &lists[1], &lists[2], &domain);
            let mut current = records.write().unwrap_or_else(|e| e.into_inner());
            next.serial = current.serial;
            if *current != next {
                next.serial = u32::try_from(revision).unwrap_or(u32::MAX).max(current.serial.wrapping_add(1));
                tracing::debug!(names = next.len(), serial = next.serial, "cluster DNS records changed");
                *current = next;
            }
        }
    })
    .await;
}
