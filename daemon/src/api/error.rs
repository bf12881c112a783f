//! API errors as Kubernetes `Status` objects with the right HTTP code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::node_ops::NodeError;
use crate::objects::ObjectError;
use crate::store::{Rejection, StoreError};

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: json!({}) }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    pub fn not_found(resource: &str, name: &str) -> ApiError {
        let mut e = ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("{resource} {name:?} not found"));
        e.details = json!({"name": name, "kind": resource});
        e
    }
    pub fn path_not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
    pub fn method_not_allowed(method: &str, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow {method} on {what}"),
        )
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
    }

    pub fn to_status(&self) -> serde_json::Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code.as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.to_status())).into_response()
    }
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> ApiError {
        match &e {
            ObjectError::Invalid { kind, group, name, causes } => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("{} {name:?} is invalid: {}", crate::objects::group_kind(kind, group), causes_line(causes)),
                );
                err.details = json!({"name": name, "kind": kind, "causes": causes.iter().map(|c| json!({"field": c.field, "message": c.message, "reason": "FieldValueInvalid"})).collect::<Vec<_>>()});
                if !group.is_empty() {
                    err.details["group"] = json!(group);
                }
                err
            }
            ObjectError::BadRequest(m) => ApiError::bad_request(m.clone()),
        }
    }
}

fn causes_line(causes: &[crate::objects::Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        match &r {
            Rejection::AlreadyExists { resource, name } => {
                let mut err = ApiError::new(StatusCode::CONFLICT, "AlreadyExists", r.to_string());
                err.details = json!({"name": name, "kind": resource});
                err
            }
            Rejection::NotFound { resource, name } => ApiError::not_found(resource, name),
            Rejection::Conflict { resource, name } => ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {resource} {name:?}: {r}"),
            ),
            Rejection::AlreadyBound { name, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding {name:?}: {r}"),
            ),
            Rejection::Forbidden { message } => ApiError::forbidden(message.clone()),
            Rejection::Invalid { kind, name, field, reason, .. } => {
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", r.to_string());
                err.details = json!({"name": name, "kind": kind, "causes": [{"field": field, "message": reason, "reason": "FieldValueInvalid"}]});
                err
            }
            Rejection::Replayed { .. } => ApiError::internal(r.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::Rejected(r) => r.clone().into(),
            StoreError::Gone { .. } => ApiError::new(StatusCode::GONE, "Expired", e.to_string()),
            _ if e.is_disk_full() => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                "the node's disk is full: nothing was written; free space under the data dir and retry",
            ),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// A node operation's failure, with the codes and messages the API has always answered with.
impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        let message = e.to_string();
        match e {
            NodeError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "NotFound", message),
            NodeError::BadRequest(_) => ApiError::bad_request(message),
            NodeError::Unavailable(_) => ApiError::unavailable(message),
            NodeError::InsufficientStorage(_) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", message)
            }
            NodeError::Internal(_) => ApiError::internal(message),
        }
    }
}
