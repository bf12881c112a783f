//! The Service proxy: ClusterIPs, external IPs and NodePorts as nftables rules in Skerry's table
//! (`inet skerry`), in the shape of kube-proxy's nftables mode.
//!
//! Owns, inside `inet skerry` and nothing else: the base chains `proxy-*` (nat on prerouting,
//! output and postrouting; filter on input, forward and output), the helper chains
//! `proxy-services`, `proxy-filter`, `proxy-mark-masq` and `proxy-reject`, the verdict maps
//! `service-ips`, `service-nodeports`, `no-endpoint-services` and `no-endpoint-nodeports`, one
//! chain `svc-<hash>` per service port with ready endpoints, one chain `ep-<hash>` per ready
//! endpoint, and one set `aff-<hash>` per endpoint of a service with ClientIP affinity. Other
//! parts of the table (hostPorts in [`super::nft`]) must not flush these.
//!
//! Invariant: the kernel holds what [`render_full`] of the last state given to [`Proxy::sync`]
//! describes, plus the garbage `Proxy` knows of (an update that needs no deletion is applied
//! add-only: the new rules of a service chain are inserted ahead of the old, now unreachable,
//! ones, and endpoint chains only those refer to stay; the next transaction that deletes anything,
//! or one after 64 such objects, collects it all, since any deletion costs the kernel 10-15 ms);
//! or `Proxy` knows it does not (after an error) and rebuilds.
//! Boundary: [`from_objects`] turns stored Services and Endpoints into [`ServicePort`]s;
//! [`render_full`] and [`render_update`] are pure; [`Proxy::sync`] is the only thing that
//! touches the kernel, through an [`NftRunner`].
//!
//! Layout: `model.rs` (what a state means as maps, chains and sets), `render.rs` (transactions),
//! `objects.rs` (Kubernetes JSON), `runner.rs` (running `nft`, in this or another namespace),
//! `netns.rs` (throwaway network namespaces for tests and the benchmark).

mod model;
pub mod netns;
mod objects;
mod render;
mod runner;

#[cfg(test)]
mod tests_kernel;

use std::net::Ipv4Addr;
use std::sync::Arc;

pub use super::nft::NftError;
pub use model::{affinity_set_name, endpoint_chain_name, service_chain_name};
pub use objects::from_objects;
pub use render::{render_full, render_full_text, render_resync, render_update, Existing};
pub use runner::{HostNft, NamespaceNft, NftRunner};

/// `TCP`, `UDP` or `SCTP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The nftables spelling (`tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Kubernetes spelling, any case; `None` for anything else.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One port of one Service, with the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    pub protocol: Protocol,
    /// `None` for headless services (and services not yet given an address).
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `Some(seconds)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/service:port-name/protocol` (the port number when unnamed), the readable name
    /// used in comments.
    pub fn display_name(&self) -> String {
        let port = if self.port_name.is_empty() { self.port.to_string() } else { self.port_name.clone() };
        format!("{}/{}:{}/{}", self.namespace, self.service, port, self.protocol.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
}

/// Everything the proxy's part of the table is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyState {
    /// `10.43.0.0/16`: any address in it that is not a live VIP and port is rejected.
    pub service_cidr: (Ipv4Addr, u8),
    /// Traffic from outside it to a service is masqueraded (use the cluster's pod CIDR).
    pub pod_cidr: (Ipv4Addr, u8),
    /// Addresses NodePorts answer on; empty means every local address except 127.0.0.0/8.
    pub node_ips: Vec<Ipv4Addr>,
    /// Addresses the node serves itself (the cluster DNS address): never rejected, never DNAT'ed.
    pub local_ips: Vec<Ipv4Addr>,
    pub services: Vec<ServicePort>,
}

/// What the kernel holds: a state, its model, and what add-only updates left behind.
type Applied = (ProxyState, model::Model, render::Garbage);

/// Keeps the proxy's part of the table in step with the [`ProxyState`] it is given.
///
/// The first sync (and the first after a failure) lists the table and rebuilds the proxy's part
/// over whatever is there ([`render_resync`]); later syncs apply only the difference
/// ([`render_update`], rebuilt only for the service ports that changed, and add-only when it can
/// be). Each sync is one `nft` transaction, or none when nothing changed.
pub struct Proxy {
    runner: Arc<dyn NftRunner>,
    /// What the kernel holds, when known, with its model (so an update builds only the new one).
    applied: Option<Applied>,
}

impl Proxy {
    /// A proxy for the daemon's own network namespace.
    pub fn new() -> Proxy {
        Proxy::with_runner(Arc::new(HostNft))
    }

    pub fn with_runner(runner: Arc<dyn NftRunner>) -> Proxy {
        Proxy { runner, applied: None }
    }

    /// The state the kernel holds, when known.
    pub fn applied(&self) -> Option<&ProxyState> {
        self.applied.as_ref().map(|(s, _, _)| s)
    }

    /// Forgets what was applied, so that the next sync rebuilds.
    pub fn invalidate(&mut self) {
        self.applied = None;
    }

    /// Brings the kernel to `state` in one transaction (none when nothing changed). After an
    /// error the next sync rebuilds from a listing of the table.
    pub async fn sync(&mut self, state: ProxyState) -> Result<(), NftError> {
        let runner = self.runner.clone();
        let old = self.applied.take();
        let (result, applied) = tokio::task::spawn_blocking(move || Proxy::step(runner.as_ref(), old, state))
            .await
            .map_err(|e| NftError::Apply(format!("proxy sync task failed: {e}")))?;
        self.applied = applied;
        result
    }

    /// Collects what add-only updates left behind (dead rules, unreferenced endpoint chains) in
    /// one transaction, if there is any; a sync that deletes anything does this anyway.
    pub fn collect_garbage_blocking(&mut self) -> Result<(), NftError> {
        let Some((state, model, mut garbage)) = self.applied.take() else {
            return Ok(());
        };
        if garbage.is_empty() {
            self.applied = Some((state, model, garbage));
            return Ok(());
        }
        let mut batch = render::Batch::text();
        garbage.collect(&mut batch, &model.globals, |c| model.chains.get(c), |c| model.chains.get(c));
        self.runner.apply(&batch.into_text())?;
        self.applied = Some((state, model, garbage));
        Ok(())
    }

    /// [`Proxy::sync`] for callers on a plain thread (tests, the benchmark).
    pub fn sync_blocking_now(&mut self, state: ProxyState) -> Result<(), NftError> {
        let (result, applied) = Proxy::step(self.runner.as_ref(), self.applied.take(), state);
        self.applied = applied;
        result
    }

    fn step(runner: &dyn NftRunner, old: Option<Applied>, new: ProxyState) -> (Result<(), NftError>, Option<Applied>) {
        let mut batch = render::Batch::text();
        let (model, garbage) = match old {
            Some((old_state, mut old_model, mut garbage)) => {
                if render::render_update_parts_deferring(
                    &old_state,
                    &mut old_model,
                    &new,
                    &mut batch,
                    Some(&mut garbage),
                ) {
                    // Only the service ports that changed were rebuilt and diffed.
                    (old_model, garbage)
                } else {
                    let model = model::Model::build(&new);
                    if model.globals != old_model.globals {
                        let mut existing = Existing::of(&old_model);
                        existing.chains.extend(garbage.chains.iter().cloned());
                        render::render_resync_model(&model, &existing, &mut batch);
                        garbage = render::Garbage::default();
                    } else {
                        if !garbage.is_empty() {
                            garbage.collect(
                                &mut batch,
                                &model.globals,
                                |c| old_model.chains.get(c),
                                |c| model.chains.get(c),
                            );
                        }
                        render::render_update_models(&old_model, &model, &mut batch);
                    }
                    (model, garbage)
                }
            }
            None => {
                let model = model::Model::build(&new);
                let existing = match runner.list_table() {
                    Ok(Some(listing)) => Existing::from_listing(&listing),
                    Ok(None) => Existing { complete: true, ..Existing::default() },
                    Err(e) => return (Err(e), None),
                };
                render::render_resync_model(&model, &existing, &mut batch);
                (model, render::Garbage::default())
            }
        };
        if batch.is_empty() {
            return (Ok(()), Some((new, model, garbage)));
        }
        match runner.apply(&batch.into_text()) {
            Ok(()) => (Ok(()), Some((new, model, garbage))),
            Err(e) => (Err(e), None),
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}
