//! The one door for writes: api, controllers, scheduler, agent and events hand their
//! [`Command`]s to a [`Proposer`] and get the command's answer once it is applied. Today the
//! proposer is the local store (a single-server log); in a cluster it is Raft on a server and a
//! remote server for an agent — callers do not change.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Applied, Command, Store, StoreError};

/// A boxed future, for the object-safe [`Propose`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that decides the order of commands and applies them through the state machine.
pub trait Propose: Send + Sync + 'static {
    /// Resolves once the command is applied (durable, and committed by a majority in a
    /// cluster): `Ok` with the stored object, or the command's rejection or a fault.
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Applied, StoreError>>;

    /// Resolves once the local store holds everything committed before the call (a read
    /// index): a read after it is linearizable. Where the local store is the only copy (a
    /// cluster of one without Raft) or a mirror (an agent), there is nothing to wait for.
    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A cheap, cloneable handle to the node's proposer.
#[derive(Clone)]
pub struct Proposer {
    inner: Arc<dyn Propose>,
}

impl Proposer {
    pub fn new(proposer: impl Propose) -> Proposer {
        Proposer { inner: Arc::new(proposer) }
    }

    /// Proposes to the local store, which numbers the commands itself (a cluster of one).
    pub fn local(store: &Store) -> Proposer {
        Proposer::new(Local(store.clone()))
    }

    pub async fn propose(&self, command: Command) -> Result<Applied, StoreError> {
        self.inner.propose(command).await
    }

    /// See [`Propose::barrier`].
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.inner.barrier().await
    }
}

struct Local(Store);

impl Propose for Local {
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Applied, StoreError>> {
        Box::pin(self.0.propose_local(command))
    }
}
