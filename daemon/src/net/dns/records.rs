//! The cluster's DNS records as data: built from Services, Endpoints and Pods by a pure
//! function, answered by a pure lookup. No IO; the server only translates [`Answer`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hickory_proto::rr::RecordType;
use serde_json::Value;

/// The TTL of every record we serve (and the SOA minimum, so negative answers age as fast).
pub const TTL: u32 = 5;

/// Most CNAME hops followed inside the cluster domain before giving up on a chain.
const MAX_CNAME_HOPS: usize = 8;

/// The data of one record. Names are lower-case and fully qualified (trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    A(Ipv4Addr),
    Cname(String),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Soa(Soa),
}

/// The zone's start of authority (RFC 1035 §3.3.13).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Soa {
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
    pub minimum: u32,
}

/// One resource record; its TTL is always [`TTL`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rr {
    pub name: String,
    pub data: Data,
}

/// What to answer for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is outside the cluster domain: ask the upstream resolvers.
    Forward,
    /// NOERROR. `answers` is empty when the name exists without records of the asked type
    /// (NODATA: the server puts the SOA in the authority section). When the last answer is a
    /// CNAME to a name outside the domain, the server resolves that target upstream.
    Found { answers: Vec<Rr>, additionals: Vec<Rr> },
    /// NXDOMAIN: a name inside the cluster domain that does not exist (SOA in authority).
    NxDomain,
}

/// Every record of the cluster domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// The zone apex: lower-case, with the trailing dot (`cluster.local.`).
    domain: String,
    /// Owner name → its records, sorted and without duplicates.
    names: BTreeMap<String, Vec<Data>>,
    /// Names that exist without records of their own (empty non-terminals such as
    /// `svc.cluster.local.` or `default.svc.cluster.local.`, and headless Services with no
    /// ready endpoint): they answer NODATA, not NXDOMAIN.
    empty: BTreeSet<String>,
    /// The SOA serial; [`build`] leaves it 0, the records loop sets the store revision.
    pub serial: u32,
}

/// Lower-cases `name` and adds the trailing dot.
pub fn fqdn(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn namespace(v: &Value) -> &str {
    str_at(v, "/metadata/namespace").unwrap_or("default")
}

/// `10.42.0.5` → `10-42-0-5`.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// Whether `s` can be one DNS label as Kubernetes allows it (RFC 1123 label).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Builds the records of `domain` from Services, Endpoints and Pods as they are stored
/// (Kubernetes v1 JSON). Objects being deleted are the caller's business; finished pods are
/// skipped here.
pub fn build(services: &[Value], endpoints: &[Value], pods: &[Value], domain: &str) -> Records {
    let domain = fqdn(domain);
    let mut r = Records { domain: domain.clone(), ..Records::default() };

    let endpoints_of: BTreeMap<(&str, &str), &Value> =
        endpoints.iter().filter_map(|e| Some(((namespace(e), str_at(e, "/metadata/name")?), e))).collect();
    let pod_by_name: BTreeMap<(&str, &str), &Value> =
        pods.iter().filter_map(|p| Some(((namespace(p), str_at(p, "/metadata/name")?), p))).collect();

    for svc in services {
        let Some(name) = str_at(svc, "/metadata/name") else { continue };
        let ns = namespace(svc);
        let base = format!("{name}.{ns}.svc.{domain}");
        match str_at(svc, "/spec/type").unwrap_or("ClusterIP") {
            "ExternalName" => {
                if let Some(target) = str_at(svc, "/spec/externalName") {
                    r.add(&base, Data::Cname(fqdn(target)));
                }
                continue;
            }
            "ClusterIP" | "NodePort" | "LoadBalancer" => {}
            _ => continue,
        }
        match str_at(svc, "/spec/clusterIP") {
            Some("None") => {
                let eps = endpoints_of.get(&(ns, name)).copied();
                let publish_not_ready =
                    svc.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool) == Some(true);
                r.add_headless(&base, name, ns, eps, publish_not_ready, &pod_by_name);
            }
            Some(ip) => {
                let Ok(ip) = ip.parse::<Ipv4Addr>() else { continue };
                r.add(&base, Data::A(ip));
                for port in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                    let (Some(port_name), Some(number)) = (str_at(port, "/name"), port["port"].as_u64()) else {
                        continue;
                    };
                    let Ok(number) = u16::try_from(number) else { continue };
                    let proto = str_at(port, "/protocol").unwrap_or("TCP").to_ascii_lowercase();
                    let srv = format!("_{port_name}._{proto}.{base}");
                    r.add(&srv, Data::Srv { priority: 0, weight: 100, port: number, target: base.clone() });
                }
            }
            // Not allocated yet: nothing to answer but the name.
            None => {
                r.empty.insert(base);
            }
        }
    }

    for pod in pods {
        if matches!(str_at(pod, "/status/phase"), Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ip) = str_at(pod, "/status/podIP").and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else { continue };
        r.add(&format!("{}.{}.pod.{domain}", dashed(ip), namespace(pod)), Data::A(ip));
    }

    r.finish();
    r
}

impl Records {
    fn add(&mut self, name: &str, data: Data) {
        self.names.entry(fqdn(name)).or_default().push(data);
    }

    /// A headless Service: A records for each ready address, a name per address, and SRV
    /// records naming those per-address names.
    fn add_headless(
        &mut self,
        base: &str,
        svc: &str,
        ns: &str,
        eps: Option<&Value>,
        publish_not_ready: bool,
        pods: &BTreeMap<(&str, &str), &Value>,
    ) {
        self.empty.insert(base.to_string());
        let Some(eps) = eps else { return };
        // SRV owner → targets (name, port); weights are shared out once all are known.
        let mut srv: BTreeMap<String, BTreeSet<(String, u16)>> = BTreeMap::new();
        for subset in eps["subsets"].as_array().into_iter().flatten() {
            let mut addresses: Vec<&Value> = subset["addresses"].as_array().into_iter().flatten().collect();
            if publish_not_ready {
                addresses.extend(subset["notReadyAddresses"].as_array().into_iter().flatten());
            }
            let mut hosts = Vec::new();
            for addr in addresses {
                let Some(ip) = str_at(addr, "/ip").and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else { continue };
                let host = host_label(addr, svc, ns, pods).unwrap_or_else(|| dashed(ip));
                let host_name = format!("{host}.{base}");
                self.add(base, Data::A(ip));
                self.add(&host_name, Data::A(ip));
                hosts.push(host_name);
            }
            for port in subset["ports"].as_array().into_iter().flatten() {
                let (Some(port_name), Some(number)) = (str_at(port, "/name"), port["port"].as_u64()) else { continue };
                let Ok(number) = u16::try_from(number) else { continue };
                let proto = str_at(port, "/protocol").unwrap_or("TCP").to_ascii_lowercase();
                let owner = format!("_{port_name}._{proto}.{base}");
                srv.entry(owner).or_default().extend(hosts.iter().map(|h| (h.clone(), number)));
            }
        }
        for (owner, targets) in srv {
            let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(1).max(1);
            for (target, port) in targets {
                self.add(&owner, Data::Srv { priority: 0, weight, port, target });
            }
        }
    }

    /// Sorts and dedupes record sets and records every ancestor of every name (down to the
    /// apex) as existing.
    fn finish(&mut self) {
        for data in self.names.values_mut() {
            data.sort();
            data.dedup();
        }
        let mut ancestors = BTreeSet::new();
        for name in self.names.keys().chain(self.empty.iter()) {
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() < self.domain.len() {
                    break;
                }
                ancestors.insert(parent.to_string());
                rest = parent;
            }
        }
        ancestors.insert(self.domain.clone());
        self.empty.extend(ancestors);
        let names = &self.names;
        self.empty.retain(|n| !names.contains_key(n));
    }

    /// The zone apex (`cluster.local.`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` (any case, with or without the trailing dot) is inside the cluster domain.
    pub fn is_ours(&self, name: &str) -> bool {
        let name = fqdn(name);
        !self.domain.is_empty() && (name == self.domain || name.ends_with(&format!(".{}", self.domain)))
    }

    /// The SOA record at the apex, which goes in the authority section of negative answers.
    pub fn soa(&self) -> Rr {
        Rr {
            name: self.domain.clone(),
            data: Data::Soa(Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: self.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: TTL,
            }),
        }
    }

    /// Answers one question: any case, with or without the trailing dot.
    pub fn lookup(&self, name: &str, rtype: RecordType) -> Answer {
        let name = fqdn(name);
        if !self.is_ours(&name) {
            return Answer::Forward;
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut current = name;
        for _ in 0..MAX_CNAME_HOPS {
            if current == self.domain && matches!(rtype, RecordType::SOA | RecordType::ANY) {
                answers.push(self.soa());
            }
            let Some(set) = self.names.get(&current) else {
                if answers.is_empty() && !self.empty.contains(&current) {
                    return Answer::NxDomain;
                }
                // A dangling CNAME inside the domain answers with the chain so far.
                return Answer::Found { answers, additionals };
            };
            let cname = set.iter().find_map(|d| if let Data::Cname(t) = d { Some(t.clone()) } else { None });
            if let Some(target) = cname {
                answers.push(Rr { name: current.clone(), data: Data::Cname(target.clone()) });
                if matches!(rtype, RecordType::CNAME | RecordType::ANY) || !self.is_ours(&target) {
                    return Answer::Found { answers, additionals };
                }
                current = target;
                continue;
            }
            for data in set {
                let wanted = match data {
                    Data::A(_) => matches!(rtype, RecordType::A | RecordType::ANY),
                    Data::Srv { .. } => matches!(rtype, RecordType::SRV | RecordType::ANY),
                    Data::Cname(_) | Data::Soa(_) => false,
                };
                if !wanted {
                    continue;
                }
                if let Data::Srv { target, .. } = data {
                    for extra in self.names.get(target).into_iter().flatten() {
                        let rr = Rr { name: target.clone(), data: extra.clone() };
                        if matches!(extra, Data::A(_)) && !additionals.contains(&rr) {
                            additionals.push(rr);
                        }
                    }
                }
                answers.push(Rr { name: current.clone(), data: data.clone() });
            }
            return Answer::Found { answers, additionals };
        }
        Answer::Found { answers, additionals }
    }

    /// How many owner names have records (for logs).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The per-address label of a headless Service's endpoint: the address's `hostname`, or the
/// pod's `spec.hostname` when its `spec.subdomain` names this Service (as kube-dns does).
fn host_label(addr: &Value, svc: &str, ns: &str, pods: &BTreeMap<(&str, &str), &Value>) -> Option<String> {
    if let Some(h) = str_at(addr, "/hostname").filter(|h| is_label(h)) {
        return Some(h.to_string());
    }
    if str_at(addr, "/targetRef/kind") != Some("Pod") {
        return None;
    }
    let pod_ns = str_at(addr, "/targetRef/namespace").unwrap_or(ns);
    let pod = pods.get(&(pod_ns, str_at(addr, "/targetRef/name")?))?;
    if str_at(pod, "/spec/subdomain") != Some(svc) {
        return None;
    }
    str_at(pod, "/spec/hostname").filter(|h| is_label(h)).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    fn fixture() -> Records {
        let services = vec![
            svc(
                "default",
                "fleetman-webapp",
                json!({"type": "NodePort", "clusterIP": "10.43.12.7", "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30080},
                    {"port": 8080}
                ]}),
            ),
            svc("default", "db", json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]})),
            svc("default", "empty-headless", json!({"clusterIP": "None"})),
            svc("web", "ext", json!({"type": "ExternalName", "externalName": "Example.COM"})),
            svc(
                "web",
                "alias",
                json!({"type": "ExternalName", "externalName": "fleetman-webapp.default.svc.cluster.local"}),
            ),
            svc(
                "kube-system",
                "kube-dns",
                json!({"clusterIP": "10.43.0.10", "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
                ]}),
            ),
        ];
        let endpoints =
            vec![json!({"kind": "Endpoints", "metadata": {"name": "db", "namespace": "default"}, "subsets": [{
                "addresses": [
                    {"ip": "10.42.0.8", "targetRef": {"kind": "Pod", "namespace": "default", "name": "db-0"}},
                    {"ip": "10.42.0.9", "hostname": "replica"}
                ],
                "notReadyAddresses": [{"ip": "10.42.0.10"}],
                "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}]
            }]})];
        let pods = vec![
            json!({"metadata": {"name": "db-0", "namespace": "default"}, "spec": {"hostname": "db-0", "subdomain": "db"},
                   "status": {"phase": "Running", "podIP": "10.42.0.8"}}),
            json!({"metadata": {"name": "done", "namespace": "default"}, "status": {"phase": "Succeeded", "podIP": "10.42.0.11"}}),
            json!({"metadata": {"name": "pending", "namespace": "default"}, "status": {"phase": "Pending"}}),
        ];
        build(&services, &endpoints, &pods, "cluster.local")
    }

    fn a(name: &str, ip: &str) -> Rr {
        Rr { name: name.into(), data: Data::A(ip.parse().unwrap()) }
    }

    fn found(answers: Vec<Rr>) -> Answer {
        Answer::Found { answers, additionals: vec![] }
    }

    #[test]
    fn cluster_ip_service_has_an_a_record() {
        let r = fixture();
        let name = "fleetman-webapp.default.svc.cluster.local.";
        assert_eq!(r.lookup(name, RecordType::A), found(vec![a(name, "10.43.12.7")]));
    }

    #[test]
    fn names_are_case_insensitive_with_or_without_the_trailing_dot() {
        let r = fixture();
        let want = found(vec![a("fleetman-webapp.default.svc.cluster.local.", "10.43.12.7")]);
        assert_eq!(r.lookup("fleetman-webapp.default.svc.cluster.local", RecordType::A), want);
        assert_eq!(r.lookup("Fleetman-Webapp.DEFAULT.svc.Cluster.Local.", RecordType::A), want);
        assert_eq!(r.lookup("FLEETMAN-WEBAPP.default.svc.cluster.local", RecordType::A), want);
    }

    #[test]
    fn headless_service_answers_ready_endpoint_addresses_and_per_address_names() {
        let r = fixture();
        let base = "db.default.svc.cluster.local.";
        assert_eq!(r.lookup(base, RecordType::A), found(vec![a(base, "10.42.0.8"), a(base, "10.42.0.9")]));
        // Hostname from the pod (hostname + subdomain), from the address, never for not-ready ones.
        let db0 = "db-0.db.default.svc.cluster.local.";
        assert_eq!(r.lookup(db0, RecordType::A), found(vec![a(db0, "10.42.0.8")]));
        let replica = "replica.db.default.svc.cluster.local.";
        assert_eq!(r.lookup(replica, RecordType::A), found(vec![a(replica, "10.42.0.9")]));
        assert_eq!(r.lookup("10-42-0-10.db.default.svc.cluster.local", RecordType::A), Answer::NxDomain);
    }

    #[test]
    fn headless_service_without_endpoints_exists_without_addresses() {
        let r = fixture();
        assert_eq!(r.lookup("empty-headless.default.svc.cluster.local", RecordType::A), found(vec![]));
    }

    #[test]
    fn publish_not_ready_addresses_includes_them() {
        let services = vec![svc("default", "db", json!({"clusterIP": "None", "publishNotReadyAddresses": true}))];
        let endpoints = vec![json!({"metadata": {"name": "db", "namespace": "default"}, "subsets": [{
            "notReadyAddresses": [{"ip": "10.42.0.10"}]
        }]})];
        let r = build(&services, &endpoints, &[], "cluster.local");
        let name = "10-42-0-10.db.default.svc.cluster.local.";
        assert_eq!(r.lookup(name, RecordType::A), found(vec![a(name, "10.42.0.10")]));
    }

    #[test]
    fn srv_records_for_named_ports() {
        let r = fixture();
        let owner = "_http._tcp.fleetman-webapp.default.svc.cluster.local.";
        let target = "fleetman-webapp.default.svc.cluster.local.";
        assert_eq!(
            r.lookup(owner, RecordType::SRV),
            Answer::Found {
                answers: vec![Rr {
                    name: owner.into(),
                    data: Data::Srv { priority: 0, weight: 100, port: 80, target: target.into() }
                }],
                additionals: vec![a(target, "10.43.12.7")],
            }
        );
        // Unnamed ports have no SRV record.
        assert_eq!(r.lookup("_8080._tcp.fleetman-webapp.default.svc.cluster.local", RecordType::SRV), Answer::NxDomain);
        // Protocol is lower-cased.
        let dns = r.lookup("_dns._udp.kube-dns.kube-system.svc.cluster.local", RecordType::SRV);
        assert!(matches!(dns, Answer::Found { ref answers, .. } if answers.len() == 1), "{dns:?}");
    }

    #[test]
    fn headless_srv_names_each_endpoint_with_the_endpoint_port_and_shared_weight() {
        let r = fixture();
        let owner = "_pg._tcp.db.default.svc.cluster.local.";
        let srv = |target: &str| Rr {
            name: owner.into(),
            data: Data::Srv { priority: 0, weight: 50, port: 5433, target: target.into() },
        };
        assert_eq!(
            r.lookup(owner, RecordType::SRV),
            Answer::Found {
                answers: vec![srv("db-0.db.default.svc.cluster.local."), srv("replica.db.default.svc.cluster.local.")],
                additionals: vec![
                    a("db-0.db.default.svc.cluster.local.", "10.42.0.8"),
                    a("replica.db.default.svc.cluster.local.", "10.42.0.9")
                ],
            }
        );
    }

    #[test]
    fn external_name_is_a_cname() {
        let r = fixture();
        let name = "ext.web.svc.cluster.local.";
        let cname = Rr { name: name.into(), data: Data::Cname("example.com.".into()) };
        assert_eq!(r.lookup(name, RecordType::CNAME), found(vec![cname.clone()]));
        // An A question gets the CNAME; the server resolves the outside target upstream.
        assert_eq!(r.lookup(name, RecordType::A), found(vec![cname]));
    }

    #[test]
    fn cname_inside_the_domain_is_followed() {
        let r = fixture();
        let name = "alias.web.svc.cluster.local.";
        let target = "fleetman-webapp.default.svc.cluster.local.";
        assert_eq!(
            r.lookup(name, RecordType::A),
            found(vec![Rr { name: name.into(), data: Data::Cname(target.into()) }, a(target, "10.43.12.7")])
        );
    }

    #[test]
    fn pods_have_dashed_ip_names() {
        let r = fixture();
        let name = "10-42-0-8.default.pod.cluster.local.";
        assert_eq!(r.lookup(name, RecordType::A), found(vec![a(name, "10.42.0.8")]));
        assert_eq!(r.lookup("10-42-0-11.default.pod.cluster.local", RecordType::A), Answer::NxDomain, "finished pod");
    }

    #[test]
    fn unknown_names_inside_the_domain_are_nxdomain() {
        let r = fixture();
        assert_eq!(r.lookup("nope.default.svc.cluster.local", RecordType::A), Answer::NxDomain);
        // What a search path produces from a fully qualified name typed without the dot.
        assert_eq!(
            r.lookup("fleetman-webapp.default.svc.cluster.local.default.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn aaaa_for_an_existing_name_is_empty_noerror() {
        let r = fixture();
        assert_eq!(r.lookup("fleetman-webapp.default.svc.cluster.local", RecordType::AAAA), found(vec![]));
        assert_eq!(r.lookup("nope.default.svc.cluster.local", RecordType::AAAA), Answer::NxDomain);
    }

    #[test]
    fn empty_non_terminals_exist() {
        let r = fixture();
        for name in
            ["cluster.local", "svc.cluster.local", "default.svc.cluster.local", "_tcp.db.default.svc.cluster.local"]
        {
            assert_eq!(r.lookup(name, RecordType::A), found(vec![]), "{name}");
        }
        assert_eq!(r.lookup("nons.svc.cluster.local", RecordType::A), Answer::NxDomain);
    }

    #[test]
    fn apex_answers_its_soa() {
        let mut r = fixture();
        r.serial = 42;
        let Answer::Found { answers, .. } = r.lookup("Cluster.Local", RecordType::SOA) else { panic!() };
        assert_eq!(answers, vec![r.soa()]);
        let Data::Soa(soa) = &answers[0].data else { panic!() };
        assert_eq!((soa.serial, soa.minimum), (42, TTL));
    }

    #[test]
    fn outside_names_are_forwarded() {
        let r = fixture();
        assert_eq!(r.lookup("example.com", RecordType::A), Answer::Forward);
        assert_eq!(r.lookup("notcluster.local", RecordType::A), Answer::Forward);
        assert_eq!(Records::default().lookup("x.cluster.local", RecordType::A), Answer::Forward);
    }

    proptest::proptest! {
        #[test]
        fn lookup_never_panics_and_stays_in_its_lane(name in "[a-zA-Z0-9._-]{0,80}", t in 0usize..6) {
            let r = fixture();
            let rtype = [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::CNAME, RecordType::SOA, RecordType::ANY][t];
            let answer = r.lookup(&name, rtype);
            proptest::prop_assert_eq!(matches!(answer, Answer::Forward), !r.is_ours(&name));
        }
    }

    #[test]
    fn another_domain() {
        let services = vec![svc("default", "web", json!({"clusterIP": "10.43.0.20"}))];
        let r = build(&services, &[], &[], "Edge.Example.");
        assert_eq!(r.domain(), "edge.example.");
        assert_eq!(
            r.lookup("web.default.svc.edge.example", RecordType::A),
            found(vec![a("web.default.svc.edge.example.", "10.43.0.20")])
        );
        assert_eq!(r.lookup("web.default.svc.cluster.local", RecordType::A), Answer::Forward);
    }
}
