//! Level-triggered controllers: each reads current state and moves it toward what should be.
//!
//! Owns: binding pending pods to a node ([`scheduler`]), namespace lifecycle ([`namespace`]),
//! Endpoints ([`endpoints`]), pods of ReplicaSets and ReplicationControllers ([`replicaset`]),
//! ReplicaSets of Deployments ([`deployment`]), dependents whose owners are gone ([`gc`]).
//! Invariant: a controller never relies on the event that woke it — it re-reads the store and
//! reconciles, and a periodic resync is the safety net. Only the leader runs them (in a
//! single-node cluster: always).
//! Boundary: controllers write only through `store` commands.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod scheduler;
pub mod volumes;

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often every controller resyncs even without changes.
pub const RESYNC: Duration = Duration::from_secs(10);

/// Runs `reconcile` whenever `resources` change (coalescing bursts) and every [`RESYNC`].
pub async fn run_loop<F, Fut>(store: Store, resources: &[&str], shutdown: CancellationToken, mut reconcile: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    run_loop_timed(store, resources, shutdown, || reconcile().map(|()| None)).await
}

/// The shortest wake-up a reconcile may ask for (a guard against spinning on `Duration::ZERO`).
const MIN_WAKE: Duration = Duration::from_millis(10);

/// Like [`run_loop`], but `reconcile` may ask to run again after a duration (time-based state:
/// a pod becomes available `minReadySeconds` after it became ready, a rollout's progress
/// deadline passes): it runs again at the earliest of that moment, the next relevant change,
/// and the resync. Changes to other resources do not postpone a requested wake-up.
pub async fn run_loop_timed<F, Fut>(store: Store, resources: &[&str], shutdown: CancellationToken, mut reconcile: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<Duration>>,
{
    let from = store.revision().await.unwrap_or(0);
    let mut watcher = match store.watch(from).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "controller cannot watch the store");
            return;
        }
    };
    let wake_at =
        |after: Option<Duration>| tokio::time::Instant::now() + after.map_or(RESYNC, |d| d.clamp(MIN_WAKE, RESYNC));
    let mut wake = wake_at(reconcile().await);
    loop {
        let mut changed = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => true,
            e = watcher.next() => relevant(Some(e), resources, &store, &mut watcher).await,
        };
        // Take every change already queued, then reconcile once for the whole burst.
        while let Some(e) = watcher.next().now_or_never() {
            changed |= relevant(Some(e), resources, &store, &mut watcher).await;
        }
        if changed {
            wake = wake_at(reconcile().await);
        }
    }
}

/// Whether a watch event concerns `resources`; on a broken watch, starts again from now.
async fn relevant(
    event: Option<Result<std::sync::Arc<crate::store::Event>, crate::store::StoreError>>,
    resources: &[&str],
    store: &Store,
    watcher: &mut crate::store::Watcher,
) -> bool {
    match event {
        Some(Ok(ev)) => resources.contains(&ev.resource.as_str()),
        _ => {
            if let Ok(rev) = store.revision().await {
                if let Ok(w) = store.watch(rev).await {
                    *watcher = w;
                }
            }
            true
        }
    }
}
