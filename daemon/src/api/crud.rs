//! Create, get, list, update, patch, apply, delete and watch for every served resource type.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::objects::{self, meta, resource, selector::Selector, ResourceType};
use crate::store::{Command, Rejection, StoreError};

use super::error::ApiError;
use super::path::{self, Target};
use super::{describe, node, table, watch, ApiState};

/// Query parameters every verb may carry, decoded once.
#[derive(Debug, Default)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query: {e}")))?;
        Ok(Query { pairs })
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | ""))
    }
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("{key} must be an integer, got {v:?}"))))
            .transpose()
    }
}

/// Filters a list or watch by label and field selectors.
pub struct Filter {
    labels: Selector,
    fields: Vec<(String, bool, String)>,
}

impl Filter {
    pub fn from_query(q: &Query) -> Result<Filter, ApiError> {
        let labels = Selector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
        let mut fields = Vec::new();
        for term in q.get("fieldSelector").unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            let (key, negate, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, false, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector {term:?}")));
            };
            fields.push((key.trim().to_string(), negate, value.trim().to_string()));
        }
        Ok(Filter { labels, fields })
    }

    /// The field selector's terms on `field`, as (negated, value): `metadata.name=web` is
    /// `(false, "web")`.
    pub fn field_terms<'a>(&'a self, field: &'a str) -> impl Iterator<Item = (bool, &'a str)> + 'a {
        self.fields.iter().filter(move |(path, _, _)| path == field).map(|(_, negate, value)| (*negate, value.as_str()))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&meta::labels(obj))
            && self.fields.iter().all(|(path, negate, want)| {
                let pointer = format!("/{}", path.replace('.', "/"));
                let have =
                    obj.pointer(&pointer).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                (have.as_deref().unwrap_or("") == want) != *negate
            })
    }
}

pub fn wants_table(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=Table"))
}

/// Parses a request body as JSON, or as YAML when it is not JSON.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty; send the object as JSON"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_yaml_ng::from_slice::<Value>(body)
            .map_err(|_| ApiError::bad_request(format!("the request body is not valid JSON: {json_err}"))),
    }
}

pub async fn handle(State(st): State<ApiState>, req: Request) -> Response {
    match dispatch(st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(st: ApiState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let target = path::parse(parts.uri.path())?;
    let q = Query::parse(parts.uri.query())?;
    let method = parts.method.clone();
    let sub = target.subresource.as_deref();
    if method == Method::POST && sub == Some("exec") {
        let headers = parts.headers.clone();
        return node::exec(st, target, q, headers, axum::extract::Request::from_parts(parts, body)).await;
    }
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let headers = parts.headers;
    match (&method, target.name.is_some(), sub) {
        (&Method::GET, false, None) if q.flag("watch") => watch::watch(st, target, q, wants_table(&headers)).await,
        (&Method::GET, false, None) => list(st, target, q, wants_table(&headers)).await,
        (&Method::GET, true, None) => get_one(st, target, wants_table(&headers)).await,
        (&Method::GET, true, Some("status")) => get_one(st, target, false).await,
        (&Method::GET, true, Some("describe")) => describe_one(st, target).await,
        (&Method::GET, true, Some("log")) => node::logs(st, target, q, &headers, &parts.uri).await,
        (&Method::POST, false, None) if target.rt.kind == "JoinToken" => super::tokens::create(&st, &body).await,
        (&Method::PUT | &Method::PATCH, true, _) if target.rt.kind == "JoinToken" => Err(ApiError::method_not_allowed(
            method.as_str(),
            "join tokens: they cannot be changed; delete the token and create another",
        )),
        (&Method::POST, false, None) => create(st, target, &body).await,
        (&Method::POST, true, Some("eviction")) if target.rt.kind == "Pod" => {
            super::eviction::evict(st, target, &body).await
        }
        (&Method::PUT, true, None) => update(st, target, &body, false).await,
        (&Method::PUT, true, Some("status")) => update(st, target, &body, true).await,
        (&Method::PATCH, true, None) => patch(st, target, &headers, &q, &body).await,
        (&Method::DELETE, true, None) => delete(st, target, &q, &body).await,
        (&Method::DELETE, false, None) => delete_collection(st, target, &q, &body).await,
        _ => Err(ApiError::method_not_allowed(method.as_str(), parts.uri.path())),
    }
}

fn item_namespace(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or("")
}

pub(super) async fn fetch(st: &ApiState, target: &Target) -> Result<Value, ApiError> {
    let name = target.name.as_deref().unwrap_or("");
    st.store
        .get(&target.rt.key(), item_namespace(target), name)
        .await?
        .ok_or_else(|| ApiError::not_found(&target.rt.key(), name))
}

pub(super) fn json_response(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, axum::Json(value)).into_response();
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

async fn get_one(st: ApiState, target: Target, as_table: bool) -> Result<Response, ApiError> {
    // A plain get is linearizable (read index), as the API server's from etcd.
    st.proposer.barrier().await?;
    let obj = fetch(&st, &target).await?;
    if as_table {
        let rv = meta::resource_version(&obj).parse().unwrap_or(0);
        return Ok(json_response(StatusCode::OK, &table::render(target.rt.kind, &[obj], rv), &[]));
    }
    Ok(json_response(StatusCode::OK, &obj, &[]))
}

async fn list(st: ApiState, target: Target, q: Query, as_table: bool) -> Result<Response, ApiError> {
    let filter = Filter::from_query(&q)?;
    // Without a resourceVersion a list is linearizable (read index); with one, the local replica
    // serves it as it is.
    if q.get("resourceVersion").is_none_or(str::is_empty) {
        st.proposer.barrier().await?;
    }
    let (objects, revision) = st.store.list(&target.rt.key(), target.namespace.as_deref()).await?;
    let items: Vec<Value> = objects.into_iter().filter(|o| filter.matches(o)).collect();
    if as_table {
        return Ok(json_response(StatusCode::OK, &table::render(target.rt.kind, &items, revision), &[]));
    }
    let list = json!({
        "kind": format!("{}List", target.rt.kind),
        "apiVersion": target.rt.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}

async fn describe_one(st: ApiState, target: Target) -> Result<Response, ApiError> {
    let obj = fetch(&st, &target).await?;
    let uid = meta::uid(&obj).to_string();
    // Events about cluster-scoped objects are kept in `default`, as Kubernetes keeps them.
    let events_ns = match meta::namespace(&obj) {
        "" => "default",
        ns => ns,
    };
    let (events, _) = st.store.list(&resource::EVENTS.key(), Some(events_ns)).await?;
    let kind = target.rt.kind;
    let about = |e: &Value| {
        let involved = &e["involvedObject"];
        involved["uid"].as_str() == Some(&uid)
            // kubelet names its node by name as the uid.
            || (kind == "Node" && involved["kind"] == "Node" && involved["name"].as_str() == Some(meta::name(&obj)))
    };
    let mut events: Vec<Value> = events.into_iter().filter(about).collect();
    events.sort_by_key(|e| {
        (meta::parse_time(e.get("firstTimestamp")), meta::resource_version(e).parse::<u64>().unwrap_or(0))
    });
    let ns = meta::namespace(&obj);
    let related: Vec<Value> = match target.rt.kind {
        "Service" => st.store.get(&resource::ENDPOINTS.key(), ns, meta::name(&obj)).await?.into_iter().collect(),
        "Deployment" => st.store.list(&resource::REPLICA_SETS.key(), Some(ns)).await?.0,
        "ReplicaSet" | "ReplicationController" => st.store.list(&resource::PODS.key(), Some(ns)).await?.0,
        // The pods on the node that have not terminated, as kubectl lists them.
        "Node" => {
            let (pods, _) = st.store.list(&resource::PODS.key(), None).await?;
            pods.into_iter()
                .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(meta::name(&obj)))
                .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
                .collect()
        }
        _ => Vec::new(),
    };
    let text = describe::describe(target.rt.kind, &obj, &related, &events);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Makes the object's namespace agree with the path (or rejects the mismatch).
fn place(rt: &ResourceType, target: &Target, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if !rt.namespaced {
        meta::metadata_mut(obj).remove("namespace");
        return Ok(());
    }
    let path_ns = target.namespace.as_deref().ok_or_else(|| {
        ApiError::bad_request(format!("{} is namespaced: use /namespaces/{{namespace}}/{}", rt.name, rt.name))
    })?;
    match meta::namespace(obj) {
        "" => meta::set(obj, "namespace", path_ns),
        ns if ns != path_ns => {
            return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({path_ns})"
        )))
        }
        _ => {}
    }
    Ok(())
}

/// Kinds whose status is written only through `/status` (by the system).
fn has_status_subresource(rt: &ResourceType) -> bool {
    matches!(
        rt.kind,
        "Pod"
            | "Namespace"
            | "Node"
            | "Service"
            | "Deployment"
            | "ReplicaSet"
            | "ReplicationController"
            | "PersistentVolume"
            | "PersistentVolumeClaim"
    )
}

/// Validates, defaults and stores a new object; shared by POST and apply.
pub async fn create_object(st: &ApiState, target: &Target, mut obj: Value) -> Result<(Value, Vec<String>), ApiError> {
    let rt = target.rt;
    place(rt, target, &mut obj)?;
    if meta::name(&obj).is_empty() {
        if let Some(prefix) = obj.pointer("/metadata/generateName").and_then(Value::as_str).map(str::to_string) {
            let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().take(5).collect();
            meta::set(&mut obj, "name", format!("{prefix}{suffix}"));
        }
    }
    // A Node is created with its status (kubelet registers it so); other kinds' status is the system's.
    if has_status_subresource(rt) && rt.kind != "Node" {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    let admitted = objects::admit(rt, obj)?;
    let mut obj = admitted.object;
    for system in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        meta::metadata_mut(&mut obj).remove(system);
    }
    meta::set(&mut obj, "uid", uuid::Uuid::new_v4().to_string());
    meta::set(&mut obj, "creationTimestamp", meta::now());
    if obj.get("spec").is_some() {
        meta::set(&mut obj, "generation", 1);
    }
    // The namespace's existence and the uniqueness of allocated values are checked by the
    // state machine, in the transaction that stores the object.
    let asked = obj;
    let mut attempt = 0;
    let applied = loop {
        let mut obj = asked.clone();
        // The first try takes the lowest free values; a retry starts at a random one.
        let start = if attempt == 0 { 0 } else { uuid::Uuid::new_v4().as_u64_pair().0 };
        allocate(st, rt, &mut obj, None, start).await?;
        match st.proposer.propose(Command::Create { resource: rt.key(), object: obj }).await {
            // A value picked here was taken meanwhile (another request, another server): pick again.
            Err(StoreError::Rejected(Rejection::Invalid { field, .. }))
                if attempt < 8 && !requested(&asked, &field) =>
            {
                attempt += 1;
            }
            result => break result?,
        }
    };
    Ok((applied.object, admitted.warnings))
}

async fn create(st: ApiState, target: Target, body: &[u8]) -> Result<Response, ApiError> {
    let obj = parse_body(body)?;
    let (obj, warnings) = create_object(&st, &target, obj).await?;
    Ok(json_response(StatusCode::CREATED, &obj, &warnings))
}

/// Validates and stores a new version of `old`. `new` carries the caller's whole object.
async fn replace(
    st: &ApiState,
    target: &Target,
    old: &Value,
    mut new: Value,
    status_only: bool,
) -> Result<(Value, Vec<String>, bool), ApiError> {
    let rt = target.rt;
    place(rt, target, &mut new)?;
    let name = target.name.as_deref().unwrap_or("");
    if meta::name(&new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&new)
        )));
    }
    let requested_rv = meta::resource_version(&new).to_string();
    if status_only {
        let status = new.get("status").cloned().unwrap_or(Value::Null);
        new = old.clone();
        new["status"] = status;
    } else if has_status_subresource(rt) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }
    // System metadata is the server's, whatever the client sent.
    for system in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match old.pointer(&format!("/metadata/{system}")) {
            Some(v) => meta::set(&mut new, system, v.clone()),
            None => {
                meta::metadata_mut(&mut new).remove(system);
            }
        }
    }
    let admitted = if status_only { objects::admit(rt, new)? } else { objects::admit_update(rt, old, new)? };
    let mut new = admitted.object;
    if !status_only {
        allocate(st, rt, &mut new, Some(old), 0).await?;
    }
    let rv = if requested_rv.is_empty() { meta::resource_version(old).to_string() } else { requested_rv };
    meta::set(&mut new, "resourceVersion", rv.clone());
    if unchanged(old, &new) {
        return Ok((old.clone(), admitted.warnings, false));
    }
    if old.get("spec") != new.get("spec") {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        meta::set(&mut new, "generation", generation);
    }
    let applied = st.proposer.propose(Command::Update { resource: rt.key(), object: new }).await?;
    Ok((applied.object, admitted.warnings, true))
}

/// Picks a Service's ClusterIP and NodePorts from what this replica sees. Only a proposal
/// decides: the state machine refuses a value another object holds.
async fn allocate(
    st: &ApiState,
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    start: u64,
) -> Result<(), ApiError> {
    if rt.kind != "Service" {
        return Ok(());
    }
    let (all, _) = st.store.list(&rt.key(), None).await?;
    let others: Vec<Value> = all
        .into_iter()
        .filter(|o| !(meta::namespace(o) == meta::namespace(obj) && meta::name(o) == meta::name(obj)))
        .collect();
    st.services.allocate(obj, old, &others, start)
}

/// Whether the client itself asked for the value at `field` (`spec.clusterIPs`,
/// `spec.ports[0].nodePort`) of a Service, rather than leaving it to the allocator.
fn requested(asked: &Value, field: &str) -> bool {
    if field == "spec.clusterIPs" {
        return asked.pointer("/spec/clusterIP").and_then(Value::as_str).is_some_and(|ip| !ip.is_empty());
    }
    let index =
        field.strip_prefix("spec.ports[").and_then(|f| f.split(']').next()).and_then(|i| i.parse::<usize>().ok());
    index.is_some_and(|i| {
        asked.pointer(&format!("/spec/ports/{i}/nodePort")).and_then(Value::as_i64).is_some_and(|n| n != 0)
    })
}

fn unchanged(old: &Value, new: &Value) -> bool {
    old == new
}

async fn update(st: ApiState, target: Target, body: &[u8], status_only: bool) -> Result<Response, ApiError> {
    let new = parse_body(body)?;
    let old = fetch(&st, &target).await?;
    let (obj, warnings, _) = replace(&st, &target, &old, new, status_only).await?;
    Ok(json_response(StatusCode::OK, &obj, &warnings))
}

/// How often a write that names no resourceVersion is retried from a fresh read when another
/// writer (a controller's status update) got in between, as the API server's GuaranteedUpdate.
const UNCONDITIONAL_RETRIES: usize = 8;

/// Runs `attempt` again after a 409 when the request named no resourceVersion.
async fn retrying<T, F, Fut>(unconditional: bool, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if unconditional && e.code == StatusCode::CONFLICT && tries < UNCONDITIONAL_RETRIES => tries += 1,
            other => return other,
        }
    }
}

async fn patch(
    st: ApiState,
    target: Target,
    headers: &HeaderMap,
    _q: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let patch = parse_body(body)?;
    let unconditional = patch.pointer("/metadata/resourceVersion").is_none_or(Value::is_null);
    if content_type.starts_with("application/apply-patch") {
        return retrying(unconditional, || apply(st.clone(), target.clone(), patch.clone())).await;
    }
    let content_type = content_type.split(';').next().unwrap_or("");
    let (obj, warnings) = retrying(unconditional, || patch_once(&st, &target, content_type, &patch)).await?;
    Ok(json_response(StatusCode::OK, &obj, &warnings))
}

/// Reads the object, patches it and stores the result.
async fn patch_once(
    st: &ApiState,
    target: &Target,
    content_type: &str,
    patch: &Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let old = fetch(st, target).await?;
    let mut new = old.clone();
    match content_type {
        "application/merge-patch+json" => objects::merge_patch(&mut new, patch),
        "application/strategic-merge-patch+json" => objects::patch::strategic_merge(&mut new, patch),
        "application/json-patch+json" => objects::patch::json_patch(&mut new, patch).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("the JSON patch could not be applied: {e}"))
        })?,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the patch type {other:?} is not supported; use application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json or application/apply-patch+yaml"),
            ))
        }
    }
    // A patch that names no resourceVersion is unconditional.
    if new.pointer("/metadata/resourceVersion") == old.pointer("/metadata/resourceVersion") {
        meta::metadata_mut(&mut new).remove("resourceVersion");
    }
    let (obj, warnings, _) = replace(st, target, &old, new, false).await?;
    Ok((obj, warnings))
}

/// Server-side apply: create, or three-way merge with the last applied manifest.
async fn apply(st: ApiState, target: Target, mut manifest: Value) -> Result<Response, ApiError> {
    place(target.rt, &target, &mut manifest)?;
    if let Some(name) = &target.name {
        if meta::name(&manifest) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&manifest)
            )));
        }
    }
    let mut recorded = manifest.clone();
    if let Some(m) = recorded.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(objects::LAST_APPLIED);
        }
    }
    let last_applied = serde_json::to_string(&recorded).expect("json");
    let mut with_annotation = manifest.clone();
    set_annotation(&mut with_annotation, objects::LAST_APPLIED, &last_applied);

    let name = meta::name(&manifest).to_string();
    let existing = st.store.get(&target.rt.key(), item_namespace(&target), &name).await?;
    let Some(old) = existing else {
        let (obj, warnings) = create_object(&st, &target, with_annotation).await?;
        return Ok(apply_response(StatusCode::CREATED, &obj, &warnings, "created"));
    };
    let last: Value = meta::string_map(&old, "annotations")
        .get(objects::LAST_APPLIED)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let mut merged = objects::apply_merge(&old, &last, &with_annotation);
    meta::metadata_mut(&mut merged).remove("resourceVersion");
    let (obj, warnings, changed) = replace(&st, &target, &old, merged, false).await?;
    let outcome = if changed { "configured" } else { "unchanged" };
    Ok(apply_response(StatusCode::OK, &obj, &warnings, outcome))
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let m = meta::metadata_mut(obj);
    if !m.get("annotations").is_some_and(Value::is_object) {
        m.insert("annotations".into(), json!({}));
    }
    m["annotations"][key] = json!(value);
}

fn apply_response(code: StatusCode, obj: &Value, warnings: &[String], outcome: &'static str) -> Response {
    let mut resp = json_response(code, obj, warnings);
    resp.headers_mut().insert("x-skerry-apply", HeaderValue::from_static(outcome));
    resp
}

/// Namespaces that exist from the start and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What a delete request asks for (query parameters or a `DeleteOptions` body).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Propagation,
}

/// What happens to the objects an object owns when it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The owner goes now; the garbage collector removes its dependents after.
    #[default]
    Background,
    /// The owner stays (terminating) until its dependents are gone.
    Foreground,
    /// The dependents stay, without their reference to the owner.
    Orphan,
}

fn delete_options(q: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let options = if body.is_empty() { Value::Null } else { parse_body(body)? };
    let grace = match q.int("gracePeriodSeconds")? {
        Some(g) => Some(g),
        None => options.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    let policy = q
        .get("propagationPolicy")
        .map(str::to_string)
        .or_else(|| options["propagationPolicy"].as_str().map(str::to_string));
    let orphan = q.get("orphanDependents").map(|v| v == "true").or(options["orphanDependents"].as_bool());
    let propagation = match (policy.as_deref(), orphan) {
        (Some("Foreground"), _) => Propagation::Foreground,
        (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
        (Some("Background") | None, _) => Propagation::Background,
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?} is not supported: use Background, Foreground or Orphan"
            )))
        }
    };
    Ok(DeleteOptions { grace, propagation })
}

async fn delete(st: ApiState, target: Target, q: &Query, body: &[u8]) -> Result<Response, ApiError> {
    let obj = fetch(&st, &target).await?;
    let options = delete_options(q, body)?;
    let deleted = delete_object(&st, target.rt, obj, options).await?;
    Ok(json_response(StatusCode::OK, &deleted, &[]))
}

/// Deletes one object: pods and namespaces gracefully (the agent or the namespace controller
/// finishes the job), owners by the requested propagation, everything else at once.
pub async fn delete_object(
    st: &ApiState,
    rt: &ResourceType,
    obj: Value,
    options: DeleteOptions,
) -> Result<Value, ApiError> {
    let grace = options.grace;
    let name = meta::name(&obj).to_string();
    let remove = || Command::delete_of(rt.key(), &obj);
    match rt.kind {
        "Pod" => {
            let grace = objects::pod::grace_period(&obj, grace);
            if grace == 0 || obj.pointer("/spec/nodeName").is_none() {
                return Ok(st.proposer.propose(remove()).await?.object);
            }
            let new = objects::pod::begin_deletion(&obj, grace, jiff::Timestamp::now());
            if new == obj {
                return Ok(obj);
            }
            Ok(st.proposer.propose(Command::Update { resource: rt.key(), object: new }).await?.object)
        }
        "Namespace" => {
            if SYSTEM_NAMESPACES.contains(&name.as_str()) {
                return Err(ApiError::forbidden(format!(
                    "namespaces {name:?} is forbidden: this namespace may not be deleted"
                )));
            }
            if meta::is_deleting(&obj) {
                return Ok(obj);
            }
            let mut new = obj.clone();
            meta::set(&mut new, "deletionTimestamp", meta::now());
            new["status"]["phase"] = json!("Terminating");
            Ok(st.proposer.propose(Command::Update { resource: rt.key(), object: new }).await?.object)
        }
        _ if meta::is_deleting(&obj) => Ok(obj),
        _ if options.propagation == Propagation::Foreground && crate::controllers::gc::tracks(rt) => {
            let new = crate::controllers::gc::mark_foreground(&obj);
            Ok(st.proposer.propose(Command::Update { resource: rt.key(), object: new }).await?.object)
        }
        _ if options.propagation == Propagation::Orphan && crate::controllers::gc::tracks(rt) => {
            // Marked first, so no controller adopts the dependents back before the owner goes.
            let new = crate::controllers::gc::mark_orphaning(&obj);
            Ok(st.proposer.propose(Command::Update { resource: rt.key(), object: new }).await?.object)
        }
        _ => Ok(st.proposer.propose(remove()).await?.object),
    }
}

async fn delete_collection(st: ApiState, target: Target, q: &Query, body: &[u8]) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let options = delete_options(q, body)?;
    let (objects, revision) = st.store.list(&target.rt.key(), target.namespace.as_deref()).await?;
    let mut items = Vec::new();
    for obj in objects.into_iter().filter(|o| filter.matches(o)) {
        match delete_object(&st, target.rt, obj, options).await {
            Ok(o) => items.push(o),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({"kind": format!("{}List", target.rt.kind), "apiVersion": target.rt.api_version(), "metadata": {"resourceVersion": revision.to_string()}, "items": items});
    Ok(json_response(StatusCode::OK, &list, &[]))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn unconditional_writes_retry_conflicts_and_conditional_ones_do_not() {
        let conflict = || ApiError::new(StatusCode::CONFLICT, "Conflict", "the object has been modified");
        let calls = Cell::new(0);
        let attempt = || async {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(conflict())
            } else {
                Ok(calls.get())
            }
        };
        assert_eq!(retrying(true, attempt).await.unwrap(), 3);
        calls.set(0);
        let e = retrying(false, attempt).await.unwrap_err();
        assert_eq!((e.code, calls.get()), (StatusCode::CONFLICT, 1));
        let always = || async { Err::<(), _>(conflict()) };
        assert!(retrying(true, always).await.is_err(), "gives up after a bounded number of tries");
    }
}
