//! The Endpoints controller: for every Service with a selector, an `Endpoints` object of the
//! same name listing the matching pods' addresses (ready ones in `addresses`, others in
//! `notReadyAddresses`) per resolved target port. Also gives LoadBalancer Services the node's
//! address as their ingress — on an edge host Skerry is its own load balancer.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::objects::{meta, resource, selector::Selector};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The container port a service port's `targetPort` means in `pod` (a number, or a named port).
fn resolve(target: &Value, pod: &Value) -> Option<i64> {
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
}

/// A subset's ready and not-ready addresses.
type Subset = (Vec<Value>, Vec<Value>);

/// The `subsets` of a Service's Endpoints, from the pods of its namespace (pure).
pub fn subsets(svc: &Value, pods: &[Value]) -> Vec<Value> {
    let selector = Selector::from_map(&string_map(&svc["spec"]["selector"]));
    let ports: Vec<Value> = svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    // Pods with the same resolved ports share a subset.
    let mut groups: BTreeMap<Vec<(String, i64, String)>, Subset> = BTreeMap::new();
    for pod in pods {
        if meta::namespace(pod) != meta::namespace(svc)
            || meta::is_deleting(pod)
            || !selector.matches(&meta::labels(pod))
        {
            continue;
        }
        let Some(ip) = pod.pointer("/status/podIP").and_then(Value::as_str) else { continue };
        if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
            continue;
        }
        let resolved: Vec<(String, i64, String)> = ports
            .iter()
            .filter_map(|p| {
                let target = p.get("targetPort").cloned().unwrap_or_else(|| p["port"].clone());
                Some((
                    p["name"].as_str().unwrap_or("").to_string(),
                    resolve(&target, pod)?,
                    p["protocol"].as_str().unwrap_or("TCP").to_string(),
                ))
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let address = json!({
            "ip": ip,
            "nodeName": pod.pointer("/spec/nodeName"),
            "targetRef": {"kind": "Pod", "namespace": meta::namespace(pod), "name": meta::name(pod), "uid": meta::uid(pod)},
        });
        let entry = groups.entry(resolved).or_default();
        if crate::objects::pod::is_ready(pod) {
            entry.0.push(address)
        } else {
            entry.1.push(address)
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
            not_ready.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
            let mut subset = json!({
                "ports": ports.iter().map(|(name, port, proto)| {
                    let mut p = json!({"port": port, "protocol": proto});
                    if !name.is_empty() { p["name"] = json!(name); }
                    p
                }).collect::<Vec<_>>(),
            });
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            subset
        })
        .collect()
}

async fn reconcile(store: &Store, proposer: &Proposer, node_ip: &str) -> Result<(), StoreError> {
    let (services, _) = store.list(&resource::SERVICES.key(), None).await?;
    let (pods, _) = store.list(&resource::PODS.key(), None).await?;
    let (endpoints, _) = store.list(&resource::ENDPOINTS.key(), None).await?;
    let key = |o: &Value| (meta::namespace(o).to_string(), meta::name(o).to_string());
    let existing: BTreeMap<(String, String), &Value> = endpoints.iter().map(|e| (key(e), e)).collect();
    for svc in &services {
        load_balancer_status(proposer, svc, node_ip).await?;
        if svc.pointer("/spec/selector").and_then(Value::as_object).is_none_or(|m| m.is_empty()) {
            continue;
        }
        let subsets = subsets(svc, &pods);
        match existing.get(&key(svc)) {
            Some(ep) if ep.get("subsets").cloned().unwrap_or(json!([])) == json!(subsets) => {}
            Some(ep) => {
                let mut new = (*ep).clone();
                new["subsets"] = json!(subsets);
                proposer.propose(Command::Update { resource: resource::ENDPOINTS.key(), object: new }).await?;
            }
            None => {
                let ep = json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": meta::name(svc), "namespace": meta::namespace(svc), "uid": uuid::Uuid::new_v4().to_string(),
                                 "creationTimestamp": meta::now(), "labels": svc.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
                    "subsets": subsets,
                });
                match proposer.propose(Command::Create { resource: resource::ENDPOINTS.key(), object: ep }).await {
                    Ok(_) | Err(StoreError::Rejected(Rejection::AlreadyExists { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // Endpoints of Services that are gone go with them.
    let live: std::collections::HashSet<(String, String)> = services.iter().map(key).collect();
    for ep in endpoints.iter().filter(|e| !live.contains(&key(e))) {
        let cmd = Command::delete_of(resource::ENDPOINTS.key(), ep);
        match proposer.propose(cmd).await {
            Ok(_)
            | Err(StoreError::Rejected(Rejection::NotFound { .. }))
            | Err(StoreError::Rejected(Rejection::Conflict { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// LoadBalancer Services get the node's address as ingress; others get none.
async fn load_balancer_status(proposer: &Proposer, svc: &Value, node_ip: &str) -> Result<(), StoreError> {
    let want = if svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") {
        json!({"ingress": [{"ip": node_ip, "ipMode": "VIP"}]})
    } else {
        json!({})
    };
    if svc.pointer("/status/loadBalancer") == Some(&want) {
        return Ok(());
    }
    let mut new = svc.clone();
    new["status"]["loadBalancer"] = want;
    match proposer.propose(Command::Update { resource: resource::SERVICES.key(), object: new }).await {
        Ok(_)
        | Err(StoreError::Rejected(Rejection::Conflict { .. }))
        | Err(StoreError::Rejected(Rejection::NotFound { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `kube-system/kube-dns` at the cluster DNS address when missing.
pub async fn ensure_kube_dns(store: &Store, proposer: &Proposer, dns_ip: std::net::Ipv4Addr) -> Result<(), StoreError> {
    if store.get(&resource::SERVICES.key(), "kube-system", "kube-dns").await?.is_some() {
        return Ok(());
    }
    let ip = dns_ip.to_string();
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::now(),
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}
            ]
        },
        "status": {"loadBalancer": {}}
    });
    match proposer.propose(Command::Create { resource: resource::SERVICES.key(), object: svc }).await {
        Ok(_) | Err(StoreError::Rejected(Rejection::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn run(store: Store, proposer: Proposer, node_ip: String, shutdown: CancellationToken) {
    let watched = [resource::SERVICES.key(), resource::PODS.key(), resource::ENDPOINTS.key()];
    let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
    crate::controllers::run_loop(store.clone(), &watched, shutdown, || async {
        if let Err(e) = reconcile(&store, &proposer, &node_ip).await {
            tracing::warn!(error = %e, "endpoints reconcile failed; will retry");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, labels: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
               "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn subsets_follow_selector_readiness_and_named_ports() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
                         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}});
        let pods = vec![
            pod("a", "10.42.0.6", true, json!({"app": "web"})),
            pod("b", "10.42.0.5", true, json!({"app": "web"})),
            pod("c", "10.42.0.7", false, json!({"app": "web"})),
            pod("d", "10.42.0.8", true, json!({"app": "db"})),
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        let ips: Vec<&str> = s[0]["addresses"].as_array().unwrap().iter().map(|a| a["ip"].as_str().unwrap()).collect();
        assert_eq!(ips, vec!["10.42.0.5", "10.42.0.6"]);
        assert_eq!(s[0]["notReadyAddresses"][0]["ip"], "10.42.0.7");
        assert_eq!(s[0]["addresses"][0]["targetRef"]["name"], "b");
    }

    #[tokio::test]
    async fn controller_writes_endpoints_and_lb_status() {
        let (store, proposer) = crate::store::test_store().await;
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
                         "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}});
        proposer.propose(Command::Create { resource: "services".into(), object: svc }).await.unwrap();
        let mut p = pod("a", "10.42.0.5", true, json!({"app": "web"}));
        p["apiVersion"] = json!("v1");
        p["kind"] = json!("Pod");
        proposer.propose(Command::Create { resource: "pods".into(), object: p }).await.unwrap();
        reconcile(&store, &proposer, "192.0.2.10").await.unwrap();
        let ep = store.get("endpoints", "default", "web").await.unwrap().unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.42.0.5");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
        let svc = store.get("services", "default", "web").await.unwrap().unwrap();
        assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.10");
        let rev = store.revision().await.unwrap();
        reconcile(&store, &proposer, "192.0.2.10").await.unwrap();
        assert_eq!(store.revision().await.unwrap(), rev, "nothing changed, nothing written");
        proposer
            .propose(Command::Delete {
                resource: "services".into(),
                namespace: "default".into(),
                name: "web".into(),
                uid: None,
            })
            .await
            .unwrap();
        reconcile(&store, &proposer, "192.0.2.10").await.unwrap();
        assert!(store.get("endpoints", "default", "web").await.unwrap().is_none());
    }
}
