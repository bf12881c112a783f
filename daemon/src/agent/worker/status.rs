//! The pod's status as the worker writes it: each container's state from what this pass
//! observed, the phase and conditions (the pure rules are [`crate::agent::status`]).

use serde_json::{json, Value};

use super::{spec_containers, Worker};
use crate::agent::container_id;
use crate::agent::status::{self, Observed};
use crate::objects::{meta, resource};
use crate::runtime::TaskState;
use crate::store::{Command, Rejection, StoreError};

impl Worker {
    pub(super) async fn write_status(&mut self, pod: &Value, policy: &str) -> Result<(), StoreError> {
        let now = meta::timestamp(self.ctx.clock.now());
        let mut statuses = Vec::new();
        for c in spec_containers(pod) {
            let name = c["name"].as_str().unwrap_or("");
            let id = container_id(&self.uid, name);
            let memo = self.memos.get(name).cloned().unwrap_or_default();
            let state = match memo.seen.clone() {
                Some(TaskState::Running { .. }) if memo.waiting.is_none() => {
                    json!({"running": {"startedAt": memo.started_at.map(meta::timestamp).unwrap_or_else(|| now.clone())}})
                }
                Some(TaskState::Exited(exit)) if memo.waiting.is_none() => status::state_json(
                    &Observed::Exited {
                        code: exit.code,
                        signal: exit.signal,
                        started_at: memo.started_at,
                        finished_at: exit.exited_at,
                        oom: memo.oom.is_some_and(|(at, oom)| oom && at == exit.exited_at),
                    },
                    &format!("containerd://{id}"),
                ),
                _ => match &memo.waiting {
                    Some((reason, message)) => json!({"waiting": {"reason": reason, "message": message}}),
                    None => json!({"waiting": {"reason": "ContainerCreating"}}),
                },
            };
            let running = state["running"].is_object();
            let probes = memo.probes.as_ref().map(|p| p.view()).map(|v| (v.started, v.ready));
            let (started, ready) = status::started_ready(running, probes);
            let mut cs = json!({
                "name": name,
                "state": state,
                "lastState": memo.last_state,
                "ready": ready,
                "restartCount": memo.restart_count,
                "image": c["image"],
                "imageID": memo.image_id,
                "started": started,
            });
            if memo.started_at.is_some() || !running {
                cs["containerID"] = json!(format!("containerd://{id}"));
            }
            statuses.push(cs);
        }
        let mut new = pod.clone();
        let st = &mut new["status"];
        let phase = status::phase(policy, &statuses, statuses.len());
        let containers = spec_containers(pod);
        let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
        let ready = status::containers_ready(&statuses, &names);
        let why = ready.as_ref().err().map(|(reason, message)| (*reason, message.as_str()));
        let mut conditions = st["conditions"].as_array().cloned().unwrap_or_default();
        status::set_condition(&mut conditions, "PodReadyToStartContainers", self.sandbox_ready, &now);
        status::set_condition(&mut conditions, "Initialized", true, &now);
        status::set_condition_why(&mut conditions, "Ready", ready.is_ok(), why, &now);
        status::set_condition_why(&mut conditions, "ContainersReady", ready.is_ok(), why, &now);
        status::set_condition(&mut conditions, "PodScheduled", true, &now);
        st["phase"] = json!(phase);
        let node_ip = self.ctx.node_ip.to_string();
        st["hostIP"] = json!(node_ip);
        st["hostIPs"] = json!([{"ip": node_ip}]);
        if let Some(ip) = self.pod_ip {
            st["podIP"] = json!(ip.to_string());
            st["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        st["conditions"] = json!(conditions);
        st["containerStatuses"] = json!(statuses);
        if st["startTime"].is_null() {
            st["startTime"] = json!(now);
        }
        if pod.get("status") == new.get("status") {
            return Ok(());
        }
        // Status only: never collides with a change of the pod's spec or metadata.
        let write = Command::UpdateStatus {
            resource: resource::PODS.key(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: Some(self.uid.clone()),
            resource_version: None,
            status: new["status"].clone(),
        };
        match self.ctx.proposer.propose(write).await {
            Ok(_)
            | Err(StoreError::Rejected(Rejection::Conflict { .. }))
            | Err(StoreError::Rejected(Rejection::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
