//! Skerry's nftables table (`inet skerry`): rendered from desired state by a pure function,
//! applied as one atomic `nft -j` transaction through the `nftables` crate.
//!
//! Today it holds hostPorts (DNAT on the node's local addresses) and masquerade for pod traffic
//! leaving the pod CIDR and for DNAT'ed traffic from pods (hairpin). Skerry never touches any
//! other table.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "skerry";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft rejected skerry's rules: {0}; is nftables installed (apt-get install nftables) and are we root?")]
    Apply(String),
}

/// One hostPort mapping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// What the table should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRules {
    /// The node's pod CIDR, `10.42.0.0/24`.
    pub pod_cidr: (Ipv4Addr, u8),
    pub masquerade: bool,
    pub host_ports: Vec<HostPort>,
}

fn add(kind: &str, body: Value) -> Value {
    json!({"add": {kind: body}})
}

fn chain(name: &str, hook: Option<(&str, i32)>) -> Value {
    let mut c = json!({"family": FAMILY, "table": TABLE, "name": name});
    if let Some((hook, prio)) = hook {
        c["type"] = json!("nat");
        c["hook"] = json!(hook);
        c["prio"] = json!(prio);
        c["policy"] = json!("accept");
    }
    add("chain", c)
}

fn rule(chain: &str, expr: Vec<Value>, comment: Option<String>) -> Value {
    let mut r = json!({"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr});
    if let Some(c) = comment {
        r["comment"] = json!(c);
    }
    add("rule", r)
}

fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn ip(field: &str) -> Value {
    json!({"payload": {"protocol": "ip", "field": field}})
}

fn prefix((addr, len): (Ipv4Addr, u8)) -> Value {
    json!({"prefix": {"addr": addr.to_string(), "len": len}})
}

/// The chains this part of the table owns; other parts (the Service proxy) keep their own.
const CHAINS: &[(&str, Option<(&str, i32)>)] = &[
    ("nat-prerouting", Some(("prerouting", -100))),
    ("nat-output", Some(("output", -100))),
    ("nat-postrouting", Some(("postrouting", 100))),
    ("hostports", None),
];

/// This part of the table as one transaction: ensure the table and chains, flush the chains,
/// then every rule. Chains of other parts of the table are left alone.
pub fn render(rules: &NodeRules) -> Value {
    let local = eq(json!({"fib": {"result": "type", "flags": ["daddr"]}}), json!("local"));
    let mut batch = vec![add("table", json!({"family": FAMILY, "name": TABLE}))];
    for (name, hook) in CHAINS {
        batch.push(chain(name, *hook));
        batch.push(json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}}));
    }
    batch.extend([
        rule("nat-prerouting", vec![local.clone(), json!({"jump": {"target": "hostports"}})], None),
        rule("nat-output", vec![local, json!({"jump": {"target": "hostports"}})], None),
    ]);
    let mut ports = rules.host_ports.clone();
    ports.sort();
    for hp in &ports {
        let mut expr = vec![eq(json!({"meta": {"key": "l4proto"}}), json!(hp.protocol))];
        if let Some(h) = hp.host_ip.filter(|h| !h.is_unspecified()) {
            expr.push(eq(ip("daddr"), json!(h.to_string())));
        }
        expr.push(eq(json!({"payload": {"protocol": "th", "field": "dport"}}), json!(hp.host_port)));
        expr.push(json!({"dnat": {"family": "ip", "addr": hp.pod_ip.to_string(), "port": hp.container_port}}));
        let comment = format!("hostPort {}/{} -> {}:{}", hp.host_port, hp.protocol, hp.pod_ip, hp.container_port);
        batch.push(rule("hostports", expr, Some(comment)));
    }
    // Pods reaching a pod through a DNAT (hostPort, later Services) must see replies come back
    // the same way: masquerade them (hairpin).
    batch.push(rule(
        "nat-postrouting",
        vec![
            eq(ip("saddr"), prefix(rules.pod_cidr)),
            json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
            json!({"masquerade": null}),
        ],
        Some("hairpin".into()),
    ));
    if rules.masquerade {
        batch.push(rule(
            "nat-postrouting",
            vec![
                eq(ip("saddr"), prefix(rules.pod_cidr)),
                json!({"match": {"op": "!=", "left": ip("daddr"), "right": prefix(rules.pod_cidr)}}),
                json!({"masquerade": null}),
            ],
            Some("pod traffic leaving the pod network".into()),
        ));
    }
    json!({"nftables": batch})
}

/// Removes the table (and nothing else).
pub fn render_cleanup() -> Value {
    json!({"nftables": [
        add("table", json!({"family": FAMILY, "name": TABLE})),
        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
    ]})
}

/// Applies a rendered batch in one `nft -j -f -` transaction.
pub async fn apply(batch: &Value) -> Result<(), NftError> {
    let payload = batch.to_string();
    tokio::task::spawn_blocking(move || {
        nftables::helper::apply_ruleset_raw(&payload, None::<&str>, std::iter::empty::<&str>())
    })
    .await
    .map_err(|e| NftError::Apply(e.to_string()))?
    .map(|_| ())
    .map_err(|e| {
        NftError::Apply(match e {
            nftables::helper::NftablesError::NftFailed { stderr, stdout, .. } => {
                format!("{} {}", stderr.trim(), stdout.trim()).trim().to_string()
            }
            other => other.to_string(),
        })
    })
}

/// Parses `10.42.0.0/24`.
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = cidr.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((addr.parse().ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_hostports_and_masquerade() {
        let rules = NodeRules {
            pod_cidr: parse_cidr("10.42.0.0/24").unwrap(),
            masquerade: true,
            host_ports: vec![HostPort {
                protocol: "tcp".into(),
                host_ip: None,
                host_port: 8080,
                pod_ip: "10.42.0.5".parse().unwrap(),
                container_port: 80,
            }],
        };
        let batch = render(&rules);
        let items = batch["nftables"].as_array().unwrap();
        assert_eq!(items[0], json!({"add": {"table": {"family": "inet", "name": "skerry"}}}));
        assert_eq!(
            items[2],
            json!({"flush": {"chain": {"family": "inet", "table": "skerry", "name": "nat-prerouting"}}})
        );
        assert!(
            !items.iter().any(|i| i.get("flush").and_then(|f| f.get("table")).is_some()),
            "never flushes the whole table"
        );
        let hostport = items.iter().find(|i| i["add"]["rule"]["chain"] == "hostports").unwrap();
        assert_eq!(
            hostport["add"]["rule"]["expr"],
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 8080}},
                {"dnat": {"family": "ip", "addr": "10.42.0.5", "port": 80}}
            ])
        );
        let masq = items.iter().filter(|i| i["add"]["rule"]["chain"] == "nat-postrouting").count();
        assert_eq!(masq, 2);
        let no_masq = render(&NodeRules { masquerade: false, ..rules });
        assert_eq!(
            no_masq["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["add"]["rule"]["chain"] == "nat-postrouting")
                .count(),
            1
        );
        assert_eq!(parse_cidr("10.42.0.0/33"), None);
    }
}
