//! An agent's mirror: what the node may and must know of the cluster, copied from a server into
//! the agent's own store by list+watch, so the agent, the service proxy and DNS read and watch
//! only the local store — also across a restart while the servers are away.
//!
//! Streams ([`streams`]): the node's pods (`fieldSelector=spec.nodeName=<node>`), Services,
//! Endpoints, Namespaces and Nodes. Each is listed, then watched from the list's
//! `resourceVersion`; every event is applied with [`Command::Mirror`]/[`Command::Unmirror`],
//! which record the stream's position (the event's server `resourceVersion`) in the same
//! transaction, so a crash or a lost connection resumes exactly after the last applied event —
//! nothing skipped, nothing doubled. A `410 Expired` (or any `ERROR` event) relists and
//! replaces the stream's objects ([`Command::MirrorSet`]), which removes what vanished meanwhile.
//!
//! Secrets, ConfigMaps, PersistentVolumeClaims and PersistentVolumes are what the mirrored pods
//! use ([`PodGraph`], the Node authorizer's own rules): each is fetched by name (a `get`, which
//! the Node authorizer allows for all four kinds) whenever the node's pods change and again
//! every [`Options::resync`], and the four sets replace the mirrored ones, so an object no pod
//! uses any more is removed. Not watched by name: one held-open watch per Secret costs a
//! connection each and PVCs and PVs may not be watched by a node at all; the price is that a
//! change to a used Secret or ConfigMap reaches the node within one resync (as kubelet's
//! `Cache` strategy), not at once.
//!
//! Never writes to a server (the agent's writes go through [`http::RemoteProposer`]) and never
//! proposes anything but the mirror's commands to the local store.

pub mod http;

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::authz::{Kind, PodGraph};
use crate::objects::meta;
use crate::objects::resource::{self, ResourceType};
use crate::store::{BoxFuture, Command, MirrorPosition, Proposer, Store, StoreError};

/// One list+watch of a server's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The name its position is kept under in the local store.
    pub id: &'static str,
    pub resource: ResourceType,
    /// A field selector as the API takes it (`spec.nodeName=edge-1`).
    pub field_selector: Option<String>,
}

/// The streams an agent named `node` follows.
pub fn streams(node: &str) -> Vec<Stream> {
    let all = |id, resource| Stream { id, resource, field_selector: None };
    vec![
        Stream { id: "pods", resource: resource::PODS, field_selector: Some(format!("spec.nodeName={node}")) },
        all("services", resource::SERVICES),
        all("endpoints", resource::ENDPOINTS),
        all("namespaces", resource::NAMESPACES),
        all("nodes", resource::NODES),
    ]
}

/// Whether every stream has been synced at least once (a list, or a position from before).
pub async fn synced(store: &Store, node: &str) -> Result<bool, StoreError> {
    for stream in streams(node) {
        if store.mirror_position(stream.id).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A list's items and the `resourceVersion` to watch from.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub items: Vec<Value>,
    pub resource_version: u64,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    /// The server ends the watch with this `Status` (`410 Expired` when the position is older
    /// than its history).
    Error(Value),
}

/// A watch: events until the server ends it (`None`) or it fails.
pub type Events = BoxStream<'static, Result<WatchEvent, SourceError>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The position asked for is older than the server's history: list again.
    #[error("the server no longer has the changes asked for: {0}")]
    Expired(String),
    /// No server could be reached, or each answered with a server error.
    #[error("no server answered: {0}")]
    Unreachable(String),
    /// A server refused the request (403, 404, …).
    #[error("the server answered {code}: {message}")]
    Refused { code: u16, message: String },
    /// An answer that is not what the Kubernetes API serves.
    #[error("the server's answer is not a Kubernetes API answer: {0}")]
    Malformed(String),
}

/// Where the mirror reads from: the servers' Kubernetes API ([`http::HttpSource`]), a fake in
/// tests.
pub trait Source: Send + Sync + 'static {
    /// Lists the stream's objects.
    fn list<'a>(&'a self, stream: &'a Stream) -> BoxFuture<'a, Result<Listed, SourceError>>;
    /// Watches the stream's changes after `from`.
    fn watch<'a>(&'a self, stream: &'a Stream, from: u64) -> BoxFuture<'a, Result<Events, SourceError>>;
    /// Gets one object; `None` when it does not exist.
    fn get<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, SourceError>>;
}

/// Timing of the mirror.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first and the longest wait after a failure (doubling in between).
    pub backoff: (Duration, Duration),
    /// How often the used Secrets, ConfigMaps, PVCs and PVs are fetched again without a change
    /// of pods.
    pub resync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { backoff: (Duration::from_millis(200), Duration::from_secs(30)), resync: Duration::from_secs(60) }
    }
}

/// Mirrors what `node_name` needs from `source` into `store` until `cancel`, with the default
/// [`Options`]. The daemon of an agent runs this; the agent, proxy and DNS keep reading `store`.
pub async fn run(store: Store, source: std::sync::Arc<dyn Source>, node_name: String, cancel: CancellationToken) {
    run_with(store, source, node_name, Options::default(), cancel).await
}

/// [`run`] with chosen timing.
pub async fn run_with(
    store: Store,
    source: std::sync::Arc<dyn Source>,
    node_name: String,
    options: Options,
    cancel: CancellationToken,
) {
    let ctx = std::sync::Arc::new(Ctx { proposer: Proposer::local(&store), store, source, node: node_name, options });
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams(&ctx.node) {
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        tasks.spawn(async move { follow(&ctx, &stream, &cancel).await });
    }
    {
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        tasks.spawn(async move { follow_used(&ctx, &cancel).await });
    }
    while tasks.join_next().await.is_some() {}
}

struct Ctx {
    store: Store,
    /// The local store's own proposer: the mirror's commands never leave the node.
    proposer: Proposer,
    source: std::sync::Arc<dyn Source>,
    node: String,
    options: Options,
}

/// Doubling waits between failures.
struct Backoff {
    bounds: (Duration, Duration),
    next: Duration,
}

impl Backoff {
    fn new(bounds: (Duration, Duration)) -> Backoff {
        Backoff { bounds, next: bounds.0 }
    }
    fn reset(&mut self) {
        self.next = self.bounds.0;
    }
    /// The next wait: between half and all of the current step, at random, so that many
    /// agents cut off by one server's restart do not all come back in the same instant.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.bounds.1);
        let share = (uuid::Uuid::new_v4().as_u128() % 1024) as u32;
        step / 2 + step / 2 * share / 1024
    }
}

/// How one pass over a stream ended.
#[derive(Debug)]
enum End {
    /// The server ended the watch (its timeout, a restart): watch again from the position.
    Closed,
    /// The position is older than the server's history, or the server ended the watch with an
    /// error: list again (at once after a `410`, after a back-off otherwise).
    Relist { why: String, at_once: bool },
    /// A failure (the network, the local store): after a back-off, go on from the stored
    /// position.
    Failed(String),
}

/// Follows one stream until `cancel`.
async fn follow(ctx: &Ctx, stream: &Stream, cancel: &CancellationToken) {
    let mut backoff = Backoff::new(ctx.options.backoff);
    let mut relist = false;
    loop {
        let started = Instant::now();
        let end = tokio::select! {
            _ = cancel.cancelled() => return,
            end = pass(ctx, stream, relist, &mut backoff) => end,
        };
        let wait = match end {
            End::Closed => {
                relist = false;
                // A watch that lasted is the server's timeout: go on at once. One that ends at
                // once, over and over, is a server in trouble: back off.
                if started.elapsed() >= Duration::from_secs(1) {
                    backoff.reset();
                    None
                } else {
                    Some(backoff.next())
                }
            }
            End::Relist { why, at_once } => {
                tracing::info!(stream = stream.id, reason = why, "mirror: listing again");
                // At once after a 410, but a server that expires even a fresh list's position
                // gets a back-off, not a spin.
                let again = std::mem::replace(&mut relist, true);
                (!at_once || again).then(|| backoff.next())
            }
            End::Failed(why) => {
                let wait = backoff.next();
                tracing::warn!(stream = stream.id, error = why, retry_in = ?wait, "mirror: the stream failed");
                Some(wait)
            }
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One pass: list when there is no position (or `relist`), then watch from the position and
/// apply each event with its position, until the watch ends.
async fn pass(ctx: &Ctx, stream: &Stream, relist: bool, backoff: &mut Backoff) -> End {
    let key = stream.resource.key();
    let at = |resource_version| Some(MirrorPosition { stream: stream.id.to_string(), resource_version });
    let position = match ctx.store.mirror_position(stream.id).await {
        Ok(p) => p.filter(|_| !relist),
        Err(e) => return End::Failed(format!("reading the mirror's position: {e}")),
    };
    let from = match position {
        Some(p) => p,
        None => {
            let listed = match ctx.source.list(stream).await {
                Ok(l) => l,
                Err(e) => return End::Failed(format!("listing {key}: {e}")),
            };
            let set = Command::MirrorSet {
                resource: key.clone(),
                objects: listed.items,
                position: at(listed.resource_version),
            };
            if let Err(e) = ctx.proposer.propose(set).await {
                return End::Failed(format!("storing the list of {key}: {e}"));
            }
            backoff.reset();
            listed.resource_version
        }
    };
    let mut events = match ctx.source.watch(stream, from).await {
        Ok(events) => events,
        Err(SourceError::Expired(why)) => return End::Relist { why, at_once: true },
        Err(e) => return End::Failed(format!("watching {key}: {e}")),
    };
    while let Some(event) = events.next().await {
        let (object, deleted) = match event {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (o, false),
            Ok(WatchEvent::Deleted(o)) => (o, true),
            Ok(WatchEvent::Error(status)) => {
                let code = status["code"].as_u64().unwrap_or(0);
                let why = format!("{code}: {}", status["message"].as_str().unwrap_or("the watch ended with an error"));
                return End::Relist { why, at_once: code == 410 };
            }
            Err(SourceError::Expired(why)) => return End::Relist { why, at_once: true },
            Err(e) => return End::Failed(format!("watching {key}: {e}")),
        };
        let Ok(resource_version) = meta::resource_version(&object).parse::<u64>() else {
            return End::Relist {
                why: format!("a {key} event without a resourceVersion: {}", meta::name(&object)),
                at_once: false,
            };
        };
        let command = if deleted {
            Command::Unmirror {
                resource: key.clone(),
                namespace: meta::namespace(&object).to_string(),
                name: meta::name(&object).to_string(),
                position: at(resource_version),
            }
        } else {
            Command::Mirror { resource: key.clone(), object, position: at(resource_version) }
        };
        if let Err(e) = ctx.proposer.propose(command).await {
            return End::Failed(format!("storing a change of {key}: {e}"));
        }
        backoff.reset();
    }
    End::Closed
}

/// Keeps the used Secrets, ConfigMaps, PVCs and PVs in step with the mirrored pods: a round
/// after each change of pods and every [`Options::resync`]; after a failed round, again after a
/// back-off.
async fn follow_used(ctx: &Ctx, cancel: &CancellationToken) {
    let pods = resource::PODS.key();
    let mut backoff = Backoff::new(ctx.options.backoff);
    let mut watcher = None;
    let mut next_round = Instant::now();
    loop {
        if watcher.is_none() {
            match ctx.store.revision().await {
                Ok(revision) => watcher = ctx.store.watch(revision).await.ok(),
                Err(e) => tracing::warn!(error = %e, "mirror: cannot read the local store's revision"),
            }
        }
        let pods_changed = async {
            match watcher.as_mut() {
                Some(w) => match w.next().await {
                    Ok(event) => event.resource == pods,
                    Err(_) => {
                        // Fell behind: watch again from now, and do a round to be sure.
                        watcher = None;
                        true
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next_round) => {}
            changed = pods_changed => if !changed { continue },
        }
        // Take every change already there, so one relist of many pods makes one round.
        if let Some(w) = watcher.as_mut() {
            while let Some(Ok(_)) = futures::FutureExt::now_or_never(w.next()) {}
        }
        let round = tokio::select! {
            _ = cancel.cancelled() => return,
            round = used_round(ctx) => round,
        };
        match round {
            Ok(()) => {
                backoff.reset();
                next_round = Instant::now() + ctx.options.resync;
            }
            Err(why) => {
                let wait = backoff.next();
                tracing::warn!(error = why, retry_in = ?wait, "mirror: could not fetch what the node's pods use");
                next_round = Instant::now() + wait;
            }
        }
    }
}

/// Fetches what the node's mirrored pods use and makes it the mirrored set of each kind. A
/// failed fetch changes nothing.
async fn used_round(ctx: &Ctx) -> Result<(), String> {
    let (objects, _) =
        ctx.store.list(&resource::PODS.key(), None).await.map_err(|e| format!("listing the local pods: {e}"))?;
    let pods: Vec<Pod> = objects
        .into_iter()
        .filter_map(|o| match serde_json::from_value::<Pod>(o) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "mirror: a mirrored pod does not parse; what it uses is not followed");
                None
            }
        })
        .collect();
    let mut graph = PodGraph::default();
    for pod in &pods {
        graph.add_pod(pod, |_, _| None);
    }
    let named = |graph: &PodGraph, kind: Kind| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = graph
            .used_by(&ctx.node)
            .filter(|u| u.0 == kind)
            .map(|(_, ns, n)| (ns.to_string(), n.to_string()))
            .collect();
        v.sort();
        v
    };
    let secrets = fetch(ctx, &resource::SECRETS, named(&graph, Kind::Secret)).await?;
    let config_maps = fetch(ctx, &resource::CONFIG_MAPS, named(&graph, Kind::ConfigMap)).await?;
    let claims = fetch(ctx, &resource::PERSISTENT_VOLUME_CLAIMS, named(&graph, Kind::PersistentVolumeClaim)).await?;
    // The volumes are those the fetched claims are bound to.
    let parsed: Vec<PersistentVolumeClaim> =
        claims.iter().filter_map(|c| serde_json::from_value(c.clone()).ok()).collect();
    let graph = PodGraph::build(&pods, &parsed);
    let volumes = fetch(ctx, &resource::PERSISTENT_VOLUMES, named(&graph, Kind::PersistentVolume)).await?;
    for (rt, objects) in [
        (resource::SECRETS, secrets),
        (resource::CONFIG_MAPS, config_maps),
        (resource::PERSISTENT_VOLUME_CLAIMS, claims),
        (resource::PERSISTENT_VOLUMES, volumes),
    ] {
        let set = Command::MirrorSet { resource: rt.key(), objects, position: None };
        ctx.proposer.propose(set).await.map_err(|e| format!("storing the {}: {e}", rt.name))?;
    }
    Ok(())
}

/// How many objects a round fetches at once.
const FETCHES: usize = 8;

/// Gets each named object; absent ones (404, or 403 because the server no longer counts the
/// pod as the node's) are left out.
async fn fetch(ctx: &Ctx, rt: &ResourceType, names: Vec<(String, String)>) -> Result<Vec<Value>, String> {
    let results: Vec<Result<Option<Value>, SourceError>> = futures::stream::iter(names.clone())
        .map(|(ns, name)| {
            let (source, rt) = (ctx.source.clone(), *rt);
            async move { source.get(&rt, &ns, &name).await }
        })
        .buffered(FETCHES)
        .collect()
        .await;
    let mut out = Vec::new();
    for ((ns, name), result) in names.iter().zip(results) {
        match result {
            Ok(Some(object)) => out.push(object),
            Ok(None) | Err(SourceError::Refused { code: 403 | 404, .. }) => {
                tracing::debug!(resource = rt.name, namespace = ns, name, "mirror: a used object is absent");
            }
            Err(e) => return Err(format!("getting {} {ns}/{name}: {e}", rt.singular_name)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
