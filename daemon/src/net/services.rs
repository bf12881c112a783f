//! Keeps the Service proxy in step with the store: Services and Endpoints in, one nftables
//! transaction out per burst of changes (`run_loop` coalesces), nothing when nothing changed.

use std::net::Ipv4Addr;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::proxy::{from_objects, Proxy, ProxyState};
use crate::objects::{meta, resource};
use crate::store::Store;

/// Addresses and ranges the proxy needs besides the objects.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub service_cidr: (Ipv4Addr, u8),
    pub pod_cidr: (Ipv4Addr, u8),
    pub node_ip: Ipv4Addr,
    /// Served by the node itself (the cluster DNS address).
    pub local_ips: Vec<Ipv4Addr>,
}

pub async fn run(store: Store, config: ProxyConfig, shutdown: CancellationToken) {
    let proxy = std::sync::Arc::new(tokio::sync::Mutex::new(Proxy::new()));
    let watched = [resource::SERVICES.key(), resource::ENDPOINTS.key()];
    let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
    crate::controllers::run_loop(store.clone(), &watched, shutdown, || {
        let store = store.clone();
        let config = config.clone();
        let proxy = proxy.clone();
        async move {
            let (Ok((services, _)), Ok((endpoints, _))) =
                (store.list(&resource::SERVICES.key(), None).await, store.list(&resource::ENDPOINTS.key(), None).await)
            else {
                return;
            };
            let live = |v: Vec<Value>| -> Vec<Value> { v.into_iter().filter(|o| !meta::is_deleting(o)).collect() };
            let state = ProxyState {
                service_cidr: config.service_cidr,
                pod_cidr: config.pod_cidr,
                node_ips: vec![config.node_ip],
                local_ips: config.local_ips.clone(),
                services: from_objects(&live(services), &live(endpoints)),
            };
            if let Err(e) = proxy.lock().await.sync(state).await {
                tracing::error!(error = %e, "programming the Service proxy failed; will retry");
            }
        }
    })
    .await;
}
