//! Watch streams: newline-delimited `{"type", "object"}` events from a resourceVersion on.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::objects::meta;
use crate::store::{Event, EventType, StoreError};

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
    let render = move |kind_word: &str, obj: &Value| -> Bytes {
        let object = if as_table {
            table::render(kind, std::slice::from_ref(obj), meta::resource_version(obj).parse().unwrap_or(0))
        } else {
            obj.clone()
        };
        event_line(kind_word, &object)
    };
    let first: Vec<Bytes> = initial.iter().map(|o| render("ADDED", o)).collect();
    let live = match st.store.watch(from).await {
        // A revision older than the compaction point is a watch that ends at once with one
        // `410 Expired` ERROR event, as the API server's watch cache answers.
        Err(e @ StoreError::Gone { .. }) => futures::stream::iter([error_line(e)]).boxed(),
        Err(e) => return Err(e.into()),
        Ok(watcher) => {
            let changes = Box::pin(futures::stream::unfold(watcher, |mut w| async move { Some((w.next().await, w)) }));
            let wanted = move |event: &Event| {
                event.resource == key
                    && namespace.as_deref().is_none_or(|ns| ns == meta::namespace(&event.object))
                    && filter.matches(&event.object)
            };
            lines(changes, wanted, render).boxed()
        }
    };
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

/// One watch event as a line: `{"type": ..., "object": ...}` and a newline.
fn event_line(kind_word: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind_word, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

/// The `ERROR` event carrying `e` as a `Status`, as the API server ends a watch it cannot go on
/// with (`410 Expired` when the watcher fell behind the compaction point).
fn error_line(e: StoreError) -> Bytes {
    event_line("ERROR", &ApiError::from(e).to_status())
}

/// The watch body from a stream of store changes: the wanted ones rendered as events; after an
/// error, one `ERROR` event and the end of the stream (a client re-lists and watches again).
fn lines<S, W, R>(changes: S, wanted: W, render: R) -> impl futures::Stream<Item = Bytes> + Send
where
    S: futures::Stream<Item = Result<Arc<Event>, StoreError>> + Send + Unpin + 'static,
    W: Fn(&Event) -> bool + Send + 'static,
    R: Fn(&str, &Value) -> Bytes + Send + 'static,
{
    futures::stream::unfold(Some((changes, wanted, render)), |state| async move {
        let (mut changes, wanted, render) = state?;
        loop {
            match changes.next().await? {
                Err(e) => return Some((error_line(e), None)),
                Ok(event) if wanted(&event) => {
                    let word = match event.kind {
                        EventType::Added => "ADDED",
                        EventType::Modified => "MODIFIED",
                        EventType::Deleted => "DELETED",
                    };
                    let line = render(word, &event.object);
                    return Some((line, Some((changes, wanted, render))));
                }
                Ok(_) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::objects::resource;
    use crate::store::Command;

    fn event(revision: u64, resource: &str, name: &str) -> Result<Arc<Event>, StoreError> {
        let object =
            json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": revision.to_string()}});
        Ok(Arc::new(Event { revision, resource: resource.into(), kind: EventType::Added, object }))
    }

    fn expired(message: &str) -> Value {
        json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Expired", "details": {}, "code": 410
        }})
    }

    /// Each item is one newline-terminated JSON event.
    fn events(body: &[u8]) -> Vec<Value> {
        assert!(body.is_empty() || body.ends_with(b"\n"), "the last event ends with a newline: {body:?}");
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn an_error_is_one_event_line_and_ends_the_stream() {
        let changes = futures::stream::iter([
            event(5, "pods", "a"),
            event(6, "configmaps", "skipped"),
            Err(StoreError::Gone { requested: 6, oldest: 9 }),
            event(10, "pods", "never"),
        ])
        .chain(futures::stream::pending());
        let body = lines(Box::pin(changes), |e| e.resource == "pods", event_line);
        let out: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .expect("the stream ends after the error");
        assert!(out.iter().all(|l| l.ends_with(b"\n")), "{out:?}");
        let all = out.concat();
        let events = events(&all);
        assert_eq!(events.len(), 2, "{events:#?}");
        assert_eq!(
            (events[0]["type"].as_str(), events[0]["object"]["metadata"]["name"].as_str()),
            (Some("ADDED"), Some("a"))
        );
        assert_eq!(events[1], expired("too old resource version: 6 (9)"));
    }

    #[tokio::test]
    async fn a_watch_from_a_compacted_revision_is_one_410_event_then_the_end() {
        let (store, proposer) = crate::store::test_store().await;
        let key = resource::CONFIG_MAPS.key();
        let cm = |i: u32| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"i": i.to_string()}});
        proposer.propose(Command::Create { resource: key.clone(), object: cm(0) }).await.unwrap();
        // More revisions than the change log keeps (10 000), so that compaction cuts.
        for i in 1..=10_001 {
            proposer.propose(Command::Update { resource: key.clone(), object: cm(i) }).await.unwrap();
        }
        store.compact().await.unwrap();
        let last = store.revision().await.unwrap();
        let (_dir, socket) = super::super::node::tests::serve_store(store, proposer).await;

        let get = |path: String| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let req =
                    axum::http::Request::get(path.as_str()).header("host", "localhost").body(Body::empty()).unwrap();
                let resp = send.send_request(req).await.unwrap();
                let code = resp.status().as_u16();
                let body =
                    tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::collect(resp.into_body()))
                        .await
                        .expect("the watch ended by itself")
                        .unwrap()
                        .to_bytes();
                (code, body)
            }
        };
        let (code, body) = get("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1".into()).await;
        assert_eq!(code, 200, "{body:?}");
        let oldest = last - 10_000 + 1;
        assert_eq!(events(&body), [expired(&format!("too old resource version: 1 ({oldest})"))]);

        // A kept revision still replays (and ends at timeoutSeconds).
        let (code, body) = get(format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={}&timeoutSeconds=1",
            last - 1
        ))
        .await;
        assert_eq!(code, 200);
        let replay = events(&body);
        assert_eq!(replay.len(), 1, "{replay:#?}");
        assert_eq!(
            (replay[0]["type"].as_str(), replay[0]["object"]["data"]["i"].as_str()),
            (Some("MODIFIED"), Some("10001"))
        );
    }
}
