//! The Eviction subresource (`POST /api/v1/namespaces/{ns}/pods/{name}/eviction`, a
//! `policy/v1 Eviction`): a graceful delete of the pod, after marking it with the
//! `DisruptionTarget` condition as the API server does.
//!
//! There are no PodDisruptionBudgets yet, so an eviction is never refused for a budget (no
//! `429 TooManyRequests`): every eviction of an existing pod is allowed.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::objects::{meta, resource};
use crate::store::{Command, Rejection, StoreError};

use super::crud::{delete_object, fetch, json_response, parse_body, DeleteOptions, Propagation};
use super::error::ApiError;
use super::path::Target;
use super::ApiState;

/// The API versions an Eviction may be sent as.
const VERSIONS: &[&str] = &["policy/v1", "policy/v1beta1"];

/// What an Eviction asks for, read from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub grace: Option<i64>,
    /// `deleteOptions.preconditions.uid`: evict only this incarnation of the pod.
    pub uid: Option<String>,
    /// `deleteOptions.preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// Reads an Eviction for the pod `name`; the errors are the API server's.
pub fn parse(eviction: &Value, name: &str) -> Result<Request, ApiError> {
    let api_version = eviction["apiVersion"].as_str().unwrap_or("");
    let kind = eviction["kind"].as_str().unwrap_or("");
    if kind != "Eviction" || !VERSIONS.contains(&api_version) {
        return Err(ApiError::bad_request(format!(
            "the object is apiVersion {api_version:?} kind {kind:?}, but this endpoint takes policy/v1 Eviction"
        )));
    }
    if meta::name(eviction) != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let options = &eviction["deleteOptions"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    Ok(Request {
        grace: options["gracePeriodSeconds"].as_i64(),
        uid: text(&options["preconditions"]["uid"]),
        resource_version: text(&options["preconditions"]["resourceVersion"]),
    })
}

/// The pod's status with `DisruptionTarget` set (kept as it is when already there).
fn with_disruption_target(pod: &Value, now: &str) -> Option<Value> {
    let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    if conditions.iter().any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True") {
        return None;
    }
    conditions.retain(|c| c["type"] != "DisruptionTarget");
    conditions.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting", "lastProbeTime": null, "lastTransitionTime": now}));
    status["conditions"] = json!(conditions);
    Some(status)
}

fn precondition_failed(what: &str, asked: &str, stored: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!("Precondition failed: {what} in precondition: {asked}, {what} in object meta: {stored}"),
    )
}

/// How often the condition write is retried when the pod changed between the read and the write.
const RETRIES: usize = 5;

pub async fn evict(st: ApiState, target: Target, body: &[u8]) -> Result<Response, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let asked = parse(&parse_body(body)?, &name)?;
    let mut tries = 0;
    let pod = loop {
        let pod = fetch(&st, &target).await?;
        if let Some(uid) = asked.uid.as_deref().filter(|u| *u != meta::uid(&pod)) {
            return Err(precondition_failed("UID", uid, meta::uid(&pod)));
        }
        if let Some(rv) = asked.resource_version.as_deref().filter(|rv| *rv != meta::resource_version(&pod)) {
            return Err(precondition_failed("ResourceVersion", rv, meta::resource_version(&pod)));
        }
        let Some(status) = with_disruption_target(&pod, &meta::now()) else { break pod };
        let command = Command::UpdateStatus {
            resource: resource::PODS.key(),
            namespace: meta::namespace(&pod).to_string(),
            name: name.clone(),
            uid: Some(meta::uid(&pod).to_string()),
            resource_version: Some(meta::resource_version(&pod).to_string()),
            status,
        };
        match st.proposer.propose(command).await {
            Ok(applied) => break applied.object,
            Err(StoreError::Rejected(Rejection::Conflict { .. })) if tries < RETRIES => tries += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let options = DeleteOptions { grace: asked.grace, propagation: Propagation::Background };
    delete_object(&st, &resource::PODS, pod, options).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &status, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_read_like_the_api_server() {
        let e = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 5, "preconditions": {"uid": "u1"}}});
        assert_eq!(
            parse(&e, "web").unwrap(),
            Request { grace: Some(5), uid: Some("u1".into()), resource_version: None }
        );
        let e = parse(&e, "other").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "name in URL does not match name in Eviction object")
        );
        let bare = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "web"}});
        assert_eq!(parse(&bare, "web").unwrap(), Request { grace: None, uid: None, resource_version: None });
        let e = parse(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}}), "web").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_pod_is_marked_as_a_disruption_target_once() {
        let pod = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let status = with_disruption_target(&pod, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["conditions"][1]["type"], "DisruptionTarget");
        assert_eq!(status["conditions"][1]["reason"], "EvictionByEvictionAPI");
        let marked = json!({"status": status});
        assert_eq!(with_disruption_target(&marked, "later"), None);
    }
}
