//! Records `Event` objects about other objects, folding repeats into a count as kubelet does.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::objects::{meta, resource};
use crate::store::{Command, Proposer, Store};
use tokio::sync::{mpsc, oneshot};

/// `Normal` or `Warning`, as Kubernetes types events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// How many distinct events a recorder remembers for folding repeats.
const SEEN_LIMIT: usize = 4096;

/// Records events for one component (`kubelet`, `default-scheduler`, ...). Recording only
/// queues the event: one background task per recorder writes them in order, so the work an
/// event describes never waits for the event's durable write.
pub struct Recorder {
    queue: mpsc::UnboundedSender<Job>,
}

enum Job {
    Record { object: Value, kind: EventType, reason: String, message: String, at: String },
    Flush(oneshot::Sender<()>),
}

/// The background writer behind a [`Recorder`].
struct Writer {
    store: Store,
    proposer: Proposer,
    component: &'static str,
    host: String,
    /// (object uid, reason, message) → event name, for folding repeats.
    seen: HashMap<(String, String, String), String>,
}

impl Recorder {
    /// Starts the recorder's writer task (call from within the runtime).
    pub fn new(store: Store, proposer: Proposer, component: &'static str, host: String) -> Recorder {
        let (queue, mut jobs) = mpsc::unbounded_channel();
        let mut writer = Writer { store, proposer, component, host, seen: HashMap::new() };
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                match job {
                    Job::Record { object, kind, reason, message, at } => {
                        if let Err(e) = writer.write(&object, kind, &reason, &message, &at).await {
                            tracing::warn!(error = %e, reason, "could not record event");
                        }
                    }
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Recorder { queue }
    }

    /// Records an event about `object` (queued; written in order). Failures are logged, never
    /// returned: an event is never worth failing the work it describes.
    pub async fn record(&self, object: &Value, kind: EventType, reason: &str, message: &str) {
        let involved = json!({
            "kind": object["kind"], "apiVersion": object["apiVersion"],
            "metadata": {"name": meta::name(object), "namespace": meta::namespace(object), "uid": meta::uid(object)},
        });
        let job =
            Job::Record { object: involved, kind, reason: reason.into(), message: message.into(), at: meta::now() };
        let _ = self.queue.send(job);
    }

    /// Waits until every event recorded so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Writer {
    async fn write(
        &mut self,
        object: &Value,
        kind: EventType,
        reason: &str,
        message: &str,
        now: &str,
    ) -> Result<(), crate::store::StoreError> {
        let namespace = match meta::namespace(object) {
            "" => "default",
            ns => ns,
        };
        let key = (meta::uid(object).to_string(), reason.to_string(), message.to_string());
        if let Some(name) = self.seen.get(&key).cloned() {
            if let Some(mut ev) = self.store.get(&resource::EVENTS.key(), namespace, &name).await? {
                let count = ev["count"].as_i64().unwrap_or(1) + 1;
                ev["count"] = json!(count);
                ev["lastTimestamp"] = json!(now);
                self.proposer.propose(Command::Update { resource: resource::EVENTS.key(), object: ev }).await?;
                return Ok(());
            }
        }
        let name = format!("{}.{}", meta::name(object), &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now},
            "involvedObject": {
                "kind": object["kind"], "namespace": meta::namespace(object), "name": meta::name(object),
                "uid": meta::uid(object), "apiVersion": object["apiVersion"],
            },
            "reason": reason,
            "message": message,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        });
        self.proposer.propose(Command::Create { resource: resource::EVENTS.key(), object: event }).await?;
        // Bounded: forgetting only means the next repeat starts a new event.
        if self.seen.len() >= SEEN_LIMIT {
            self.seen.clear();
        }
        self.seen.insert(key, name);
        Ok(())
    }
}

/// How long events are kept, as the Kubernetes API server's default `--event-ttl`.
pub const TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes events whose last occurrence is older than `ttl`.
pub async fn expire(
    store: &Store,
    proposer: &Proposer,
    ttl: std::time::Duration,
) -> Result<usize, crate::store::StoreError> {
    let (events, _) = store.list(&resource::EVENTS.key(), None).await?;
    let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ttl).unwrap_or_default();
    let mut removed = 0;
    for ev in events {
        let last = meta::parse_time(ev.get("lastTimestamp"))
            .or_else(|| meta::parse_time(ev.pointer("/metadata/creationTimestamp")));
        if last.is_some_and(|t| t < cutoff) {
            let cmd = Command::delete_of(resource::EVENTS.key(), &ev);
            if proposer.propose(cmd).await.is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn repeats_fold_and_old_events_expire() {
        let (store, proposer) = crate::store::test_store().await;
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u"}});
        let rec = Recorder::new(store.clone(), proposer.clone(), "kubelet", "n".into());
        rec.record(&pod, EventType::Warning, "BackOff", "again").await;
        rec.record(&pod, EventType::Warning, "BackOff", "again").await;
        rec.record(&pod, EventType::Normal, "Started", "once").await;
        rec.flush().await;
        let (events, _) = store.list("events", Some("default")).await.unwrap();
        assert_eq!(events.len(), 2);
        let backoff = events.iter().find(|e| e["reason"] == "BackOff").unwrap();
        assert_eq!(backoff["count"], 2);
        assert_eq!(backoff["involvedObject"]["uid"], "u");
        assert_eq!(expire(&store, &proposer, TTL).await.unwrap(), 0);
        let mut old = events[0].clone();
        old["lastTimestamp"] = json!("2020-01-01T00:00:00Z");
        proposer.propose(Command::Update { resource: "events".into(), object: old }).await.unwrap();
        assert_eq!(expire(&store, &proposer, TTL).await.unwrap(), 1);
    }
}
