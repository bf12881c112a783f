//! Starting a pod's containers: the sandbox, the pod network, volumes, the image, and each
//! container's spec (environment, mounts, limits) and run.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{host_network, Worker};
use crate::agent::{
    cgroups, container_id, env, files, log_path, resources, sandbox, volumes, LABEL_CONTAINER, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use crate::events::EventType;
use crate::objects::{meta, resource};
use crate::runtime::{self, ContainerRun, RuntimeError, TaskState};
use crate::store::StoreError;

impl Worker {
    /// Creates the sandbox once per worker (mount-table reads and namespace creation run off
    /// the async threads).
    pub(super) async fn ensure_sandbox(&mut self, pod: &Value) -> Result<(), sandbox::SandboxError> {
        if self.sandbox_ready {
            return Ok(());
        }
        let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(meta::name(pod));
        let hostname: String = hostname.chars().take(63).collect();
        let (namespaces, sandbox) = (self.ctx.namespaces.clone(), self.sandbox.clone());
        tokio::task::spawn_blocking(move || namespaces.create(&sandbox, &hostname)).await.unwrap_or_else(|e| {
            Err(sandbox::SandboxError::Create {
                dir: self.sandbox.dir.clone(),
                step: "namespace task",
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        self.sandbox_ready = true;
        Ok(())
    }

    /// Wires the pod's network through CNI once (a cached result means it is already wired,
    /// e.g. before a daemon restart); host-network pods use the node's address.
    pub(super) async fn ensure_network(&mut self, pod: &Value) -> Result<(), crate::net::cni::CniError> {
        if self.pod_ip.is_some() {
            return Ok(());
        }
        if host_network(pod) {
            self.pod_ip = Some(self.ctx.node_ip);
            return Ok(());
        }
        let cache = self.network_cache();
        if let Some(ip) = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|r| crate::net::cni::result_ip(&r))
        {
            self.pod_ip = ip.parse().ok();
            if self.pod_ip.is_some() {
                return Ok(());
            }
        }
        let result = self.ctx.cni.add(&self.attachment()).await?;
        let ip = crate::net::cni::result_ip(&result).and_then(|ip| ip.parse().ok()).ok_or_else(|| {
            crate::net::cni::CniError::BadResult {
                plugin: self.ctx.cni.name().to_string(),
                message: "the result has no IPv4 address".into(),
            }
        })?;
        if let Err(e) = std::fs::write(&cache, serde_json::to_vec(&result).expect("json")) {
            tracing::warn!(error = %e, path = %cache.display(), "could not cache the CNI result");
        }
        self.pod_ip = Some(ip);
        Ok(())
    }

    pub(super) fn network_cache(&self) -> std::path::PathBuf {
        self.ctx.pod_dir(&self.uid).join("network.json")
    }

    pub(super) fn attachment(&self) -> crate::net::cni::Attachment {
        crate::agent::attachment(&self.uid, &self.namespace, &self.name, self.sandbox.netns())
    }

    /// Sets up the pod's volumes and refreshes the projected ones ([`crate::agent::volumes`]). False
    /// while one cannot be set up, with a `FailedMount` event per volume (at most every 10 s
    /// while the messages stay the same); the worker retries every 2 s.
    pub(super) async fn ensure_volumes(&mut self, pod: &Value) -> bool {
        let errors = self.volumes.ensure(&self.ctx.store, pod, &self.ctx.pod_dir(&self.uid)).await;
        if errors.is_empty() {
            self.mount_event = None;
            return true;
        }
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let joined = messages.join("\n");
        let due =
            self.mount_event.as_ref().is_none_or(|(m, at)| *m != joined || at.elapsed() >= Duration::from_secs(10));
        if due {
            for m in &messages {
                self.ctx.recorder.record(pod, EventType::Warning, "FailedMount", m).await;
            }
            self.mount_event = Some((joined, Instant::now()));
        }
        false
    }

    /// While the volumes are not ready a container that is not running waits (kubelet's
    /// `ContainerCreating`); a running one is reconciled as usual. True when held.
    pub(super) async fn held_for_volumes(&mut self, c: &Value) -> Result<bool, RuntimeError> {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let state = self.ctx.runtime.state(&container_id(&self.uid, &name)).await?;
        if matches!(state, Some(TaskState::Running { .. })) {
            return Ok(false);
        }
        let memo = self.memos.entry(name).or_default();
        memo.seen = state;
        memo.waiting = None;
        Ok(true)
    }

    /// Ensures the image, builds the spec and starts the container. Errors are
    /// (waiting reason, message) as Kubernetes shows them.
    pub(super) async fn start(&mut self, pod: &Value, c: &Value, id: &str) -> Result<(), (String, String)> {
        let name = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let config = self.ensure_image(pod, c).await?;
        self.memos.get_mut(name).expect("memo").image_id = config.image_id.clone();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
        };
        let fail = |e: RuntimeError| ("CreateContainerError".to_string(), e.to_string());
        let vars = match self.container_env(pod, c).await {
            Ok(v) => v,
            Err(e) => return Err(self.config_error(pod, e).await),
        };
        let (command, cargs) =
            (env::expand_all(&strings(&c["command"]), &vars), env::expand_all(&strings(&c["args"]), &vars));
        let args = runtime::merge_command(&config, &command, &cargs).map_err(fail)?;
        let mounts = match self.container_mounts(pod, c, &vars).await {
            Ok(m) => m,
            Err(e) => return Err(self.config_error(pod, e).await),
        };
        let env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env = runtime::merge_env(&config.env, &env);
        let cwd = c["workingDir"].as_str().map(String::from).unwrap_or(config.working_dir.clone());
        let user = pod
            .pointer("/spec/securityContext/runAsUser")
            .and_then(Value::as_i64)
            .map(|u| u.to_string())
            .or_else(|| (!config.user.is_empty()).then(|| config.user.clone()));
        let limits = resources::container_limits(c).map_err(|e| ("CreateContainerError".to_string(), e))?;
        let input = runtime::SpecInput {
            args,
            env,
            cwd,
            user,
            hostname: pod
                .pointer("/spec/hostname")
                .and_then(Value::as_str)
                .unwrap_or(&self.name)
                .chars()
                .take(63)
                .collect(),
            // A host-network pod shares the namespace the node's address lives in: skerryd's own
            // (which is not containerd's when skerryd runs inside a node namespace).
            netns: Some(if host_network(pod) {
                format!("/proc/{}/ns/net", std::process::id()).into()
            } else {
                self.sandbox.netns()
            }),
            ipcns: Some(self.sandbox.ipcns()),
            utsns: Some(self.sandbox.utsns()),
            mounts,
            cgroups_path: cgroups::container_path(&self.ctx.cgroup_parent, &self.uid, id),
            memory_limit: limits.memory_limit,
            // No swap beyond the limit, as containerd's CRI does where swap is accounted.
            memory_swap: limits.memory_limit.filter(|_| cgroups::swap_limit_supported()),
            cpu_shares: Some(limits.cpu_shares),
            cpu_quota: limits.cpu_quota,
            cpu_period: limits.cpu_period,
            ..Default::default()
        };
        let spec = runtime::build_spec(&input);
        let restart = self.memos[name].restart_count;
        let log = log_path(&self.ctx.data_dir, &self.uid, name, restart);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ("CreateContainerError".to_string(), format!("creating {}: {e}", dir.display())))?;
        }
        let labels = HashMap::from([
            (LABEL_POD_UID.to_string(), self.uid.clone()),
            (LABEL_POD_NAME.to_string(), self.name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), self.namespace.clone()),
            (LABEL_CONTAINER.to_string(), name.to_string()),
        ]);
        let run = ContainerRun { id: id.to_string(), image: image.to_string(), spec, labels, log_path: log };
        self.ctx.recorder.record(pod, EventType::Normal, "Created", &format!("Created container: {name}")).await;
        let run_began = std::time::Instant::now();
        let started = self.ctx.runtime.run(&run).await;
        tracing::debug!(pod = %self.name, container = name, run_ms = run_began.elapsed().as_millis() as u64, "container created and started");
        if let Ok(pid) = started {
            self.memos.get_mut(name).expect("memo").seen = Some(TaskState::Running { pid });
        }
        if let Err(e) = started {
            let _ = self.ctx.runtime.remove(id).await;
            let msg = e.to_string();
            self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {msg}")).await;
            let reason = if matches!(e, RuntimeError::NoCommand | RuntimeError::InvalidImage { .. }) {
                "CreateContainerError"
            } else {
                "RunContainerError"
            };
            return Err((reason.into(), msg));
        }
        self.ctx.recorder.record(pod, EventType::Normal, "Started", &format!("Started container {name}")).await;
        Ok(())
    }

    pub(super) async fn ensure_image(
        &mut self,
        pod: &Value,
        c: &Value,
    ) -> Result<runtime::ImageConfig, (String, String)> {
        let image = c["image"].as_str().unwrap_or("");
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        let present =
            self.ctx.runtime.image_config(image).await.map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
        let rec = &self.ctx.recorder;
        match (policy, present) {
            ("Never", Some(config)) | ("IfNotPresent", Some(config)) => {
                rec.record(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image {image:?} already present on machine"),
                )
                .await;
                return Ok(config);
            }
            ("Never", None) => {
                let msg = format!("Container image {image:?} is not present with pull policy of Never");
                rec.record(pod, EventType::Warning, "ErrImageNeverPull", &msg).await;
                return Err(("ErrImageNeverPull".into(), msg));
            }
            (_, present) => {
                rec.record(pod, EventType::Normal, "Pulling", &format!("Pulling image {image:?}")).await;
                let started = Instant::now();
                let (tx, _rx) = mpsc::unbounded_channel();
                match self.ctx.runtime.pull(image, None, &self.ctx.insecure_registries, tx).await {
                    Ok(_) => {
                        let msg =
                            format!("Successfully pulled image {image:?} in {:.3}s", started.elapsed().as_secs_f64());
                        rec.record(pod, EventType::Normal, "Pulled", &msg).await;
                    }
                    Err(e) => {
                        if let Some(config) = present {
                            // Offline edge host: the local copy serves when the registry is out of reach.
                            let msg = format!(
                                "Failed to pull image {image:?}: {e}; using the image already present on the node"
                            );
                            rec.record(pod, EventType::Warning, "Failed", &msg).await;
                            return Ok(config);
                        }
                        let msg = format!("Failed to pull image {image:?}: {e}");
                        rec.record(pod, EventType::Warning, "Failed", &msg).await;
                        return Err(("ErrImagePull".into(), msg));
                    }
                }
            }
        }
        match self.ctx.runtime.image_config(image).await {
            Ok(Some(config)) => Ok(config),
            Ok(None) => Err(("ErrImagePull".into(), format!("image {image:?} is missing after the pull"))),
            Err(e) => Err(("ErrImagePull".into(), e.to_string())),
        }
    }

    /// The container's environment ([`crate::agent::env`]), reading the ConfigMaps and Secrets it
    /// names. Errors are kubelet's `CreateContainerConfigError` (with a `Failed` event; the
    /// messages never carry values).
    pub(super) async fn container_env(
        &self,
        pod: &Value,
        c: &Value,
    ) -> Result<Vec<(String, String)>, (String, String)> {
        let (config_maps, secrets) = env::references(c);
        let mut lookups = env::Lookups::default();
        let store_err = |e: StoreError| ("CreateContainerConfigError".to_string(), e.to_string());
        for n in config_maps {
            let cm = self.ctx.store.get(&resource::CONFIG_MAPS.key(), &self.namespace, &n).await.map_err(store_err)?;
            lookups.config_maps.insert(n, cm);
        }
        for n in secrets {
            let s = self.ctx.store.get(&resource::SECRETS.key(), &self.namespace, &n).await.map_err(store_err)?;
            lookups.secrets.insert(n, s);
        }
        let facts = env::PodFacts {
            node_name: self.ctx.node_name.clone(),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_ip: self.ctx.node_ip.to_string(),
        };
        env::resolve(pod, c, &facts, &lookups).map_err(|e| ("CreateContainerConfigError".to_string(), e.to_string()))
    }

    /// The pod's files and the container's volume mounts (a volume mounted at `/etc/hosts` and
    /// the like replaces the pod's file, as in kubelet).
    pub(super) async fn container_mounts(
        &self,
        pod: &Value,
        c: &Value,
        vars: &[(String, String)],
    ) -> Result<Vec<runtime::BindMount>, (String, String)> {
        let files = self.pod_files(pod).map_err(|e| ("CreateContainerError".to_string(), e))?;
        let (c, ready, vars) = (c.clone(), self.volumes.ready.clone(), vars.to_vec());
        let mounts = tokio::task::spawn_blocking(move || volumes::container_mounts(&c, &ready, &vars))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|e| ("CreateContainerConfigError".to_string(), e))?;
        let mut all: Vec<runtime::BindMount> =
            files.into_iter().filter(|f| !mounts.iter().any(|m| m.destination == f.destination)).collect();
        all.extend(mounts);
        Ok(all)
    }

    /// Writes the pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (once) and returns
    /// them as bind mounts.
    pub(super) fn pod_files(&self, pod: &Value) -> Result<Vec<runtime::BindMount>, String> {
        let dir = self.ctx.pod_dir(&self.uid).join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(&self.name);
        let ip = self.pod_ip.map(|ip| ip.to_string());
        let ip = ip.as_deref();
        let policy = pod.pointer("/spec/dnsPolicy").and_then(Value::as_str).unwrap_or("ClusterFirst");
        let cluster_dns = match policy {
            "ClusterFirstWithHostNet" => true,
            "ClusterFirst" => !host_network(pod),
            _ => false,
        };
        let resolv = if cluster_dns {
            crate::net::dns::pod_resolv_conf(&self.namespace, self.ctx.cluster_dns, &self.ctx.cluster_domain)
        } else {
            files::host_resolv_conf()
        };
        let files = [
            ("hosts", "/etc/hosts", files::hosts(hostname, ip)),
            ("hostname", "/etc/hostname", format!("{hostname}\n")),
            ("resolv.conf", "/etc/resolv.conf", resolv),
        ];
        let mut mounts = Vec::new();
        for (file, destination, content) in files {
            let path = dir.join(file);
            if !path.exists() {
                std::fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            mounts.push(runtime::BindMount { source: path, destination: destination.into(), readonly: false });
        }
        Ok(mounts)
    }

    /// Records kubelet's `Failed` event for a container that cannot be configured; returns the
    /// error for its waiting state.
    pub(super) async fn config_error(&self, pod: &Value, e: (String, String)) -> (String, String) {
        self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {}", e.1)).await;
        e
    }
}
