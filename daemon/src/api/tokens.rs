//! Join tokens as an API resource (`jointokens.skerry.io/v1`, cluster-scoped, named by the token
//! id). A create makes the token on the server — the caller sends only what it allows (`spec.role`,
//! `spec.ttl` as a duration such as `24h`, `spec.uses`, `spec.description`) — stores only the
//! secret's hash, and answers the whole token once, in `status.token` of the reply (never
//! stored). Tokens cannot be changed (delete and create another); get, list, watch and delete are
//! the generic ones. Only servers make tokens: they hold the CA whose hash the token carries.

use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::crud::{json_response, parse_body};
use super::{ApiError, ApiState};
use crate::cluster::identity::Role;
use crate::cluster::{join, token};
use crate::objects::resource::JOIN_TOKENS;
use crate::store::Command;

/// `POST /apis/skerry.io/v1/jointokens`.
pub async fn create(st: &ApiState, body: &[u8]) -> Result<Response, ApiError> {
    let Some(ca_hash) = st.info.ca_hash.as_deref() else {
        return Err(ApiError::forbidden(
            "join tokens are made on servers (they hold the cluster CA); run this on a server",
        ));
    };
    let spec = spec(&parse_body(body)?)?;
    let (token, stored) =
        token::create(ca_hash, &spec, Timestamp::now()).map_err(|e| invalid("spec", &e.to_string()))?;
    let object = join::token_object(&stored);
    let applied =
        st.proposer.propose(Command::Create { resource: JOIN_TOKENS.key(), object }).await.map_err(ApiError::from)?;
    let mut reply = applied.object;
    reply["status"] = json!({"token": token.reveal()});
    tracing::info!(id = stored.id, role = %stored.role, "made a join token");
    Ok(json_response(StatusCode::CREATED, &reply, &[]))
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("JoinToken.skerry.io is invalid: {field}: {message}"),
    )
}

/// What a create asks for, checked.
fn spec(body: &Value) -> Result<token::TokenSpec, ApiError> {
    if body["kind"].as_str().is_some_and(|k| k != JOIN_TOKENS.kind) {
        return Err(ApiError::bad_request(format!("the body must be a JoinToken, not a {}", body["kind"])));
    }
    let spec = &body["spec"];
    let role = match spec["role"].as_str() {
        None => Role::Agent,
        Some(r) => r.parse::<Role>().map_err(|_| {
            invalid("spec.role", &format!("Unsupported value: {r:?}: supported values: \"agent\", \"server\""))
        })?,
    };
    let ttl = match spec["ttl"].as_str().filter(|t| !t.is_empty() && *t != "0") {
        None => None,
        Some(t) => Some(crate::clock::parse_duration(t).ok_or_else(|| {
            invalid(
                "spec.ttl",
                &format!("Invalid value: {t:?}: a duration such as 30m, 24h or 1h30m (0: never expires)"),
            )
        })?),
    };
    let uses = match &spec["uses"] {
        Value::Null => None,
        v => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(0) | None => {
                return Err(invalid("spec.uses", &format!("Invalid value: {v}: must be a whole number of at least 1")))
            }
            Some(n) => Some(n),
        },
    };
    let description = spec["description"].as_str().unwrap_or("").to_string();
    Ok(token::TokenSpec { role, ttl, uses, description })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_checked_with_the_field_named() {
        let ok = spec(&json!({"spec": {"role": "server", "ttl": "2h", "uses": 1}})).unwrap();
        assert_eq!((ok.role, ok.uses), (Role::Server, Some(1)));
        assert_eq!(spec(&json!({})).unwrap().role, Role::Agent);
        let e = spec(&json!({"spec": {"role": "admin"}})).unwrap_err();
        assert!(e.message.contains("spec.role: Unsupported value: \"admin\""), "{}", e.message);
        let e = spec(&json!({"spec": {"uses": 0}})).unwrap_err();
        assert!(e.message.contains("spec.uses"), "{}", e.message);
        let e = spec(&json!({"spec": {"ttl": "soon"}})).unwrap_err();
        assert!(e.message.contains("spec.ttl"), "{}", e.message);
    }
}
