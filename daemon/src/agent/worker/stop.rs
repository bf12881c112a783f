//! Stopping a pod: graceful deletion (SIGTERM, SIGKILL once the grace period is over, then the
//! pod's removal from the store) and the teardown of its containers, sandbox, network, volumes,
//! files and cgroups.

use std::time::Duration;

use serde_json::Value;

use super::{Next, Worker};
use crate::agent::{cgroups, container_id, release_network, volumes};
use crate::events::EventType;
use crate::objects::{meta, resource};
use crate::runtime::TaskState;
use crate::store::{Command, Rejection, StoreError};

impl Worker {
    /// Graceful stop: SIGTERM, then SIGKILL at the deadline; removes the pod once all is gone.
    pub(super) async fn terminate(
        &mut self,
        pod: &Value,
        names: &[String],
    ) -> Result<Next, Box<dyn std::error::Error + Send + Sync>> {
        self.stop_probes();
        let deadline =
            meta::parse_time(pod.pointer("/metadata/deletionTimestamp")).unwrap_or_else(|| self.ctx.clock.now());
        let mut running = Vec::new();
        for name in names {
            let id = container_id(&self.uid, name);
            if let Some(TaskState::Running { .. }) = self.ctx.runtime.state(&id).await? {
                running.push((name.clone(), id));
            }
        }
        if !running.is_empty() {
            let now = self.ctx.clock.now();
            if !self.term_sent {
                self.term_sent = true;
                for (name, id) in &running {
                    self.ctx
                        .recorder
                        .record(pod, EventType::Normal, "Killing", &format!("Stopping container {name}"))
                        .await;
                    let _ = self.ctx.runtime.kill(id, libc::SIGTERM).await;
                }
                return Ok(Next::After(Duration::from_millis(200)));
            }
            if now < deadline {
                return Ok(Next::After(now.duration_until(deadline).unsigned_abs().min(Duration::from_millis(500))));
            }
            for (_, id) in &running {
                let _ = self.ctx.runtime.kill(id, libc::SIGKILL).await;
            }
            return Ok(Next::After(Duration::from_millis(200)));
        }
        if !self.teardown(names).await {
            return Ok(Next::After(Duration::from_secs(2)));
        }
        let remove = Command::Delete {
            resource: resource::PODS.key(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: Some(self.uid.clone()),
        };
        match self.ctx.proposer.propose(remove).await {
            Ok(_)
            | Err(StoreError::Rejected(Rejection::NotFound { .. }))
            | Err(StoreError::Rejected(Rejection::Conflict { .. })) => Ok(Next::Done),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills and removes the containers, the sandbox and the pod's files. False, leaving the
    /// rest for the next attempt, while a container cannot be removed: a pod forgotten with a
    /// task left would leak it, its shim and its `skerry-logger`.
    pub(super) async fn teardown(&mut self, names: &[String]) -> bool {
        self.stop_probes();
        let mut containers_gone = true;
        for name in names {
            let id = container_id(&self.uid, name);
            if let Err(e) = self.ctx.runtime.remove(&id).await {
                tracing::warn!(pod = %self.name, namespace = %self.namespace, container = id, error = %e, "removing container failed; retrying");
                containers_gone = false;
            }
        }
        if !containers_gone {
            return false;
        }
        release_network(&self.ctx, &self.uid, &self.namespace, &self.name).await;
        self.pod_ip = None;
        self.sandbox_ready = false;
        let (namespaces, sandbox) = (self.ctx.namespaces.clone(), self.sandbox.clone());
        let removed = tokio::task::spawn_blocking(move || namespaces.remove(&sandbox)).await.unwrap_or(Ok(()));
        if let Err(e) = removed {
            tracing::warn!(error = %e, "removing sandbox failed");
            return true;
        }
        // Volume tmpfs mounts go first; while one stays mounted the pod's directory stays too.
        let pod_dir = self.ctx.pod_dir(&self.uid);
        self.volumes = Default::default();
        if tokio::task::spawn_blocking(move || volumes::tear_down(&pod_dir)).await.unwrap_or(false) {
            let _ = std::fs::remove_dir_all(self.ctx.pod_dir(&self.uid));
        } else {
            tracing::warn!(pod = %self.name, namespace = %self.namespace, "a volume of the pod is still mounted; keeping its directory");
        }
        cgroups::remove_tree(&cgroups::pod_path(&self.ctx.cgroup_parent, &self.uid));
        true
    }
}
