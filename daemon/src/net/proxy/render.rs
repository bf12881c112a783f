//! The proxy's `nft -j` transactions: a full (re)build and a minimal update, both rendered from
//! the same [`Model`], as pure functions.
//!
//! Order inside a transaction matters: sets and chains are added before the rules and map
//! elements that refer to them, and a chain or set is deleted only after every rule and map
//! element that referred to it was flushed or deleted earlier in the same transaction.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::model::{
    self, cmp, goto, jump, payload, prefix, ChainSpec, Globals, MapKey, Model, Target, CHAIN_MARK_MASQ, CHAIN_REJECT,
    MAP_NAMES, MASQ_BIT,
};
use super::ProxyState;
use crate::net::nft::{FAMILY, TABLE};

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
    /// True when this is all there is (from a listing or the last applied state), so chains not
    /// named here need no flush.
    pub complete: bool,
}

impl Existing {
    /// From `nft -j list table inet skerry`.
    pub fn from_listing(listing: &Value) -> Existing {
        let mut e = Existing { complete: true, ..Existing::default() };
        for item in listing["nftables"].as_array().into_iter().flatten() {
            let ours = |o: &Value| o["family"] == FAMILY && o["table"] == TABLE;
            if let Some(name) =
                item["chain"]["name"].as_str().filter(|n| ours(&item["chain"]) && model::is_dynamic_chain(n))
            {
                e.chains.insert(name.to_string());
            }
            if let Some(name) = item["set"]["name"].as_str().filter(|n| ours(&item["set"]) && model::is_affinity_set(n))
            {
                e.sets.insert(name.to_string());
            }
        }
        e
    }

    pub(super) fn of(m: &Model) -> Existing {
        Existing { chains: m.chains.keys().cloned().collect(), sets: m.sets.keys().cloned().collect(), complete: true }
    }
}

/// Where rendered commands go: kept as values (the public renderers, tests) or written out as
/// `nft -j` text at once (the applier; building a whole batch as one `Value` tree costs several
/// times more than the text, at thousands of services).
pub(super) enum Batch {
    Values(Vec<Value>),
    Text { text: String, empty: bool },
}

impl Batch {
    pub(super) fn text() -> Batch {
        Batch::Text { text: String::from("{\"nftables\":["), empty: true }
    }

    fn push(&mut self, cmd: Value) {
        match self {
            Batch::Values(v) => v.push(cmd),
            Batch::Text { text, empty } => {
                if !*empty {
                    text.push(',');
                }
                *empty = false;
                text.push_str(&cmd.to_string());
            }
        }
    }

    /// One command already written as JSON text.
    fn push_raw(&mut self, cmd: &str) {
        match self {
            Batch::Values(v) => v.push(serde_json::from_str(cmd).expect("rendered JSON")),
            Batch::Text { text, empty } => {
                if !*empty {
                    text.push(',');
                }
                *empty = false;
                text.push_str(cmd);
            }
        }
    }

    fn extend(&mut self, cmds: impl IntoIterator<Item = Value>) {
        for c in cmds {
            self.push(c);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Batch::Values(v) => v.is_empty(),
            Batch::Text { empty, .. } => *empty,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Batch::Values(v) => json!({"nftables": v}),
            Batch::Text { text, .. } => serde_json::from_str(&(text + "]}")).expect("rendered JSON"),
        }
    }

    pub(super) fn into_text(self) -> String {
        match self {
            Batch::Values(v) => json!({"nftables": v}).to_string(),
            Batch::Text { text, .. } => text + "]}",
        }
    }
}

fn cmd(verb: &str, kind: &str, body: Value) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("family".into(), json!(FAMILY));
    o.insert("table".into(), json!(TABLE));
    if let Value::Object(b) = body {
        o.extend(b);
    }
    json!({ verb: { kind: o } })
}

fn rule(chain: &str, expr: Vec<Value>, comment: Option<&str>) -> Value {
    let mut body = json!({"chain": chain, "expr": expr});
    if let Some(c) = comment {
        body["comment"] = json!(c);
    }
    cmd("add", "rule", body)
}

/// The rules of a per-service or per-endpoint chain, written straight as text (the bulk of a
/// full build: building them as `Value` trees first cost most of the rendering). Same JSON,
/// key for key, as [`ChainSpec::rules`] through [`rule`].
fn chain_rules(b: &mut Batch, name: &str, spec: &ChainSpec, g: &Globals) {
    for r in chain_rule_texts("add", name, spec, g) {
        b.push_raw(&r);
    }
}

/// The chain's rules as `insert` commands, last first, so that they end up at the head of the
/// chain in order, ahead of the rules already there.
fn insert_chain_rules(b: &mut Batch, name: &str, spec: &ChainSpec, g: &Globals) {
    for r in chain_rule_texts("insert", name, spec, g).iter().rev() {
        b.push_raw(r);
    }
}

fn chain_rule_texts(verb: &str, name: &str, spec: &ChainSpec, g: &Globals) -> Vec<String> {
    use std::fmt::Write;
    let mut all = Vec::new();
    let b = &mut all;
    const SADDR: &str = r#"{"payload":{"protocol":"ip","field":"saddr"}}"#;
    const MASQ: &str = r#"{"jump":{"target":"proxy-mark-masq"}}"#;
    let mut out = String::with_capacity(256);
    let mut rule = |b: &mut Vec<String>, expr: &str, comment: Option<&str>| {
        out.clear();
        let _ = write!(
            out,
            r#"{{"{verb}":{{"rule":{{"family":"{FAMILY}","table":"{TABLE}","chain":"{name}","expr":[{expr}]"#
        );
        if let Some(c) = comment {
            out.push_str(r#","comment":"#);
            out.push_str(&json!(c).to_string());
        }
        out.push_str("}}}");
        b.push(out.clone());
    };
    let mut expr = String::with_capacity(256);
    match spec {
        ChainSpec::Service { comment, endpoints } => {
            let (addr, len) = g.pod_cidr;
            let _ = write!(
                expr,
                r#"{{"match":{{"op":"!=","left":{SADDR},"right":{{"prefix":{{"addr":"{addr}","len":{len}}}}}}}}},{MASQ}"#
            );
            rule(b, &expr, None);
            for (ep, aff) in endpoints {
                if let Some(set) = aff {
                    expr.clear();
                    let _ = write!(
                        expr,
                        r#"{{"match":{{"op":"==","left":{SADDR},"right":"@{set}"}}}},{{"goto":{{"target":"{ep}"}}}}"#
                    );
                    rule(b, &expr, None);
                }
            }
            expr.clear();
            let _ = write!(
                expr,
                r#"{{"vmap":{{"key":{{"numgen":{{"mode":"random","mod":{},"offset":0}}}},"data":{{"set":["#,
                endpoints.len()
            );
            for (i, (ep, _)) in endpoints.iter().enumerate() {
                if i > 0 {
                    expr.push(',');
                }
                let _ = write!(expr, r#"[{i},{{"goto":{{"target":"{ep}"}}}}]"#);
            }
            expr.push_str("]}}}");
            rule(b, &expr, Some(comment));
        }
        ChainSpec::Endpoint { ip, port, protocol, affinity, comment } => {
            let _ = write!(expr, r#"{{"match":{{"op":"==","left":{SADDR},"right":"{ip}"}}}},{MASQ}"#);
            rule(b, &expr, None);
            if let Some(set) = affinity {
                expr.clear();
                let _ = write!(expr, r#"{{"set":{{"op":"update","elem":{SADDR},"set":"@{set}"}}}}"#);
                rule(b, &expr, None);
            }
            expr.clear();
            let _ = write!(
                expr,
                r#"{{"match":{{"op":"==","left":{{"meta":{{"key":"l4proto"}}}},"right":"{}"}}}},{{"dnat":{{"family":"ip","addr":"{ip}","port":{port}}}}}"#,
                protocol.as_str()
            );
            rule(b, &expr, Some(comment));
        }
    }
    all
}

/// `add chain` (or another verb) of a chain this module names, as text.
fn push_chain_ref(b: &mut Batch, verb: &str, name: &str) {
    b.push_raw(&format!(r#"{{"{verb}":{{"chain":{{"family":"{FAMILY}","table":"{TABLE}","name":"{name}"}}}}}}"#));
}

fn key_json(k: &MapKey) -> Value {
    match k {
        MapKey::Ip((ip, proto, port)) => json!({"concat": [ip.to_string(), proto.as_str(), port]}),
        MapKey::Port((proto, port)) => json!({"concat": [proto.as_str(), port]}),
    }
}

fn element(k: &MapKey, t: &Target) -> Value {
    json!([{"elem": {"val": key_json(k), "comment": t.comment}}, goto(&t.chain)])
}

fn map_type(i: usize) -> Value {
    if i.is_multiple_of(2) {
        json!(["ipv4_addr", "inet_proto", "inet_service"])
    } else {
        json!(["inet_proto", "inet_service"])
    }
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
    let [service_ips, service_nodeports, no_endpoint_services, no_endpoint_nodeports] = MAP_NAMES;
    let ct_new = json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}});
    let mark = json!({"meta": {"key": "mark"}});
    let mut out = vec![
        rule("proxy-prerouting", vec![jump(CHAIN_SERVICES)], None),
        rule("proxy-output", vec![jump(CHAIN_SERVICES)], None),
        rule(
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
        out.push(rule(chain, vec![ct_new.clone(), jump(CHAIN_FILTER)], None));
    }
    out.push(rule(CHAIN_SERVICES, vec![dispatch(service_ips, true)], None));
    let mut np = nodeport_match(g);
    np.push(dispatch(service_nodeports, false));
    out.push(rule(CHAIN_SERVICES, np, None));

    out.push(rule(CHAIN_FILTER, vec![dispatch(no_endpoint_services, true)], None));
    let mut np = nodeport_match(g);
    np.push(dispatch(no_endpoint_nodeports, false));
    out.push(rule(CHAIN_FILTER, np, None));
    let mut cidr = vec![cmp("==", payload("ip", "daddr"), prefix(g.service_cidr))];
    if !g.local_ips.is_empty() {
        let ips: Vec<String> = g.local_ips.iter().map(|i| i.to_string()).collect();
        cidr.push(cmp("!=", payload("ip", "daddr"), json!({"set": ips})));
    }
    cidr.push(goto(CHAIN_REJECT));
    out.push(rule(CHAIN_FILTER, cidr, Some("service address or port not allocated")));

    out.push(rule(CHAIN_MARK_MASQ, vec![json!({"mangle": {"key": mark, "value": {"|": [mark, MASQ_BIT]}}})], None));
    out.push(rule(
        CHAIN_REJECT,
        vec![cmp("==", json!({"meta": {"key": "l4proto"}}), json!("tcp")), json!({"reject": {"type": "tcp reset"}})],
        None,
    ));
    out.push(rule(CHAIN_REJECT, vec![json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}})], None));
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

/// [`render_full`] as `nft -j` text, built without one large JSON tree (what [`super::Proxy`]
/// sends on its first sync over an empty table).
pub fn render_full_text(state: &ProxyState) -> String {
    let mut b = Batch::text();
    render_resync_model(&Model::build(state), &Existing::default(), &mut b);
    b.into_text()
}

/// [`render_full`] over a table that holds the proxy objects in `existing`: they are flushed,
/// those no longer wanted are deleted, affinity sets that are still wanted are kept (with their
/// entries).
pub fn render_resync(state: &ProxyState, existing: &Existing) -> Value {
    let mut b = Batch::Values(Vec::new());
    render_resync_model(&Model::build(state), existing, &mut b);
    b.into_value()
}

pub(super) fn render_resync_model(m: &Model, existing: &Existing, b: &mut Batch) {
    b.push(json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}));
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
    for (i, name) in MAP_NAMES.iter().enumerate() {
        b.push(cmd("add", "map", json!({"name": name, "type": map_type(i), "map": "verdict"})));
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
    // Each service's chains, then at once the service chain's rules: binding an anonymous set
    // (the vmap that picks an endpoint) makes the kernel walk the whole transaction so far
    // (`__nft_set_trans_bind`, 70% of a 1k-service build when these came last), so they come
    // as early as they can.
    let add = |b: &mut Batch, c: &str| {
        push_chain_ref(b, "add", c);
        if !existing.complete && !existing.chains.contains(c) {
            b.push(chain_ref("flush", c));
        }
    };
    for (c, spec) in &m.chains {
        if let ChainSpec::Service { endpoints, .. } = spec {
            for (ep, _) in endpoints {
                add(b, ep);
            }
            add(b, c);
            chain_rules(b, c, spec, &m.globals);
        }
    }
    for (c, spec) in &m.chains {
        if let ChainSpec::Endpoint { .. } = spec {
            chain_rules(b, c, spec, &m.globals);
        }
    }
    b.extend(fixed_rules(&m.globals));
    for (name, elems) in MAP_NAMES.iter().zip(&m.maps) {
        if !elems.is_empty() {
            let elem: Vec<Value> = elems.iter().map(|(k, t)| element(k, t)).collect();
            b.push(cmd("add", "element", json!({"name": name, "elem": elem})));
        }
    }
}

/// Only what changed from `old` to `new`, as one transaction; `None` when nothing did. A change
/// of the CIDRs or node addresses rebuilds the proxy's part ([`render_resync`] over `old`).
pub fn render_update(old: &ProxyState, new: &ProxyState) -> Option<Value> {
    let mut b = Batch::Values(Vec::new());
    // The claims say whether the changed ports can be diffed alone; the whole models only when not.
    if !render_update_parts(old, &mut Model::claims_only(old), new, &mut b) {
        render_update_models(&Model::build(old), &Model::build(new), &mut b);
    }
    (!b.is_empty()).then(|| b.into_value())
}

/// The update from `old` (whose model is `a`) to `new` built from the service ports that
/// changed alone, in O(change): writes it into `b`, brings `a` to the model of `new` and returns
/// true; returns false, touching nothing, when that cannot be done (the addresses or CIDRs
/// changed, a key is claimed by more than one port, a port is named twice).
/// What add-only updates left in the kernel beyond the model: service chains with the rules of
/// earlier versions behind the current ones (unreachable: the endpoint pick always jumps), and
/// endpoint chains only those dead rules refer to. Any transaction that deletes (which costs the
/// kernel 10-15 ms whatever it deletes) collects all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Garbage {
    pub dirty: BTreeSet<String>,
    pub chains: BTreeSet<String>,
}

/// Add-only updates defer at most this many objects before one collects them.
const GARBAGE_LIMIT: usize = 64;

impl Garbage {
    pub(super) fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.chains.is_empty()
    }

    /// Flushes the dirty chains (re-adding the rules of those the update leaves alone: same spec
    /// in `old` and `new`), flushes the dead endpoint chains and deletes those `new` does not
    /// want. Comes first in a transaction; the update that follows sees a clean table.
    pub(super) fn collect<'m>(
        &mut self,
        b: &mut Batch,
        g: &Globals,
        old: impl Fn(&str) -> Option<&'m ChainSpec>,
        new: impl Fn(&str) -> Option<&'m ChainSpec>,
    ) {
        for d in &self.dirty {
            b.push(chain_ref("flush", d));
            if let (Some(o), Some(n)) = (old(d), new(d)) {
                if o == n {
                    chain_rules(b, d, n, g);
                }
            }
        }
        for c in &self.chains {
            b.push(chain_ref("flush", c));
        }
        for c in self.chains.iter().filter(|c| new(c).is_none()) {
            b.push(chain_ref("delete", c));
        }
        *self = Garbage::default();
    }
}

/// Whether `before` → `after` can be applied without deleting anything: no map element goes or
/// changes, only service chains change (their new rules are inserted ahead of the old), no set
/// goes, no chain that is garbage comes back, and the garbage stays bounded.
fn add_only(before: &Model, after: &Model, g: &Garbage) -> bool {
    let elements_stay = before.maps.iter().zip(&after.maps).all(|(x, z)| x.iter().all(|(k, t)| z.get(k) == Some(t)));
    let mut deferred = 0;
    for (c, spec) in &before.chains {
        match after.chains.get(c) {
            Some(n) if n == spec => {}
            Some(_) if matches!(spec, ChainSpec::Service { .. }) => deferred += 1,
            Some(_) => return false,
            None => deferred += 1,
        }
    }
    elements_stay
        && before.sets.keys().all(|s| after.sets.contains_key(s))
        && !after.chains.keys().any(|c| !before.chains.contains_key(c) && g.chains.contains(c))
        && g.dirty.len() + g.chains.len() + deferred <= GARBAGE_LIMIT
}

fn render_add_only(before: &Model, after: &Model, b: &mut Batch, g: &mut Garbage) {
    for (s, timeout) in after.sets.iter().filter(|(s, _)| !before.sets.contains_key(*s)) {
        b.push(add_set(s, *timeout));
    }
    for c in after.chains.keys().filter(|c| !before.chains.contains_key(*c)) {
        push_chain_ref(b, "add", c);
    }
    for (c, spec) in &after.chains {
        match before.chains.get(c) {
            None => chain_rules(b, c, spec, &after.globals),
            Some(old) if old != spec => {
                insert_chain_rules(b, c, spec, &after.globals);
                g.dirty.insert(c.clone());
            }
            Some(_) => {}
        }
    }
    for (name, (x, z)) in MAP_NAMES.iter().zip(before.maps.iter().zip(&after.maps)) {
        let came: Vec<Value> = z.iter().filter(|(k, t)| x.get(*k) != Some(*t)).map(|(k, t)| element(k, t)).collect();
        if !came.is_empty() {
            b.push(cmd("add", "element", json!({"name": name, "elem": came})));
        }
    }
    for c in before.chains.keys().filter(|c| !after.chains.contains_key(*c)) {
        g.chains.insert(c.clone());
    }
}

pub(super) fn render_update_parts(old: &ProxyState, a: &mut Model, new: &ProxyState, b: &mut Batch) -> bool {
    render_update_parts_deferring(old, a, new, b, None)
}

/// [`render_update_parts`]; with `garbage`, an update that needs no deletion is rendered
/// add-only (leaving garbage), and any other collects the garbage first.
pub(super) fn render_update_parts_deferring(
    old: &ProxyState,
    a: &mut Model,
    new: &ProxyState,
    b: &mut Batch,
    garbage: Option<&mut Garbage>,
) -> bool {
    let globals = Model::globals(new);
    if globals != a.globals {
        return false;
    }
    let Some((before, after)) = model::changed_services(old, new) else {
        return false;
    };
    let before = Model::build_from(globals.clone(), before);
    let after = Model::build_from(globals, after);
    if !a.can_replace(&before, &after) {
        return false;
    }
    match garbage {
        Some(g) if add_only(&before, &after, g) => render_add_only(&before, &after, b, g),
        Some(g) => {
            if !g.is_empty() {
                let (x, z, m) = (&before, &after, &*a);
                g.collect(
                    b,
                    &after.globals,
                    |c| x.chains.get(c).or_else(|| m.chains.get(c)),
                    |c| {
                        if x.chains.contains_key(c) {
                            z.chains.get(c)
                        } else {
                            z.chains.get(c).or_else(|| m.chains.get(c))
                        }
                    },
                );
            }
            render_update_models(&before, &after, b);
        }
        None => render_update_models(&before, &after, b),
    }
    a.replace(&before, after);
    true
}

/// Writes the update into `b`; writes nothing when nothing changed.
pub(super) fn render_update_models(a: &Model, z: &Model, b: &mut Batch) {
    if a.globals != z.globals {
        return render_resync_model(z, &Existing::of(a), b);
    }
    for (s, timeout) in z.sets.iter().filter(|(s, _)| !a.sets.contains_key(*s)) {
        b.push(add_set(s, *timeout));
    }
    for c in z.chains.keys().filter(|c| !a.chains.contains_key(*c)) {
        push_chain_ref(b, "add", c);
    }
    for (c, spec) in &z.chains {
        match a.chains.get(c) {
            Some(old) if old == spec => continue,
            Some(_) => b.push(chain_ref("flush", c)),
            None => {}
        }
        chain_rules(b, c, spec, &z.globals);
    }
    let mut adds = Vec::new();
    for ((name, before), after) in MAP_NAMES.iter().zip(&a.maps).zip(&z.maps) {
        let gone: Vec<Value> =
            before.iter().filter(|(k, t)| after.get(*k) != Some(*t)).map(|(k, _)| key_json(k)).collect();
        if !gone.is_empty() {
            b.push(cmd("delete", "element", json!({"name": name, "elem": gone})));
        }
        let came: Vec<Value> =
            after.iter().filter(|(k, t)| before.get(*k) != Some(*t)).map(|(k, t)| element(k, t)).collect();
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
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::net::proxy::{
        affinity_set_name, endpoint_chain_name, service_chain_name, Endpoint, Protocol, ServicePort,
    };

    pub fn ip(s: &str) -> std::net::Ipv4Addr {
        s.parse().unwrap()
    }

    pub fn web(endpoints: &[(&str, bool)]) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Some(ip("10.43.0.20")),
            port: 80,
            node_port: Some(30080),
            external_ips: vec![],
            affinity_timeout: None,
            endpoints: endpoints.iter().map(|(a, ready)| Endpoint { ip: ip(a), port: 8080, ready: *ready }).collect(),
        }
    }

    pub fn dns() -> ServicePort {
        ServicePort {
            namespace: "kube-system".into(),
            service: "db".into(),
            port_name: "".into(),
            protocol: Protocol::Udp,
            cluster_ip: Some(ip("10.43.0.30")),
            port: 53,
            node_port: None,
            external_ips: vec![ip("192.0.2.9")],
            affinity_timeout: Some(60),
            endpoints: vec![Endpoint { ip: ip("10.42.0.9"), port: 5353, ready: true }],
        }
    }

    pub fn state(services: Vec<ServicePort>) -> ProxyState {
        ProxyState {
            service_cidr: (ip("10.43.0.0"), 16),
            pod_cidr: (ip("10.42.0.0"), 16),
            node_ips: vec![],
            local_ips: vec![ip("10.43.0.10")],
            services,
        }
    }

    /// One line per command: `verb kind name`, plus the elements of element commands.
    pub fn lines(batch: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for c in batch["nftables"].as_array().unwrap() {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            let (kind, o) = body.as_object().unwrap().iter().next().unwrap();
            let name = o.get("name").or(o.get("chain")).and_then(Value::as_str).unwrap_or("");
            let mut line = format!("{verb} {kind} {name}");
            if kind == "element" {
                for e in o["elem"].as_array().unwrap() {
                    let key = if e.is_array() { &e[0] } else { e };
                    let key = if key.get("elem").is_some() { &key["elem"]["val"] } else { key };
                    let parts: Vec<String> = key["concat"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.to_string().trim_matches('"').to_string())
                        .collect();
                    line.push_str(&format!(" [{}", parts.join(" . ")));
                    if e.is_array() {
                        line.push_str(&format!(" : {}", e[1]["goto"]["target"].as_str().unwrap()));
                    }
                    line.push(']');
                }
            }
            out.push(line);
        }
        out
    }

    #[test]
    fn full_snapshot() {
        let s = state(vec![web(&[("10.42.0.5", true), ("10.42.0.6", false)]), dns()]);
        // One command per line, so that a change reads as a line diff.
        let cmds: Vec<String> = render_full(&s)["nftables"].as_array().unwrap().iter().map(Value::to_string).collect();
        let got = format!("{{\"nftables\": [\n{}\n]}}\n", cmds.join(",\n"));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/net/proxy/testdata/full.json");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap();
        assert_eq!(got, want, "render_full changed; review and re-run with UPDATE_SNAPSHOTS=1");
    }

    #[test]
    fn full_shape() {
        let (w, d) = (web(&[("10.42.0.5", true), ("10.42.0.6", false)]), dns());
        let s = state(vec![w.clone(), d.clone()]);
        let l = lines(&render_full(&s));
        let (svc_w, ep_w) = (service_chain_name(&w), endpoint_chain_name(&w, &w.endpoints[0]));
        let (svc_d, ep_d) = (service_chain_name(&d), endpoint_chain_name(&d, &d.endpoints[0]));
        let aff = affinity_set_name(&d, &d.endpoints[0], 60);
        let pos = |x: &str| l.iter().position(|y| y == x).unwrap_or_else(|| panic!("{x} missing from {l:#?}"));
        // Chains and sets exist before anything that refers to them.
        assert!(pos(&format!("add set {aff}")) < pos(&format!("add chain {ep_d}")));
        for c in [&svc_w, &ep_w, &svc_d, &ep_d] {
            assert!(pos(&format!("add chain {c}")) < pos(&format!("add rule {c}")));
        }
        let elements = pos(&format!("add element service-ips [10.43.0.20 . tcp . 80 : {svc_w}] [10.43.0.30 . udp . 53 : {svc_d}] [192.0.2.9 . udp . 53 : {svc_d}]"));
        assert!(pos(&format!("add rule {svc_w}")) < elements);
        pos(&format!("add element service-nodeports [tcp . 30080 : {svc_w}]"));
        assert!(!l.iter().any(|x| x.contains("no-endpoint") && x.starts_with("add element")));
        assert!(!l.iter().any(|x| x.contains("10.42.0.6")), "unready endpoints get no chain");
        assert!(!l.iter().any(|x| x.contains("delete")));
        // Never the whole table: only the proxy's own chains are flushed.
        assert!(!l.iter().any(|x| x.starts_with("flush table")));
        assert!(l
            .iter()
            .filter(|x| x.starts_with("flush chain"))
            .all(|x| x.contains(" proxy-") || x.contains(" svc-") || x.contains(" ep-")));
    }

    #[test]
    fn local_ips_are_neither_dnated_nor_rejected() {
        let mut d = dns();
        d.cluster_ip = Some(ip("10.43.0.10"));
        d.external_ips.clear();
        d.endpoints.clear();
        let l = lines(&render_full(&state(vec![d])));
        assert!(!l.iter().any(|x| x.starts_with("add element")), "{l:#?}");
        assert!(!l.iter().any(|x| x.starts_with("add chain svc-")));
        let full = render_full(&state(vec![]));
        let reject = full["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["add"]["rule"]["comment"] == "service address or port not allocated")
            .unwrap();
        assert_eq!(
            reject["add"]["rule"]["expr"][1],
            json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"set": ["10.43.0.10"]}}})
        );
    }

    #[test]
    fn update_no_change_is_none() {
        let s = state(vec![web(&[("10.42.0.5", true)]), dns()]);
        assert_eq!(render_update(&s, &s.clone()), None);
        // Order of services and endpoints does not matter.
        let mut r = s.clone();
        r.services.reverse();
        assert_eq!(render_update(&s, &r), None);
    }

    #[test]
    fn update_add_service() {
        let old = state(vec![dns()]);
        let w = web(&[("10.42.0.5", true)]);
        let new = state(vec![dns(), w.clone()]);
        let (svc, ep) = (service_chain_name(&w), endpoint_chain_name(&w, &w.endpoints[0]));
        assert_eq!(
            lines(&render_update(&old, &new).unwrap()),
            vec![
                format!("add chain {ep}"),
                format!("add chain {svc}"),
                format!("add rule {ep}"),
                format!("add rule {ep}"),
                format!("add rule {svc}"),
                format!("add rule {svc}"),
                format!("add element service-ips [10.43.0.20 . tcp . 80 : {svc}]"),
                format!("add element service-nodeports [tcp . 30080 : {svc}]"),
            ]
        );
    }

    #[test]
    fn update_add_endpoint() {
        let old = state(vec![web(&[("10.42.0.5", true)])]);
        let w = web(&[("10.42.0.5", true), ("10.42.0.6", true)]);
        let new = state(vec![w.clone()]);
        let (svc, ep2) = (service_chain_name(&w), endpoint_chain_name(&w, &w.endpoints[1]));
        assert_eq!(
            lines(&render_update(&old, &new).unwrap()),
            vec![
                format!("add chain {ep2}"),
                format!("add rule {ep2}"),
                format!("add rule {ep2}"),
                format!("flush chain {svc}"),
                format!("add rule {svc}"),
                format!("add rule {svc}"),
            ]
        );
    }

    #[test]
    fn update_last_endpoint_unready_rejects() {
        let w = web(&[("10.42.0.5", true)]);
        let old = state(vec![w.clone()]);
        let new = state(vec![web(&[("10.42.0.5", false)])]);
        let (svc, ep) = (service_chain_name(&w), endpoint_chain_name(&w, &w.endpoints[0]));
        assert_eq!(
            lines(&render_update(&old, &new).unwrap()),
            vec![
                "delete element service-ips [10.43.0.20 . tcp . 80]".to_string(),
                "delete element service-nodeports [tcp . 30080]".to_string(),
                "add element no-endpoint-services [10.43.0.20 . tcp . 80 : proxy-reject]".to_string(),
                "add element no-endpoint-nodeports [tcp . 30080 : proxy-reject]".to_string(),
                format!("flush chain {ep}"),
                format!("flush chain {svc}"),
                format!("delete chain {ep}"),
                format!("delete chain {svc}"),
            ]
        );
        // And back.
        assert_eq!(
            lines(&render_update(&new, &old).unwrap())
                .iter()
                .filter(|l| l.starts_with("delete element no-endpoint"))
                .count(),
            2
        );
    }

    #[test]
    fn update_one_of_two_endpoints_unready() {
        let w = web(&[("10.42.0.5", true), ("10.42.0.6", true)]);
        let new = state(vec![web(&[("10.42.0.5", true), ("10.42.0.6", false)])]);
        let (svc, ep2) = (service_chain_name(&w), endpoint_chain_name(&w, &w.endpoints[1]));
        assert_eq!(
            lines(&render_update(&state(vec![w]), &new).unwrap()),
            vec![
                format!("flush chain {svc}"),
                format!("add rule {svc}"),
                format!("add rule {svc}"),
                format!("flush chain {ep2}"),
                format!("delete chain {ep2}")
            ]
        );
    }

    #[test]
    fn update_remove_service_with_affinity() {
        let d = dns();
        let old = state(vec![web(&[("10.42.0.5", true)]), d.clone()]);
        let new = state(vec![web(&[("10.42.0.5", true)])]);
        let (svc, ep, aff) = (
            service_chain_name(&d),
            endpoint_chain_name(&d, &d.endpoints[0]),
            affinity_set_name(&d, &d.endpoints[0], 60),
        );
        assert_eq!(
            lines(&render_update(&old, &new).unwrap()),
            vec![
                "delete element service-ips [10.43.0.30 . udp . 53] [192.0.2.9 . udp . 53]".to_string(),
                format!("flush chain {ep}"),
                format!("flush chain {svc}"),
                format!("delete chain {ep}"),
                format!("delete chain {svc}"),
                format!("delete set {aff}"),
            ]
        );
    }

    #[test]
    fn update_affinity_timeout_replaces_the_set() {
        let d = dns();
        let mut d2 = d.clone();
        d2.affinity_timeout = Some(120);
        let (old_aff, new_aff) =
            (affinity_set_name(&d, &d.endpoints[0], 60), affinity_set_name(&d, &d.endpoints[0], 120));
        let l = lines(&render_update(&state(vec![d]), &state(vec![d2])).unwrap());
        assert_eq!(l.first().unwrap(), &format!("add set {new_aff}"));
        assert_eq!(l.last().unwrap(), &format!("delete set {old_aff}"));
        assert!(!l.iter().any(|x| x.contains("element")));
    }

    #[test]
    fn update_of_globals_rebuilds_over_the_old_objects() {
        let d = dns();
        let old = state(vec![d.clone()]);
        let mut new = old.clone();
        new.local_ips = vec![];
        new.services[0].affinity_timeout = None;
        let l = lines(&render_update(&old, &new).unwrap());
        let (svc, aff) = (service_chain_name(&d), affinity_set_name(&d, &d.endpoints[0], 60));
        assert_eq!(l[0], "add table skerry");
        assert_eq!(l[1], format!("flush chain {}", endpoint_chain_name(&d, &d.endpoints[0])));
        assert!(l.contains(&format!("flush chain {svc}")));
        assert!(l.contains(&format!("delete set {aff}")));
        assert!(!l.iter().any(|x| x.starts_with("delete chain")));
    }

    #[test]
    fn conflicting_claims_keep_the_first_service() {
        let w = web(&[("10.42.0.5", true)]);
        let mut other = web(&[("10.42.0.7", true)]);
        other.service = "zeta".into();
        other.cluster_ip = Some(ip("10.43.0.21"));
        let l = lines(&render_full(&state(vec![other.clone(), w.clone()])));
        assert!(l.contains(&format!("add element service-nodeports [tcp . 30080 : {}]", service_chain_name(&w))));
        assert!(l.iter().any(|x| x.contains(&format!("[10.43.0.21 . tcp . 80 : {}]", service_chain_name(&other)))));
    }

    #[test]
    fn resync_deletes_stale_and_keeps_wanted_sets() {
        let d = dns();
        let aff = affinity_set_name(&d, &d.endpoints[0], 60);
        let existing = Existing {
            chains: ["svc-00000000000000aa".to_string(), service_chain_name(&d)].into(),
            sets: [aff.clone(), "aff-00000000000000bb".to_string()].into(),
            complete: true,
        };
        let l = lines(&render_resync(&state(vec![d.clone()]), &existing));
        assert_eq!(l[1], "flush chain svc-00000000000000aa");
        let del = l.iter().position(|x| x == "delete chain svc-00000000000000aa").unwrap();
        assert!(del > l.iter().position(|x| x == "flush map service-ips").unwrap());
        assert!(l.contains(&"delete set aff-00000000000000bb".to_string()));
        assert!(!l.contains(&format!("add set {aff}")), "a set that exists is never re-declared");
        assert!(!l.contains(&format!("delete set {aff}")));
    }

    #[test]
    fn names_fit_nftables() {
        let w = web(&[("10.42.0.5", true)]);
        for n in [
            service_chain_name(&w),
            endpoint_chain_name(&w, &w.endpoints[0]),
            affinity_set_name(&w, &w.endpoints[0], 10800),
        ] {
            assert!(n.len() <= 31, "{n}");
            assert!(super::model::is_dynamic_chain(&n) || super::model::is_affinity_set(&n), "{n}");
        }
        assert!(!super::model::is_dynamic_chain("proxy-services"));
        let listing = json!({"nftables": [{"metainfo": {}}, {"chain": {"family": "inet", "table": "skerry", "name": service_chain_name(&w)}},
            {"chain": {"family": "inet", "table": "skerry", "name": "hostports"}}, {"set": {"family": "inet", "table": "skerry", "name": "aff-0123456789abcdef"}}]});
        assert_eq!(
            Existing::from_listing(&listing),
            Existing {
                chains: [service_chain_name(&w)].into(),
                sets: ["aff-0123456789abcdef".to_string()].into(),
                complete: true
            }
        );
    }

    #[test]
    fn text_batches_match_value_batches() {
        let old = state(vec![web(&[("10.42.0.5", true)]), dns()]);
        let new = state(vec![web(&[("10.42.0.6", true)])]);
        let mut t = Batch::text();
        render_resync_model(&Model::build(&new), &Existing::default(), &mut t);
        assert_eq!(serde_json::from_str::<Value>(&t.into_text()).unwrap(), render_full(&new));
        let mut t = Batch::text();
        render_update_models(&Model::build(&old), &Model::build(&new), &mut t);
        assert_eq!(serde_json::from_str::<Value>(&t.into_text()).unwrap(), render_update(&old, &new).unwrap());
        let mut t = Batch::text();
        render_update_models(&Model::build(&new), &Model::build(&new), &mut t);
        assert!(t.is_empty());
    }

    #[test]
    fn parts_update_matches_whole_models() {
        let w1 = web(&[("10.42.0.5", true)]);
        let w2 = web(&[("10.42.0.5", true), ("10.42.0.6", true)]);
        let w0 = web(&[("10.42.0.5", false)]);
        let mut other = web(&[("10.42.0.7", true)]);
        other.service = "zeta".into();
        other.cluster_ip = Some(ip("10.43.0.21"));
        let mut d2 = dns();
        d2.affinity_timeout = Some(120);
        let cases = [
            (vec![w1.clone(), dns()], vec![w2.clone(), dns()], true),
            (vec![w1.clone(), dns()], vec![dns(), w2.clone()], true),
            (vec![w1.clone()], vec![w1.clone(), dns()], true),
            (vec![w1.clone(), dns()], vec![w1.clone()], true),
            (vec![w1.clone(), dns()], vec![w0.clone(), d2], true),
            (vec![w1.clone(), dns()], vec![w1.clone(), w1.clone()], false),
            (vec![w1.clone(), other.clone()], vec![w2.clone(), other.clone()], false),
            (vec![w1.clone()], vec![w1.clone(), other.clone()], false),
        ];
        for (old, new, alone) in cases {
            let (old, new) = (state(old), state(new));
            let mut a = Model::build(&old);
            let mut parts = Batch::Values(Vec::new());
            assert_eq!(render_update_parts(&old, &mut a, &new, &mut parts), alone);
            if alone {
                assert_eq!(a, Model::build(&new));
                let mut whole = Batch::Values(Vec::new());
                render_update_models(&Model::build(&old), &Model::build(&new), &mut whole);
                assert_eq!(parts.into_value(), whole.into_value());
            } else {
                assert_eq!(a, Model::build(&old), "untouched when it cannot be done");
            }
        }
    }

    #[test]
    fn text_rules_match_value_rules() {
        let (w, d) = (web(&[("10.42.0.5", true), ("10.42.0.6", true)]), dns());
        let m = Model::build(&state(vec![w, d]));
        assert!(m.chains.len() >= 5);
        for (name, spec) in &m.chains {
            let mut b = Batch::Values(Vec::new());
            chain_rules(&mut b, name, spec, &m.globals);
            let want: Vec<Value> =
                spec.rules(&m.globals).into_iter().map(|(expr, comment)| rule(name, expr, comment)).collect();
            assert_eq!(b.into_value(), json!({ "nftables": want }));
        }
    }
}
