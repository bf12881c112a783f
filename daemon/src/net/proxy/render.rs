//! The proxy's `nft -j` transactions: a full (re)build and a minimal update, both rendered from
//! the same [`Model`], as pure functions.
//!
//! Order inside a transaction matters: sets and chains are added before the rules and map
//! elements that refer to them, and a chain or set is deleted only after every rule and map
//! element that referred to it was flushed or deleted earlier in the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::model::{self, cmp, goto, jump, payload, prefix, Globals, IpKey, Model, PortKey, Rule, Target, CHAIN_MARK_MASQ, CHAIN_REJECT, MASQ_BIT};
use super::ProxyState;
use crate::net::nft::{FAMILY, TABLE};

pub const MAP_SERVICE_IPS: &str = "service-ips";
pub const MAP_SERVICE_NODEPORTS: &str = "service-nodeports";
pub const MAP_NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const MAP_NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";

const CHAIN_SERVICES: &str = "proxy-services";
const CHAIN_FILTER: &str = "proxy-filter";

/// Base chains: name, type, hook, priority.
const BASE_CHAINS: [(&str, &str, &str, i32); 6] = [
    ("proxy-prerouting", "nat", "prerouting", -100),
    ("proxy-output", "nat", "output", -100),
    ("proxy-postrouting", "nat", "postrouting", 100),
    ("proxy-filter-input", "filter", "input", 0),
    ("proxy-filter-forward", "filter", "forward", 0),
    ("proxy-filter-output", "filter", "output", 0),
];
const HELPER_CHAINS: [&str; 4] = [CHAIN_SERVICES, CHAIN_FILTER, CHAIN_MARK_MASQ, CHAIN_REJECT];

/// Proxy objects found in the table: per-service and per-endpoint chains and affinity sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

impl Existing {
    /// From `nft -j list table inet skerry`.
    pub fn from_listing(listing: &Value) -> Existing {
        let mut e = Existing::default();
        for item in listing["nftables"].as_array().into_iter().flatten() {
            let ours = |o: &Value| o["family"] == FAMILY && o["table"] == TABLE;
            if let Some(name) = item["chain"]["name"].as_str().filter(|n| ours(&item["chain"]) && model::is_dynamic_chain(n)) {
                e.chains.insert(name.to_string());
            }
            if let Some(name) = item["set"]["name"].as_str().filter(|n| ours(&item["set"]) && model::is_affinity_set(n)) {
                e.sets.insert(name.to_string());
            }
        }
        e
    }

    fn of(m: &Model) -> Existing {
        Existing { chains: m.chains.keys().cloned().collect(), sets: m.sets.keys().cloned().collect() }
    }
}

fn obj(body: Value) -> Value {
    let mut o = json!({"family": FAMILY, "table": TABLE});
    if let (Some(o), Value::Object(b)) = (o.as_object_mut(), body) {
        o.extend(b);
    }
    o
}

fn cmd(verb: &str, kind: &str, body: Value) -> Value {
    json!({ verb: { kind: obj(body) } })
}

fn rule(chain: &str, r: &Rule) -> Value {
    let mut body = json!({"chain": chain, "expr": r.expr});
    if let Some(c) = &r.comment {
        body["comment"] = json!(c);
    }
    cmd("add", "rule", body)
}

fn fixed_rule(chain: &str, expr: Vec<Value>, comment: Option<&str>) -> Value {
    rule(chain, &Rule { expr, comment: comment.map(str::to_string) })
}

fn ip_key((ip, proto, port): &IpKey) -> Value {
    json!({"concat": [ip.to_string(), proto.as_str(), port]})
}

fn port_key((proto, port): &PortKey) -> Value {
    json!({"concat": [proto.as_str(), port]})
}

fn element(key: Value, comment: &str, chain: &str) -> Value {
    json!([{"elem": {"val": key, "comment": comment}}, goto(chain)])
}

/// The four verdict maps as (name, key type, elements as (key, comment, chain)).
fn maps(m: &Model) -> [(&'static str, Value, BTreeMap<String, (Value, String, String)>); 4] {
    let ip_type = json!(["ipv4_addr", "inet_proto", "inet_service"]);
    let port_type = json!(["inet_proto", "inet_service"]);
    // Keyed by the key's JSON text, so the four maps share one diff.
    fn ips<'a>(it: impl Iterator<Item = (&'a IpKey, String, String)>) -> BTreeMap<String, (Value, String, String)> {
        it.map(|(k, c, ch)| (ip_key(k).to_string(), (ip_key(k), c, ch))).collect()
    }
    fn ports<'a>(it: impl Iterator<Item = (&'a PortKey, String, String)>) -> BTreeMap<String, (Value, String, String)> {
        it.map(|(k, c, ch)| (port_key(k).to_string(), (port_key(k), c, ch))).collect()
    }
    let t = |(k, t): (&IpKey, &Target)| (k, t.comment.clone(), t.chain.clone());
    let tp = |(k, t): (&PortKey, &Target)| (k, t.comment.clone(), t.chain.clone());
    [
        (MAP_SERVICE_IPS, ip_type.clone(), ips(m.service_ips.iter().map(t))),
        (MAP_SERVICE_NODEPORTS, port_type.clone(), ports(m.service_nodeports.iter().map(tp))),
        (MAP_NO_ENDPOINT_SERVICES, ip_type, ips(m.no_endpoint_services.iter().map(|(k, c)| (k, c.clone(), CHAIN_REJECT.to_string())))),
        (MAP_NO_ENDPOINT_NODEPORTS, port_type, ports(m.no_endpoint_nodeports.iter().map(|(k, c)| (k, c.clone(), CHAIN_REJECT.to_string())))),
    ]
}

/// `fib daddr type local` plus the NodePort address restriction.
fn nodeport_match(g: &Globals) -> Vec<Value> {
    let mut v = vec![cmp("==", json!({"fib": {"result": "type", "flags": ["daddr"]}}), json!("local"))];
    if g.node_ips.is_empty() {
        v.push(cmp("!=", payload("ip", "daddr"), prefix(("127.0.0.0".parse().expect("literal"), 8))));
    } else {
        let ips: Vec<String> = g.node_ips.iter().map(|i| i.to_string()).collect();
        v.push(cmp("==", payload("ip", "daddr"), json!({"set": ips})));
    }
    v
}

fn dispatch(map: &str, with_addr: bool) -> Value {
    let mut key = vec![];
    if with_addr {
        key.push(payload("ip", "daddr"));
    }
    key.push(json!({"meta": {"key": "l4proto"}}));
    key.push(payload("th", "dport"));
    json!({"vmap": {"key": {"concat": key}, "data": format!("@{map}")}})
}

/// Rules of the fixed chains (flushed and re-added by every full build).
fn fixed_rules(g: &Globals) -> Vec<Value> {
    let ct_new = json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}});
    let mark = json!({"meta": {"key": "mark"}});
    let mut out = vec![
        fixed_rule("proxy-prerouting", vec![jump(CHAIN_SERVICES)], None),
        fixed_rule("proxy-output", vec![jump(CHAIN_SERVICES)], None),
        fixed_rule(
            "proxy-postrouting",
            vec![
                cmp("==", json!({"&": [mark, MASQ_BIT]}), json!(MASQ_BIT)),
                json!({"mangle": {"key": mark, "value": {"^": [mark, MASQ_BIT]}}}),
                json!({"masquerade": null}),
            ],
            Some("service traffic marked for masquerade"),
        ),
    ];
    for (chain, _, _, _) in &BASE_CHAINS[3..] {
        out.push(fixed_rule(chain, vec![ct_new.clone(), jump(CHAIN_FILTER)], None));
    }
    out.push(fixed_rule(CHAIN_SERVICES, vec![dispatch(MAP_SERVICE_IPS, true)], None));
    let mut np = nodeport_match(g);
    np.push(dispatch(MAP_SERVICE_NODEPORTS, false));
    out.push(fixed_rule(CHAIN_SERVICES, np, None));

    out.push(fixed_rule(CHAIN_FILTER, vec![dispatch(MAP_NO_ENDPOINT_SERVICES, true)], None));
    let mut np = nodeport_match(g);
    np.push(dispatch(MAP_NO_ENDPOINT_NODEPORTS, false));
    out.push(fixed_rule(CHAIN_FILTER, np, None));
    let mut cidr = vec![cmp("==", payload("ip", "daddr"), prefix(g.service_cidr))];
    if !g.local_ips.is_empty() {
        let ips: Vec<String> = g.local_ips.iter().map(|i| i.to_string()).collect();
        cidr.push(cmp("!=", payload("ip", "daddr"), json!({"set": ips})));
    }
    cidr.push(goto(CHAIN_REJECT));
    out.push(fixed_rule(CHAIN_FILTER, cidr, Some("service address or port not allocated")));

    out.push(fixed_rule(CHAIN_MARK_MASQ, vec![json!({"mangle": {"key": mark, "value": {"|": [mark, MASQ_BIT]}}})], None));
    out.push(fixed_rule(
        CHAIN_REJECT,
        vec![cmp("==", json!({"meta": {"key": "l4proto"}}), json!("tcp")), json!({"reject": {"type": "tcp reset"}})],
        None,
    ));
    out.push(fixed_rule(CHAIN_REJECT, vec![json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}})], None));
    out
}

fn add_set(name: &str, timeout: u32) -> Value {
    cmd("add", "set", json!({"name": name, "type": "ipv4_addr", "flags": ["timeout"], "timeout": timeout}))
}

fn chain_ref(verb: &str, name: &str) -> Value {
    cmd(verb, "chain", json!({"name": name}))
}

/// The proxy's whole part of the table as one transaction, for a table that holds no proxy
/// objects yet or only ones this module made without affinity sets. Idempotent for chains and
/// maps (they are added, then flushed); an existing affinity set cannot be re-declared through
/// nft 1.0.6's JSON, so over a table that may hold some use [`render_resync`] with a listing
/// (as [`super::Proxy`] does).
pub fn render_full(state: &ProxyState) -> Value {
    render_resync(state, &Existing::default())
}

/// [`render_full`] over a table that holds the proxy objects in `existing`: they are flushed,
/// those no longer wanted are deleted, affinity sets that are still wanted are kept (with their
/// entries).
pub fn render_resync(state: &ProxyState, existing: &Existing) -> Value {
    let m = Model::build(state);
    let mut b = vec![json!({"add": {"table": {"family": FAMILY, "name": TABLE}}})];
    // 1. Drop every reference held by what exists: rules of old chains, elements of the maps.
    for c in &existing.chains {
        b.push(chain_ref("flush", c));
    }
    for (name, ty, hook, prio) in BASE_CHAINS {
        b.push(cmd("add", "chain", json!({"name": name, "type": ty, "hook": hook, "prio": prio, "policy": "accept"})));
        b.push(chain_ref("flush", name));
    }
    for name in HELPER_CHAINS {
        b.push(chain_ref("add", name));
        b.push(chain_ref("flush", name));
    }
    let maps = maps(&m);
    for (name, ty, _) in &maps {
        b.push(cmd("add", "map", json!({"name": name, "type": ty, "map": "verdict"})));
        b.push(cmd("flush", "map", json!({"name": name})));
    }
    // 2. Now unreferenced: delete what is no longer wanted.
    for c in existing.chains.iter().filter(|c| !m.chains.contains_key(*c)) {
        b.push(chain_ref("delete", c));
    }
    for s in existing.sets.iter().filter(|s| !m.sets.contains_key(*s)) {
        b.push(cmd("delete", "set", json!({"name": s})));
    }
    // 3. Declare, then fill.
    for (s, timeout) in m.sets.iter().filter(|(s, _)| !existing.sets.contains(*s)) {
        b.push(add_set(s, *timeout));
    }
    for c in m.chains.keys().filter(|c| !existing.chains.contains(*c)) {
        b.push(chain_ref("add", c));
        b.push(chain_ref("flush", c));
    }
    for c in m.chains.keys().filter(|c| existing.chains.contains(*c)) {
        b.push(chain_ref("add", c));
    }
    b.extend(fixed_rules(&m.globals));
    for (c, rules) in &m.chains {
        b.extend(rules.iter().map(|r| rule(c, r)));
    }
    for (name, _, elems) in &maps {
        if !elems.is_empty() {
            let elem: Vec<Value> = elems.values().map(|(k, comment, chain)| element(k.clone(), comment, chain)).collect();
            b.push(cmd("add", "element", json!({"name": name, "elem": elem})));
        }
    }
    json!({"nftables": b})
}

/// Only what changed from `old` to `new`, as one transaction; `None` when nothing did. A change
/// of the CIDRs or node addresses rebuilds the proxy's part ([`render_resync`] over `old`).
pub fn render_update(old: &ProxyState, new: &ProxyState) -> Option<Value> {
    let (a, z) = (Model::build(old), Model::build(new));
    if a.globals != z.globals {
        return Some(render_resync(new, &Existing::of(&a)));
    }
    let mut b = Vec::new();
    for (s, timeout) in z.sets.iter().filter(|(s, _)| !a.sets.contains_key(*s)) {
        b.push(add_set(s, *timeout));
    }
    for c in z.chains.keys().filter(|c| !a.chains.contains_key(*c)) {
        b.push(chain_ref("add", c));
    }
    for (c, rules) in &z.chains {
        match a.chains.get(c) {
            Some(old_rules) if old_rules == rules => continue,
            Some(_) => b.push(chain_ref("flush", c)),
            None => {}
        }
        b.extend(rules.iter().map(|r| rule(c, r)));
    }
    let (old_maps, new_maps) = (maps(&a), maps(&z));
    let mut adds = Vec::new();
    for ((name, _, before), (_, _, after)) in old_maps.iter().zip(new_maps.iter()) {
        let gone: Vec<Value> = before.iter().filter(|(k, v)| after.get(*k) != Some(*v)).map(|(_, (key, _, _))| key.clone()).collect();
        if !gone.is_empty() {
            b.push(cmd("delete", "element", json!({"name": name, "elem": gone})));
        }
        let came: Vec<Value> =
            after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(_, (key, comment, chain))| element(key.clone(), comment, chain)).collect();
        if !came.is_empty() {
            adds.push(cmd("add", "element", json!({"name": name, "elem": came})));
        }
    }
    b.extend(adds);
    let removed: Vec<&String> = a.chains.keys().filter(|c| !z.chains.contains_key(*c)).collect();
    b.extend(removed.iter().map(|c| chain_ref("flush", c)));
    b.extend(removed.iter().map(|c| chain_ref("delete", c)));
    for s in a.sets.keys().filter(|s| !z.sets.contains_key(*s)) {
        b.push(cmd("delete", "set", json!({"name": s})));
    }
    (!b.is_empty()).then(|| json!({"nftables": b}))
}
