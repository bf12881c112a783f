//! What a [`ProxyState`] means in nftables objects: map elements, per-service and per-endpoint
//! chains with their rules, and affinity sets. Both renderings are built from this, so a full
//! rebuild and an update can never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Endpoint, Protocol, ProxyState, ServicePort};

/// The packet-mark bit that asks `proxy-postrouting` to masquerade (kube-proxy's bit too).
pub const MASQ_BIT: u32 = 0x4000;

pub const CHAIN_MARK_MASQ: &str = "proxy-mark-masq";
pub const CHAIN_REJECT: &str = "proxy-reject";

pub type IpKey = (Ipv4Addr, Protocol, u16);
pub type PortKey = (Protocol, u16);

/// The state that every rule in the fixed chains depends on; when it changes, everything is
/// rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Globals {
    pub service_cidr: (Ipv4Addr, u8),
    pub pod_cidr: (Ipv4Addr, u8),
    pub node_ips: Vec<Ipv4Addr>,
    pub local_ips: Vec<Ipv4Addr>,
}

/// A map element's value: `goto <chain>`, with the service's readable name as its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub chain: String,
    pub comment: String,
}

/// A per-service or per-endpoint chain, as data; its rules are built only when rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainSpec {
    /// Masquerade traffic from outside the pod CIDR, honour affinity, pick a ready endpoint.
    Service { comment: String, endpoints: Vec<(String, Option<String>)> },
    /// Masquerade hairpin traffic, remember the client for affinity, DNAT.
    Endpoint { ip: Ipv4Addr, port: u16, protocol: Protocol, affinity: Option<String>, comment: String },
}

/// A verdict-map key: address, protocol and port, or (NodePorts) protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapKey {
    Ip(IpKey),
    Port(PortKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub globals: Globals,
    /// `service-ips`, `service-nodeports`, `no-endpoint-services`, `no-endpoint-nodeports`.
    pub maps: [BTreeMap<MapKey, Target>; 4],
    /// `svc-*` and `ep-*` chains.
    pub chains: BTreeMap<String, ChainSpec>,
    /// `aff-*` sets and their timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// How many service ports claim each map key (in any map), winners or not: a key claimed
    /// once belongs to its service port alone, so that port can be rebuilt and diffed alone.
    pub claims: HashMap<MapKey, u32>,
}

pub const MAP_NAMES: [&str; 4] = ["service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports"];
const SERVICE_IPS: usize = 0;
const SERVICE_NODEPORTS: usize = 1;
const NO_ENDPOINT_SERVICES: usize = 2;
const NO_ENDPOINT_NODEPORTS: usize = 3;

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    hex::encode(&digest[..8])
}

fn service_key(sp: &ServicePort) -> String {
    format!("{}/{}/{}/{}", sp.namespace, sp.service, sp.protocol.as_str(), sp.port_name)
}

/// `svc-` and 16 hex digits of a hash of namespace, name, protocol and port name (stable across
/// restarts; 20 characters, within nftables' 31).
pub fn service_chain_name(sp: &ServicePort) -> String {
    format!("svc-{}", short_hash(&service_key(sp)))
}

/// `ep-` and a hash of the service port and the endpoint's address and port.
pub fn endpoint_chain_name(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("ep-{}", short_hash(&format!("{}/{}:{}", service_key(sp), ep.ip, ep.port)))
}

/// `aff-` and a hash of the endpoint and the timeout: a new timeout is a new set, so that a set
/// that exists is never re-declared (nft 1.0.6 cannot re-declare a set its own batch made
/// dynamic).
pub fn affinity_set_name(sp: &ServicePort, ep: &Endpoint, timeout: u32) -> String {
    format!("aff-{}", short_hash(&format!("{}/{}:{}/{}", service_key(sp), ep.ip, ep.port, timeout)))
}

/// True for names of chains this module creates per service or endpoint.
pub fn is_dynamic_chain(name: &str) -> bool {
    let hash = name.strip_prefix("svc-").or_else(|| name.strip_prefix("ep-"));
    hash.is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn is_affinity_set(name: &str) -> bool {
    name.strip_prefix("aff-").is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

pub fn prefix((addr, len): (Ipv4Addr, u8)) -> Value {
    json!({"prefix": {"addr": addr.to_string(), "len": len}})
}

pub fn cmp(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

pub fn jump(target: &str) -> Value {
    json!({"jump": {"target": target}})
}

pub fn goto(target: &str) -> Value {
    json!({"goto": {"target": target}})
}

fn sorted_unique(v: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = v.iter().copied().collect();
    set.into_iter().collect()
}

/// The map keys a service port claims: its addresses (but the node's own) with its protocol and
/// port, and its NodePort; sorted.
fn claimed_keys(sp: &ServicePort, local: &[Ipv4Addr]) -> Vec<MapKey> {
    let mut vips: Vec<Ipv4Addr> = sp.cluster_ip.into_iter().chain(sp.external_ips.iter().copied()).collect();
    vips = sorted_unique(&vips);
    vips.retain(|ip| !local.contains(ip));
    vips.iter()
        .map(|ip| MapKey::Ip((*ip, sp.protocol, sp.port)))
        .chain(sp.node_port.map(|np| MapKey::Port((sp.protocol, np))))
        .collect()
}

/// What identifies a service port (and is hashed into its chain names).
type SvcId<'a> = (&'a str, &'a str, &'a str, Protocol);

fn svc_id(sp: &ServicePort) -> SvcId<'_> {
    (&sp.namespace, &sp.service, &sp.port_name, sp.protocol)
}

/// The service ports that differ from `old` to `new`: `(before, after)`, a port that appeared
/// only in `after`, one that went only in `before`. `None` when a state names a port twice (then
/// only a full build says what wins).
pub fn changed_services<'a>(
    old: &'a ProxyState,
    new: &'a ProxyState,
) -> Option<(Vec<&'a ServicePort>, Vec<&'a ServicePort>)> {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    // The usual case: the same ports in the same order.
    if old.services.len() == new.services.len()
        && old.services.iter().zip(&new.services).all(|(a, z)| svc_id(a) == svc_id(z))
    {
        let mut seen: std::collections::HashSet<SvcId> = std::collections::HashSet::with_capacity(old.services.len());
        for (a, z) in old.services.iter().zip(&new.services) {
            if !seen.insert(svc_id(a)) {
                return None;
            }
            if a != z {
                before.push(a);
                after.push(z);
            }
        }
        return Some((before, after));
    }
    let mut olds: HashMap<SvcId, &ServicePort> = HashMap::with_capacity(old.services.len());
    for sp in &old.services {
        if olds.insert(svc_id(sp), sp).is_some() {
            return None;
        }
    }
    let mut seen: std::collections::HashSet<SvcId> = std::collections::HashSet::with_capacity(new.services.len());
    for sp in &new.services {
        if !seen.insert(svc_id(sp)) {
            return None;
        }
        match olds.remove(&svc_id(sp)) {
            Some(o) if o == sp => {}
            Some(o) => {
                before.push(o);
                after.push(sp);
            }
            None => after.push(sp),
        }
    }
    before.extend(olds.into_values());
    Some((before, after))
}

impl Model {
    pub fn globals(state: &ProxyState) -> Globals {
        Globals {
            service_cidr: state.service_cidr,
            pod_cidr: state.pod_cidr,
            node_ips: sorted_unique(&state.node_ips),
            local_ips: sorted_unique(&state.local_ips),
        }
    }

    pub fn build(state: &ProxyState) -> Model {
        Model::build_from(Model::globals(state), state.services.iter().collect())
    }

    /// Only the globals and the claims of `state` (enough for [`Model::can_replace`]), without
    /// building chains: O(services).
    pub fn claims_only(state: &ProxyState) -> Model {
        let globals = Model::globals(state);
        let mut claims = HashMap::new();
        for sp in &state.services {
            for k in claimed_keys(sp, &globals.local_ips) {
                *claims.entry(k).or_insert(0) += 1;
            }
        }
        Model { globals, maps: Default::default(), chains: BTreeMap::new(), sets: BTreeMap::new(), claims }
    }

    /// The model of some service ports alone (all of them: [`Model::build`]).
    pub fn build_from(globals: Globals, mut services: Vec<&ServicePort>) -> Model {
        let mut m = Model {
            globals,
            maps: Default::default(),
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
            claims: HashMap::new(),
        };
        services.sort_by(|a, b| {
            (&a.namespace, &a.service, &a.port_name, a.protocol).cmp(&(
                &b.namespace,
                &b.service,
                &b.port_name,
                b.protocol,
            ))
        });
        for sp in services {
            m.add_service(sp);
        }
        m
    }

    /// True when `before` (a part of this model, built alone) can be replaced by `after` without
    /// looking at any other service port: every key either touches is claimed by one port at
    /// most, before and after.
    pub fn can_replace(&self, before: &Model, after: &Model) -> bool {
        before.globals == self.globals
            && after.globals == self.globals
            && before.claims.keys().chain(after.claims.keys()).all(|k| {
                let now = self.claims.get(k).copied().unwrap_or(0);
                let then = now - before.claims.get(k).copied().unwrap_or(0).min(now)
                    + after.claims.get(k).copied().unwrap_or(0);
                now <= 1 && then <= 1
            })
    }

    /// Replaces the part `before` by `after` (see [`Model::can_replace`]).
    pub fn replace(&mut self, before: &Model, after: Model) {
        for (map, part) in self.maps.iter_mut().zip(&before.maps) {
            for k in part.keys() {
                map.remove(k);
            }
        }
        for c in before.chains.keys() {
            self.chains.remove(c);
        }
        for s in before.sets.keys() {
            self.sets.remove(s);
        }
        for (k, n) in &before.claims {
            if let Some(c) = self.claims.get_mut(k) {
                *c -= (*n).min(*c);
                if *c == 0 {
                    self.claims.remove(k);
                }
            }
        }
        for (map, part) in self.maps.iter_mut().zip(after.maps) {
            map.extend(part);
        }
        self.chains.extend(after.chains);
        self.sets.extend(after.sets);
        for (k, n) in after.claims {
            *self.claims.entry(k).or_insert(0) += n;
        }
    }

    /// Adds one service port. When two ports claim the same address and port (or NodePort), the
    /// first in (namespace, name, port name) order keeps it.
    fn add_service(&mut self, sp: &ServicePort) {
        let ready: BTreeSet<(Ipv4Addr, u16)> =
            sp.endpoints.iter().filter(|e| e.ready).map(|e| (e.ip, e.port)).collect();
        let comment = sp.display_name();
        let keys = claimed_keys(sp, &self.globals.local_ips);
        for key in &keys {
            *self.claims.entry(*key).or_insert(0) += 1;
        }
        if ready.is_empty() {
            let target = Target { chain: CHAIN_REJECT.to_string(), comment };
            for key in keys {
                let map = if matches!(key, MapKey::Ip(_)) { NO_ENDPOINT_SERVICES } else { NO_ENDPOINT_NODEPORTS };
                self.maps[map].entry(key).or_insert_with(|| target.clone());
            }
            return;
        }
        let chain = service_chain_name(sp);
        let target = Target { chain: chain.clone(), comment: comment.clone() };
        let mut used = false;
        for key in keys {
            let map = if matches!(key, MapKey::Ip(_)) { SERVICE_IPS } else { SERVICE_NODEPORTS };
            if let std::collections::btree_map::Entry::Vacant(e) = self.maps[map].entry(key) {
                e.insert(target.clone());
                used = true;
            }
        }
        if !used {
            return;
        }
        let mut endpoints = Vec::new();
        for (ip, port) in ready {
            let ep = Endpoint { ip, port, ready: true };
            let ep_chain = endpoint_chain_name(sp, &ep);
            let affinity = sp.affinity_timeout.map(|t| {
                let set = affinity_set_name(sp, &ep, t);
                self.sets.insert(set.clone(), t);
                set
            });
            let spec = ChainSpec::Endpoint {
                ip,
                port,
                protocol: sp.protocol,
                affinity: affinity.clone(),
                comment: format!("{comment} -> {ip}:{port}"),
            };
            self.chains.insert(ep_chain.clone(), spec);
            endpoints.push((ep_chain, affinity));
        }
        self.chains.insert(chain, ChainSpec::Service { comment, endpoints });
    }
}

impl ChainSpec {
    /// The chain's rules, as `(expressions, comment)`: the test oracle for the text the renderer
    /// writes directly (`render::tests::text_rules_match_value_rules`); production never builds it.
    #[cfg(test)]
    pub fn rules(&self, g: &Globals) -> Vec<(Vec<Value>, Option<&str>)> {
        match self {
            ChainSpec::Service { comment, endpoints } => {
                let mut out =
                    vec![(vec![cmp("!=", payload("ip", "saddr"), prefix(g.pod_cidr)), jump(CHAIN_MARK_MASQ)], None)];
                for (ep, aff) in endpoints {
                    if let Some(set) = aff {
                        out.push((vec![cmp("==", payload("ip", "saddr"), json!(format!("@{set}"))), goto(ep)], None));
                    }
                }
                let vmap: Vec<Value> = endpoints.iter().enumerate().map(|(i, (ep, _))| json!([i, goto(ep)])).collect();
                let numgen = json!({"vmap": {"key": {"numgen": {"mode": "random", "mod": endpoints.len(), "offset": 0}}, "data": {"set": vmap}}});
                out.push((vec![numgen], Some(comment.as_str())));
                out
            }
            ChainSpec::Endpoint { ip, port, protocol, affinity, comment } => {
                let mut out =
                    vec![(vec![cmp("==", payload("ip", "saddr"), json!(ip.to_string())), jump(CHAIN_MARK_MASQ)], None)];
                if let Some(set) = affinity {
                    out.push((
                        vec![
                            json!({"set": {"op": "update", "elem": payload("ip", "saddr"), "set": format!("@{set}")}}),
                        ],
                        None,
                    ));
                }
                out.push((
                    vec![
                        cmp("==", json!({"meta": {"key": "l4proto"}}), json!(protocol.as_str())),
                        json!({"dnat": {"family": "ip", "addr": ip.to_string(), "port": port}}),
                    ],
                    Some(comment.as_str()),
                ));
                out
            }
        }
    }
}
