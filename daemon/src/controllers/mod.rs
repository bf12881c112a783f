//! Level-triggered controllers: each reads current state and moves it toward what should be.
//!
//! Owns: binding pending pods to a node ([`scheduler`]), namespace lifecycle ([`namespace`]).
//! Invariant: a controller never relies on the event that woke it — it re-reads the store and
//! reconciles, and a periodic resync is the safety net. Only the leader runs them (in a
//! single-node cluster: always).
//! Boundary: controllers write only through `store` commands.

pub mod namespace;
pub mod scheduler;

use std::future::Future;
use std::time::Duration;

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
    let from = store.revision().await.unwrap_or(0);
    let mut watcher = match store.watch(from).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "controller cannot watch the store");
            return;
        }
    };
    reconcile().await;
    loop {
        let changed = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC) => true,
            e = watcher.next() => match e {
                Ok(ev) => resources.contains(&ev.resource.as_str()),
                Err(_) => {
                    // Fell behind compaction: start again from now.
                    if let Ok(rev) = store.revision().await {
                        if let Ok(w) = store.watch(rev).await {
                            watcher = w;
                        }
                    }
                    true
                }
            },
        };
        if changed {
            // Let a burst of changes land before reconciling once.
            tokio::time::sleep(Duration::from_millis(20)).await;
            reconcile().await;
        }
    }
}
