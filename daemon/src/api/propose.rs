//! `POST /skerry/v1/propose`: the node write endpoint. The body is one [`Command`] as JSON; the
//! command is authorized for the caller as the Kubernetes request it amounts to, proposed through
//! the node's proposer, and answered `200` with its [`Answer`] — a [`crate::store::Rejection`] is
//! the command's replicated outcome, so it travels inside a `200`, not as an HTTP error.
//!
//! This is how agents, which keep only a local mirror, write pod status, events and their Node
//! through a server. A denial is the API server's `403` Status; a fault (I/O, a stopped store)
//! is the usual error mapping. Commands are not validated or defaulted here: they are the
//! writer's finished objects, as every [`crate::store::Proposer`] caller hands them over.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::cluster::authz::{self, Decision, Principal, Verb};
use crate::objects::meta;
use crate::store::{Answer, Command, StoreError};

use super::access::{decide, forbidden, Attributes};
use super::crud::json_response;
use super::error::ApiError;
use super::ApiState;

/// The largest command accepted (an object with its status; as large as a create's body).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

pub async fn propose(State(st): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    // The router's authorization step let nothing without a principal through.
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::forbidden("forbidden: the request carries no identity"))?;
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let command: Command = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body is not a store command ({e}); send one Command as JSON"))
    })?;
    if command.is_mirror() {
        return Err(ApiError::bad_request(
            "mirror commands are an agent's own bookkeeping of its local store and are never proposed to the cluster",
        ));
    }
    let attributes = attributes(&command);
    if let Decision::Deny(reason) = decide(&st, &principal, &attributes).await? {
        return Err(forbidden(&principal, &Attributes::of_key(&attributes), &reason));
    }
    // What a kubelet may not do to its own Node even where it may write it (NodeRestriction).
    if let Command::Create { resource, object } | Command::Update { resource, object } = &command {
        if resource == "nodes" {
            let old = match &command {
                Command::Update { .. } => st.store.get(resource, "", meta::name(object)).await?,
                _ => None,
            };
            authz::node_restriction(&principal, old.as_ref(), object).map_err(|reason| {
                let mut e = ApiError::forbidden(reason);
                e.details = serde_json::json!({"name": meta::name(object), "kind": "nodes"});
                e
            })?;
        }
    }
    let answer: Answer = match st.proposer.propose(command).await {
        Ok(applied) => Ok(applied),
        Err(StoreError::Rejected(rejection)) => Err(rejection),
        Err(fault) => return Err(fault.into()),
    };
    let body = serde_json::to_value(&answer).map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))?;
    Ok(json_response(StatusCode::OK, &body, &[]))
}

/// The Kubernetes request a command amounts to: a create, an update, an update of `status`, a
/// delete — and a bind is a create of `pods/binding`, which only the scheduler's servers may do.
pub fn attributes(command: &Command) -> authz::Request<'_> {
    match command {
        Command::Create { resource, object } => object_request(Verb::Create, resource, object),
        Command::Update { resource, object } => object_request(Verb::Update, resource, object),
        Command::UpdateStatus { resource, namespace, name, .. } => authz::Request {
            verb: Verb::Update,
            resource,
            subresource: Some("status"),
            namespace: some(namespace),
            name: some(name),
        },
        Command::Delete { resource, namespace, name, .. } => authz::Request {
            verb: Verb::Delete,
            resource,
            subresource: None,
            namespace: some(namespace),
            name: some(name),
        },
        Command::Bind { namespace, name, .. } => authz::Request {
            verb: Verb::Create,
            resource: "pods",
            subresource: Some("binding"),
            namespace: some(namespace),
            name: some(name),
        },
        // Refused before authorization; as a request, a write nobody may make.
        Command::Mirror { resource, .. } | Command::Unmirror { resource, .. } | Command::MirrorSet { resource, .. } => {
            authz::Request { verb: Verb::Update, resource, subresource: Some("mirror"), namespace: None, name: None }
        }
    }
}

fn object_request<'a>(verb: Verb, resource: &'a str, object: &'a Value) -> authz::Request<'a> {
    authz::Request {
        verb,
        resource,
        subresource: None,
        namespace: some(meta::namespace(object)),
        name: some(meta::name(object)),
    }
}

/// `None` for an empty string: a cluster-scoped object has no namespace.
fn some(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}
