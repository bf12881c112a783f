//! A watcher: replays the change log after a revision, then follows live changes in order.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::{changes_since, Event, Store, StoreError};

pub struct Watcher {
    store: Store,
    live: broadcast::Receiver<Arc<Event>>,
    /// Changes when a snapshot replaced the state: this watch then ends with `Gone`.
    epoch: watch::Receiver<u64>,
    backlog: VecDeque<Arc<Event>>,
    /// The last revision handed out; nothing at or below it is handed out again.
    seen: u64,
}

impl Watcher {
    pub(super) fn new(
        store: Store,
        live: broadcast::Receiver<Arc<Event>>,
        epoch: watch::Receiver<u64>,
        backlog: Vec<Arc<Event>>,
        from: u64,
    ) -> Self {
        Watcher { store, live, epoch, backlog: backlog.into(), seen: from }
    }

    /// The next change, in revision order; `Err(Gone)` when this watcher fell behind compaction.
    /// A restore from a snapshot also ends the watch with `Gone`: the client lists again.
    pub async fn next(&mut self) -> Result<Arc<Event>, StoreError> {
        loop {
            if self.epoch.has_changed().unwrap_or(true) {
                return Err(self.gone().await);
            }
            if let Some(event) = self.backlog.pop_front() {
                if event.revision > self.seen {
                    self.seen = event.revision;
                    return Ok(event);
                }
                continue;
            }
            let live = tokio::select! {
                live = self.live.recv() => live,
                _ = self.epoch.changed() => continue,
            };
            match live {
                Ok(event) if event.revision > self.seen => {
                    if event.revision > self.seen + 1 {
                        // A gap: a change was applied but reached us out of order; read it back.
                        self.refill().await?;
                        continue;
                    }
                    self.seen = event.revision;
                    return Ok(event);
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => self.refill().await?,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(StoreError::Task("the store was closed".into()));
                }
            }
        }
    }

    async fn gone(&self) -> StoreError {
        let oldest = self.store.revision().await.unwrap_or(self.seen) + 1;
        StoreError::Gone { requested: self.seen, oldest }
    }

    async fn refill(&mut self) -> Result<(), StoreError> {
        let from = self.seen;
        let events = self.store.blocking(move |conn| changes_since(conn, from)).await?;
        self.backlog.extend(events);
        Ok(())
    }
}
