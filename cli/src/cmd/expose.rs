//! `skerry expose`: creates a Service in front of a pod, deployment, replica set or
//! replication controller, using its labels as the selector.

use std::io::Write;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::{json_body, request, Ctx};
use crate::error::{Error, Result};
use crate::resources::parse_targets;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE NAME or TYPE/NAME (pod, deployment, replicaset, replicationcontroller, service)
    #[arg(required = true)]
    pub resource: Vec<String>,
    /// The port the service serves on (default: the first container port)
    #[arg(long)]
    pub port: Option<u16>,
    /// The port on the pods to send traffic to (number or name; default: --port)
    #[arg(long)]
    pub target_port: Option<String>,
    /// TCP, UDP or SCTP
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// The name of the new service (default: the exposed object's name)
    #[arg(long)]
    pub name: Option<String>,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName
    #[arg(long = "type")]
    pub service_type: Option<String>,
    /// A label selector to use instead of the object's labels
    #[arg(long)]
    pub selector: Option<String>,
    /// An external IP for the service
    #[arg(long)]
    pub external_ip: Option<String>,
    /// Labels for the service (k=v,k2=v2)
    #[arg(short = 'l', long)]
    pub labels: Option<String>,
}

/// The selector and first port a Service for `obj` should use.
pub fn selector_and_port(obj: &Value) -> (Map<String, Value>, Option<i64>) {
    let kind = obj["kind"].as_str().unwrap_or("");
    let selector = match kind {
        "Pod" => obj.pointer("/metadata/labels"),
        "ReplicationController" => obj.pointer("/spec/selector"),
        "Service" => obj.pointer("/spec/selector"),
        _ => obj.pointer("/spec/selector/matchLabels"),
    }
    .and_then(Value::as_object)
    .cloned()
    .unwrap_or_default();
    let containers = obj.pointer("/spec/containers").or_else(|| obj.pointer("/spec/template/spec/containers"));
    let port = match kind {
        "Service" => obj.pointer("/spec/ports/0/port").and_then(Value::as_i64),
        _ => containers
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find_map(|p| p["containerPort"].as_i64()),
    };
    (selector, port)
}

fn pairs(text: &str) -> Result<Map<String, Value>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), json!(v.trim())))
                .ok_or_else(|| Error::msg(format!("invalid key=value {p:?}")))
        })
        .collect()
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let disc = ctx.discovery().await?.clone();
    let targets = parse_targets(&disc, &args.resource)?;
    let [target] = targets.targets.as_slice() else { return Err(Error::msg("expose takes one resource")) };
    let [name] = target.names.as_slice() else { return Err(Error::msg("expose takes one object name")) };
    if !matches!(
        target.resource.kind.as_str(),
        "Pod" | "Deployment" | "ReplicaSet" | "ReplicationController" | "Service"
    ) {
        return Err(Error::msg(format!("cannot expose a {}", target.resource.kind)));
    }
    let obj = ctx.get_json(&target.resource.item(&ctx.namespace, name), false).await?;
    let (mut selector, first_port) = selector_and_port(&obj);
    if let Some(s) = &args.selector {
        selector = pairs(s)?;
    }
    if selector.is_empty() {
        return Err(Error::msg(format!(
            "couldn't retrieve selectors via --selector flag or introspection: the {} {name:?} has no labels",
            target.resource.singular_name
        )));
    }
    let port = args.port.map(i64::from).or(first_port).ok_or_else(|| {
        Error::msg(format!(
            "couldn't find port via --port flag or introspection: the {} {name:?} names no container port",
            target.resource.singular_name
        ))
    })?;
    let target_port: Value = match &args.target_port {
        Some(t) => t.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(t)),
        None => json!(port),
    };
    let service_name = args.name.clone().unwrap_or_else(|| name.clone());
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name, "namespace": ctx.namespace},
        "spec": {"selector": selector, "ports": [{"port": port, "protocol": args.protocol, "targetPort": target_port}]},
    });
    if let Some(t) = &args.service_type {
        svc["spec"]["type"] = json!(t);
    }
    if let Some(ip) = &args.external_ip {
        svc["spec"]["externalIPs"] = json!([ip]);
    }
    if let Some(l) = &args.labels {
        svc["metadata"]["labels"] = Value::Object(pairs(l)?);
    } else if let Some(l) = obj.pointer("/metadata/labels") {
        svc["metadata"]["labels"] = l.clone();
    }
    let path = format!("/api/v1/namespaces/{}/services", ctx.namespace);
    ctx.json(request(Method::POST, &path, json_body(&svc))).await?;
    writeln!(ctx.out, "service/{service_name} exposed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn selectors_and_ports_from_objects() {
        let pod = json!({"kind": "Pod", "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"ports": [{"containerPort": 8080}]}]}});
        let (sel, port) = super::selector_and_port(&pod);
        assert_eq!((json!(sel), port), (json!({"app": "web"}), Some(8080)));
        let deploy = json!({"kind": "Deployment", "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"spec": {"containers": [{"name": "c"}]}}}});
        let (sel, port) = super::selector_and_port(&deploy);
        assert_eq!((json!(sel), port), (json!({"app": "api"}), None));
        let rc = json!({"kind": "ReplicationController", "spec": {"selector": {"app": "redis"}, "template": {"spec": {"containers": [{"ports": [{"containerPort": 6379}]}]}}}});
        assert_eq!(super::selector_and_port(&rc).1, Some(6379));
    }
}
