//! Who may do what through the API: every request is authorized by its caller's [`Principal`]
//! with the Node authorizer ([`authz::authorize`]) before any handler runs.
//!
//! The principal is a request extension that the listener attaches: [`super::serve`] (the Unix
//! socket) attaches [`Principal::Admin`], the cluster port the peer certificate's identity. A
//! request without one is refused (a listener that forgot is a bug, never an admin). A request is
//! mapped to Kubernetes' attributes — verb from the method, the path and `watch`; resource,
//! subresource, namespace and name from the path, from a `metadata.name` field selector on a list
//! or watch, from the body's `metadata.name` on a create — and a denial is the API server's `403
//! Forbidden` Status. Version, health and discovery are open to every principal; node-local
//! routes (images, info, metrics) and unknown paths only to the unrestricted ones (admin,
//! servers). An agent's pod lists and watches are narrowed here to `spec.nodeName=<its node>`.
//!
//! The [`PodGraph`] an agent's decision may need is built from the store for that request, and
//! only when the authorizer asks it something: nothing is cached, so no decision reads a graph
//! older than the store.

use std::cell::Cell;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::{json, Value};

use crate::cluster::authz::{self, Decision, Graph, Kind, PodGraph, Principal, Verb};
use crate::cluster::identity::NODE_USER_PREFIX;
use crate::objects::{meta, resource};

use super::crud::{parse_body, Filter, Query};
use super::error::ApiError;
use super::{path, ApiState};

/// The node write endpoint (see [`super::propose`]); it authorizes each command itself.
pub const PROPOSE_PATH: &str = "/skerry/v1/propose";

/// The largest request body read to find a created object's name (as `crud` reads bodies).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The middleware: authorizes the request by its principal, then runs the handler.
pub async fn authorize(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return no_principal().into_response();
    };
    match check(&st, &principal, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The answer to a request that reached the router without a principal.
fn no_principal() -> ApiError {
    ApiError::forbidden(
        "forbidden: the request carries no identity, so it is refused; this is a bug in skerryd: \
         every listener must attach the caller's principal before the API router",
    )
}

/// Authorizes `req`, returning it (its query narrowed, its body restored) when allowed.
async fn check(st: &ApiState, principal: &Principal, req: Request) -> Result<Request, ApiError> {
    let path = req.uri().path().to_string();
    if open(&path) {
        return Ok(req);
    }
    let Some(target) = resource_path(&path) else {
        // Node-local routes (images, info, metrics) and anything unknown: admin and servers only.
        if authz::unrestricted(principal) {
            return Ok(req);
        }
        let verb = req.method().as_str().to_ascii_lowercase();
        return Err(ApiError::forbidden(format!("forbidden: User {:?} cannot {verb} path {path:?}", user(principal))));
    };
    let q = Query::parse(req.uri().query())?;
    let named = target.name.is_some();
    let method = req.method().clone();
    let verb = match method {
        Method::GET | Method::HEAD if named => Verb::Get,
        Method::GET | Method::HEAD if q.flag("watch") => Verb::Watch,
        Method::GET | Method::HEAD => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT => Verb::Update,
        Method::PATCH => Verb::Patch,
        Method::DELETE if named => Verb::Delete,
        Method::DELETE => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed(method.as_str(), &path)),
    };
    // A list's or watch's selectors, read as its handler reads them.
    let filter = match verb {
        Verb::List | Verb::Watch => Some(Filter::from_query(&q)?),
        _ => None,
    };
    // The name the request is about: the path's, or a list's or watch's `metadata.name=X`.
    let name = match &filter {
        Some(f) => f.field_terms("metadata.name").find(|(negated, _)| !negated).map(|(_, v)| v.to_string()),
        None => target.name.clone(),
    };
    // A create names its object in the body; only a restricted principal's decision needs it.
    let (req, created) = if verb == Verb::Create && !named && !authz::unrestricted(principal) {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let created = parse_body(&bytes).ok().map(|o| meta::name(&o).to_string()).filter(|n| !n.is_empty());
        (Request::from_parts(parts, Body::from(bytes)), created)
    } else {
        (req, None)
    };
    let key = target.rt.key();
    let attributes = authz::Request {
        verb,
        resource: &key,
        subresource: target.subresource.as_deref(),
        namespace: target.namespace.as_deref(),
        name: name.as_deref().or(created.as_deref()),
    };
    if let Decision::Deny(reason) = decide(st, principal, &attributes).await? {
        // As the API server: the name of a create is not part of the attributes it reports.
        let shown = Attributes { name: name.as_deref(), ..Attributes::of(&attributes, target.rt) };
        return Err(forbidden(principal, &shown, &reason));
    }
    match (authz::pod_list_filter(principal), key.as_str(), &filter) {
        (Some(node), "pods", Some(filter)) => {
            if filter.field_terms("spec.nodeName").any(|(negated, value)| negated || value != node) {
                let reason = format!("node '{node}' can only list and watch pods with spec.nodeName={node}");
                return Err(forbidden(principal, &Attributes::of(&attributes, target.rt), &reason));
            }
            narrow(req, &q, node)
        }
        _ => Ok(req),
    }
}

/// Paths every principal may use: version, health and discovery. The propose endpoint is let
/// through too; it authorizes each command itself.
fn open(path: &str) -> bool {
    if matches!(path, "/version" | "/healthz" | "/skerry/v1/resources" | PROPOSE_PATH) {
        return true;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api"] | ["api", _] | ["apis"] => true,
        ["apis", group] | ["apis", group, _] => *group != METRICS_GROUP,
        _ => false,
    }
}

/// The resource metrics API's group: node-local numbers, for admin and servers only.
const METRICS_GROUP: &str = "metrics.k8s.io";

/// The resource a Kubernetes-shaped path names, if it names one.
fn resource_path(path: &str) -> Option<path::Target> {
    let group = path.strip_prefix("/apis/").map(|rest| rest.split('/').next().unwrap_or(""));
    if group == Some(METRICS_GROUP) || !(path.starts_with("/api/") || path.starts_with("/apis/")) {
        return None;
    }
    path::parse(path).ok()
}

/// Serves an agent's pod list or watch only its node's pods: `spec.nodeName=<node>` is added to
/// the field selector (which asks for no other node: the caller checked).
fn narrow(req: Request, q: &Query, node: &str) -> Result<Request, ApiError> {
    let selector = match q.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
        Some(s) => format!("{s},spec.nodeName={node}"),
        None => format!("spec.nodeName={node}"),
    };
    // The handler reads the first `fieldSelector`; the narrowed one replaces them all.
    let mut pairs: Vec<(String, String)> = q.pairs.iter().filter(|(k, _)| k != "fieldSelector").cloned().collect();
    pairs.push(("fieldSelector".into(), selector));
    let query = serde_urlencoded::to_string(&pairs)
        .map_err(|e| ApiError::internal(format!("narrowing a pod list: encoding the query: {e}")))?;
    let (mut parts, body) = req.into_parts();
    let uri = format!("{}?{query}", parts.uri.path());
    parts.uri = uri
        .parse::<Uri>()
        .map_err(|e| ApiError::internal(format!("narrowing a pod list: the URI {uri:?} does not parse: {e}")))?;
    Ok(Request::from_parts(parts, body))
}

/// Decides `attributes` for `principal`, building the pod graph of its node only when the
/// authorizer asks about it.
pub(super) async fn decide(
    st: &ApiState,
    principal: &Principal,
    attributes: &authz::Request<'_>,
) -> Result<Decision, ApiError> {
    let probe = Probe::default();
    let first = authz::authorize(principal, attributes, &probe);
    if !probe.asked.get() {
        return Ok(first);
    }
    let Principal::Node(identity) = principal else { return Ok(first) };
    let graph = pod_graph(st, &identity.node_name).await?;
    Ok(authz::authorize(principal, attributes, &graph))
}

/// A [`Graph`] that knows nothing and notes that it was asked.
#[derive(Default)]
struct Probe {
    asked: Cell<bool>,
}

impl Graph for Probe {
    fn relates(&self, _: &str, _: Kind, _: &str, _: &str) -> bool {
        self.asked.set(true);
        false
    }
}

/// The graph of the pods bound to `node`, read from the store now.
async fn pod_graph(st: &ApiState, node: &str) -> Result<PodGraph, ApiError> {
    let (pods, _) = st.store.list(&resource::PODS.key(), None).await?;
    let bound: Vec<Value> =
        pods.into_iter().filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)).collect();
    let pods: Vec<Pod> = bound.iter().filter_map(|p| typed(p, "pod")).collect();
    // Claims matter only through a pod's claim or ephemeral volume.
    let claims_used = bound.iter().any(|p| {
        p.pointer("/spec/volumes").and_then(Value::as_array).is_some_and(|vs| {
            vs.iter().any(|v| v.get("persistentVolumeClaim").is_some() || v.get("ephemeral").is_some())
        })
    });
    let claims: Vec<PersistentVolumeClaim> = if claims_used {
        let (claims, _) = st.store.list(&resource::PERSISTENT_VOLUME_CLAIMS.key(), None).await?;
        claims.iter().filter_map(|c| typed(c, "persistentvolumeclaim")).collect()
    } else {
        Vec::new()
    };
    Ok(PodGraph::build(&pods, &claims))
}

/// A stored object as its `k8s-openapi` type; one that does not read adds nothing to the graph
/// (its node is then refused what it uses), and says so in the log.
fn typed<T: serde::de::DeserializeOwned>(obj: &Value, what: &str) -> Option<T> {
    match serde_json::from_value(obj.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(namespace = meta::namespace(obj), name = meta::name(obj), error = %e,
                "a stored {what} does not read as one; its node is refused what it uses");
            None
        }
    }
}

/// The user name a principal is known by in messages, as Kubernetes names nodes.
fn user(principal: &Principal) -> String {
    match principal {
        Principal::Admin => "system:admin".to_string(),
        Principal::Node(identity) => format!("{NODE_USER_PREFIX}{}", identity.node_name),
    }
}

/// What a 403 reports of a request, as the API server's `forbiddenMessage` does.
pub(super) struct Attributes<'a> {
    pub verb: Verb,
    /// The plural resource name, without the group (`deployments`).
    pub resource: &'a str,
    pub group: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl<'a> Attributes<'a> {
    fn of(request: &authz::Request<'a>, rt: &'a resource::ResourceType) -> Attributes<'a> {
        Attributes {
            verb: request.verb,
            resource: rt.name,
            group: rt.group,
            subresource: request.subresource,
            namespace: request.namespace,
            name: request.name,
        }
    }

    /// From a storage key (`pods`, `deployments.apps`), also one of a type the API does not serve.
    pub fn of_key(request: &authz::Request<'a>) -> Attributes<'a> {
        let (resource, group) = match resource::by_key(request.resource) {
            Some(rt) => (rt.name, rt.group),
            None => request.resource.split_once('.').unwrap_or((request.resource, "")),
        };
        Attributes {
            verb: request.verb,
            resource,
            group,
            subresource: request.subresource,
            namespace: request.namespace,
            name: request.name,
        }
    }
}

/// The API server's `403 Forbidden`: `secrets "db-pass" is forbidden: User "system:node:edge-1"
/// cannot get resource "secrets" in API group "" in the namespace "default": <reason>`.
pub(super) fn forbidden(principal: &Principal, a: &Attributes<'_>, reason: &str) -> ApiError {
    let resource = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_string(),
    };
    let scope = match a.namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let qualified = if a.group.is_empty() { a.resource.to_string() } else { format!("{}.{}", a.resource, a.group) };
    let name = a.name.filter(|n| !n.is_empty());
    let head = match name {
        Some(n) => format!("{qualified} {n:?} is forbidden"),
        None => format!("{qualified} is forbidden"),
    };
    let mut message = format!(
        "{head}: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user(principal),
        a.verb,
        a.group
    );
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    let mut e = ApiError::forbidden(message);
    e.details = json!({"kind": a.resource});
    if let Some(n) = name {
        e.details["name"] = json!(n);
    }
    if !a.group.is_empty() {
        e.details["group"] = json!(a.group);
    }
    e
}

#[cfg(test)]
mod tests;
