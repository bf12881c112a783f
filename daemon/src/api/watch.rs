//! Watch streams: newline-delimited `{"type", "object"}` events from a resourceVersion on.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::objects::meta;
use crate::store::EventType;

use super::crud::{Filter, Query};
use super::error::ApiError;
use super::path::Target;
use super::{table, ApiState};

pub async fn watch(st: ApiState, target: Target, q: Query, as_table: bool) -> Result<Response, ApiError> {
    let filter = Filter::from_query(&q)?;
    let from = q.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0");
    let key = target.rt.key();
    let kind = target.rt.kind;
    let namespace = target.namespace.clone();
    // Without a resourceVersion, Kubernetes starts with the current objects as ADDED events.
    let (initial, from) = match from {
        Some(v) => {
            let rv = v
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("resourceVersion {v:?} is not a number")))?;
            (Vec::new(), rv)
        }
        None => {
            let (objects, rv) = st.store.list(&key, namespace.as_deref()).await?;
            (objects.into_iter().filter(|o| filter.matches(o)).collect(), rv)
        }
    };
    let watcher = st.store.watch(from).await?;
    let render = move |kind_word: &str, obj: &Value| -> Bytes {
        let object = if as_table {
            table::render(kind, std::slice::from_ref(obj), meta::resource_version(obj).parse().unwrap_or(0))
        } else {
            obj.clone()
        };
        let mut line = serde_json::to_vec(&json!({"type": kind_word, "object": object})).expect("json");
        line.push(b'\n');
        Bytes::from(line)
    };
    let first: Vec<Bytes> = initial.iter().map(|o| render("ADDED", o)).collect();
    let live = futures::stream::unfold((watcher, filter, render), move |(mut w, filter, render)| {
        let key = key.clone();
        let namespace = namespace.clone();
        async move {
            loop {
                let event = match w.next().await {
                    Ok(e) => e,
                    Err(e) => {
                        let status = ApiError::from(e).to_status();
                        let line = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).ok()?;
                        return Some((Bytes::from(line), (w, filter, render)));
                    }
                };
                if event.resource != key {
                    continue;
                }
                if namespace.as_deref().is_some_and(|ns| ns != meta::namespace(&event.object)) {
                    continue;
                }
                if !filter.matches(&event.object) {
                    continue;
                }
                let word = match event.kind {
                    EventType::Added => "ADDED",
                    EventType::Modified => "MODIFIED",
                    EventType::Deleted => "DELETED",
                };
                let bytes = render(word, &event.object);
                return Some((bytes, (w, filter, render)));
            }
        }
    });
    let shutdown = st.shutdown.clone();
    let timeout = q.int("timeoutSeconds")?.filter(|t| *t > 0);
    let stop = async move {
        match timeout {
            Some(t) => {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(t as u64)) => {}
                }
            }
            None => shutdown.cancelled().await,
        }
    };
    let stream = futures::stream::iter(first).chain(live).take_until(Box::pin(stop)).map(Ok::<_, Infallible>);
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
}
