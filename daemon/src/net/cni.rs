//! Invokes CNI plugins as the CNI specification says: a network configuration list from a
//! config directory, plugin binaries found on `CNI_PATH`, ADD in order with `prevResult`
//! chaining, DEL in reverse order, CHECK, and GC where the list's version supports it.
//!
//! The daemon is a CNI *runtime* here; nothing in it knows which plugin wires the pod, so the
//! reference plugins (`bridge` + `host-local`) can replace `skerry-cni`.
//!
//! The agent uses it through the [`PodNetwork`] trait (ADD, DEL, GC), which [`Cni`] implements
//! and [`FakeNetwork`] (tests) fakes without running a plugin.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network configuration in {0}; write a .conflist there or let skerryd write its default")]
    NoConfig(PathBuf),
    #[error("CNI configuration {path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("CNI plugin {plugin:?} not found in {path}; install it or pass --cni-bin-dir")]
    PluginNotFound { plugin: String, path: String },
    #[error("CNI plugin {plugin} {command} failed: {message} (code {code}){details}")]
    Plugin { plugin: String, command: &'static str, code: i64, message: String, details: String },
    #[error("running CNI plugin {plugin}: {source}")]
    Exec { plugin: String, source: std::io::Error },
    #[error("CNI plugin {plugin} returned output that is not a CNI result: {message}")]
    BadResult { plugin: String, message: String },
}

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    /// The raw list, for GC's version check.
    pub raw: Value,
}

/// Which attachment a call is about.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K8S_POD_NAME=...`).
    pub args: Vec<(String, String)>,
}

/// The default network: one `skerry-cni` bridge network over the node's pod CIDR.
pub fn default_conflist(pod_cidr: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "skerry",
        "plugins": [{
            "type": "skerry-cni",
            "bridge": "skerry0",
            "mtu": 1500,
            "hairpinMode": true,
            "isGateway": true,
            "ipam": {"subnet": pod_cidr}
        }]
    })
}

/// Loads the first (by name) `.conflist` or `.conf` in `dir`; writes the default when none.
pub fn load_or_write_default(dir: &Path, pod_cidr: &str) -> Result<NetworkList, CniError> {
    if let Some(list) = load(dir)? {
        return Ok(list);
    }
    let path = dir.join("10-skerry.conflist");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(&path, serde_json::to_vec_pretty(&default_conflist(pod_cidr)).expect("json"))
    };
    write().map_err(|e| CniError::BadConfig { path: path.clone(), message: format!("writing the default: {e}") })?;
    load(dir)?.ok_or_else(|| CniError::NoConfig(dir.to_path_buf()))
}

/// Loads the first configuration in `dir`, if any.
pub fn load(dir: &Path) -> Result<Option<NetworkList>, CniError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
        .collect();
    files.sort();
    let Some(path) = files.into_iter().next() else { return Ok(None) };
    let bad = |message: String| CniError::BadConfig { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let raw: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let name = raw["name"].as_str().ok_or_else(|| bad("missing \"name\"".into()))?.to_string();
    let cni_version = raw["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
    // A single-plugin `.conf` is a list of one.
    let plugins = match raw.get("plugins").and_then(Value::as_array) {
        Some(p) if !p.is_empty() => p.clone(),
        Some(_) => return Err(bad("\"plugins\" is empty".into())),
        None if raw.get("type").is_some() => vec![raw.clone()],
        None => return Err(bad("no \"plugins\" and no \"type\"".into())),
    };
    if plugins.iter().any(|p| p["type"].as_str().is_none()) {
        return Err(bad("every plugin needs a \"type\"".into()));
    }
    Ok(Some(NetworkList { path, name, cni_version, plugins, raw }))
}

/// Finds a plugin binary in the `:`-separated search path.
fn find_plugin(plugin: &str, search: &str) -> Result<PathBuf, CniError> {
    search
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound { plugin: plugin.into(), path: search.into() })
}

/// Runs CNI plugins for one network list.
#[derive(Debug, Clone)]
pub struct Cni {
    pub list: NetworkList,
    /// `CNI_PATH`: directories searched for plugin binaries.
    pub bin_path: String,
}

impl Cni {
    fn plugin_config(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = json!(self.list.name);
        conf["cniVersion"] = json!(self.list.cni_version);
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        conf
    }

    async fn invoke(
        &self,
        command: &'static str,
        plugin: &Value,
        conf: &Value,
        att: Option<&Attachment>,
    ) -> Result<Option<Value>, CniError> {
        let kind = plugin["type"].as_str().unwrap_or("");
        let binary = find_plugin(kind, &self.bin_path)?;
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", &self.bin_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(a) = att {
            let args: Vec<String> = std::iter::once("IgnoreUnknown=1".to_string())
                .chain(a.args.iter().map(|(k, v)| format!("{k}={v}")))
                .collect();
            cmd.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", args.join(";"));
        }
        let exec = |source| CniError::Exec { plugin: kind.into(), source };
        let mut child = cmd.spawn().map_err(exec)?;
        let input = serde_json::to_vec(conf).expect("json");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.map_err(exec)?;
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| exec(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 60 s")))?
            .map_err(exec)?;
        if !out.status.success() {
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let details =
                err["details"].as_str().filter(|d| !d.is_empty()).map(|d| format!(": {d}")).unwrap_or_default();
            return Err(CniError::Plugin {
                plugin: kind.into(),
                command,
                code: err["code"].as_i64().unwrap_or(-1),
                message: err["msg"].as_str().map(str::to_string).unwrap_or(if stderr.is_empty() {
                    format!("exit status {}", out.status)
                } else {
                    stderr
                }),
                details,
            });
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| CniError::BadResult { plugin: kind.into(), message: e.to_string() })
    }

    /// ADD through every plugin in order; returns the final result.
    pub async fn add(&self, att: &Attachment) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in &self.list.plugins {
            let conf = self.plugin_config(plugin, prev.as_ref());
            if let Some(result) = self.invoke("ADD", plugin, &conf, Some(att)).await? {
                prev = Some(result);
            }
        }
        prev.ok_or_else(|| CniError::BadResult {
            plugin: self.list.name.clone(),
            message: "no plugin returned a result".into(),
        })
    }

    /// DEL through every plugin in reverse order, with the cached ADD result when known.
    pub async fn del(&self, att: &Attachment, prev: Option<&Value>) -> Result<(), CniError> {
        for plugin in self.list.plugins.iter().rev() {
            let conf = self.plugin_config(plugin, prev);
            self.invoke("DEL", plugin, &conf, Some(att)).await?;
        }
        Ok(())
    }

    /// CHECK through every plugin in order (CNI 0.4.0 and later).
    pub async fn check(&self, att: &Attachment, prev: &Value) -> Result<(), CniError> {
        for plugin in &self.list.plugins {
            let conf = self.plugin_config(plugin, Some(prev));
            self.invoke("CHECK", plugin, &conf, Some(att)).await?;
        }
        Ok(())
    }

    /// GC (CNI 1.1): every plugin frees what is not among `valid`. Lists older than 1.1 have
    /// no GC; for them the caller DELs each stale attachment instead.
    pub async fn gc(&self, valid: &[(String, String)]) -> Result<bool, CniError> {
        if !version_at_least(&self.list.cni_version, (1, 1)) {
            return Ok(false);
        }
        let attachments: Vec<Value> = valid.iter().map(|(c, i)| json!({"containerID": c, "ifname": i})).collect();
        for plugin in &self.list.plugins {
            let mut conf = self.plugin_config(plugin, None);
            conf["cni.dev/valid-attachments"] = json!(attachments);
            self.invoke("GC", plugin, &conf, None).await?;
        }
        Ok(true)
    }
}

/// The pod network as the agent uses it: one network list's ADD, DEL and GC.
pub trait PodNetwork: Send + Sync + 'static {
    /// The network's name (errors about its results name it).
    fn name(&self) -> &str;
    /// Wires an attachment; returns the final CNI result.
    fn add<'a>(&'a self, att: &'a Attachment) -> BoxFuture<'a, Result<Value, CniError>>;
    /// Unwires an attachment, with the cached ADD result when known.
    fn del<'a>(&'a self, att: &'a Attachment, prev: Option<&'a Value>) -> BoxFuture<'a, Result<(), CniError>>;
    /// Frees what is not among `valid` (container ID, interface); false when the list's
    /// version has no GC.
    fn gc<'a>(&'a self, valid: &'a [(String, String)]) -> BoxFuture<'a, Result<bool, CniError>>;
}

impl PodNetwork for Cni {
    fn name(&self) -> &str {
        &self.list.name
    }
    fn add<'a>(&'a self, att: &'a Attachment) -> BoxFuture<'a, Result<Value, CniError>> {
        Box::pin(Cni::add(self, att))
    }
    fn del<'a>(&'a self, att: &'a Attachment, prev: Option<&'a Value>) -> BoxFuture<'a, Result<(), CniError>> {
        Box::pin(Cni::del(self, att, prev))
    }
    fn gc<'a>(&'a self, valid: &'a [(String, String)]) -> BoxFuture<'a, Result<bool, CniError>> {
        Box::pin(Cni::gc(self, valid))
    }
}

/// What a [`FakeNetwork`] was asked to do: the call and the attachment's container ID (the
/// pod's UID), or the valid IDs of a GC.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkCall {
    Add(String),
    Del(String),
    Gc(Vec<String>),
}

/// A pod network without plugins (tests): ADD hands out `10.42.0.2/24`, `.3`, … in order and
/// every call is recorded.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeNetwork {
    calls: std::sync::Mutex<Vec<NetworkCall>>,
}

#[cfg(test)]
impl FakeNetwork {
    pub fn calls(&self) -> Vec<NetworkCall> {
        self.calls.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl PodNetwork for FakeNetwork {
    fn name(&self) -> &str {
        "fake"
    }
    fn add<'a>(&'a self, att: &'a Attachment) -> BoxFuture<'a, Result<Value, CniError>> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(NetworkCall::Add(att.container_id.clone()));
        let n = calls.iter().filter(|c| matches!(c, NetworkCall::Add(_))).count() + 1;
        let result =
            json!({"cniVersion": "1.0.0", "ips": [{"address": format!("10.42.0.{n}/24"), "gateway": "10.42.0.1"}]});
        Box::pin(async move { Ok(result) })
    }
    fn del<'a>(&'a self, att: &'a Attachment, _prev: Option<&'a Value>) -> BoxFuture<'a, Result<(), CniError>> {
        self.calls.lock().unwrap().push(NetworkCall::Del(att.container_id.clone()));
        Box::pin(async { Ok(()) })
    }
    fn gc<'a>(&'a self, valid: &'a [(String, String)]) -> BoxFuture<'a, Result<bool, CniError>> {
        self.calls.lock().unwrap().push(NetworkCall::Gc(valid.iter().map(|(c, _)| c.clone()).collect()));
        Box::pin(async { Ok(true) })
    }
}

fn version_at_least(v: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// The pod's IPv4 address from a CNI result (`ips[].address` in 1.0, `ip4` in 0.2).
pub fn result_ip(result: &Value) -> Option<String> {
    let from_ips = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .find(|a| !a.contains(':'));
    let addr = from_ips.or_else(|| result.pointer("/ip4/ip").and_then(Value::as_str))?;
    Some(addr.split('/').next().unwrap_or(addr).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_lists_and_single_confs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let list = load_or_write_default(dir.path(), "10.42.0.0/24").unwrap();
        assert_eq!(list.name, "skerry");
        assert_eq!(list.plugins[0]["type"], "skerry-cni");
        std::fs::write(dir.path().join("05-single.conf"), r#"{"cniVersion":"0.4.0","name":"one","type":"bridge"}"#)
            .unwrap();
        let single = load(dir.path()).unwrap().unwrap();
        assert_eq!((single.name.as_str(), single.plugins.len()), ("one", 1));
        std::fs::write(dir.path().join("01-bad.conflist"), "{").unwrap();
        assert!(matches!(load(dir.path()), Err(CniError::BadConfig { .. })));
    }

    #[test]
    fn result_addresses() {
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00::5/64"}, {"address": "10.42.0.5/24", "gateway": "10.42.0.1"}]});
        assert_eq!(result_ip(&r).as_deref(), Some("10.42.0.5"));
        assert_eq!(result_ip(&json!({"ip4": {"ip": "10.1.0.2/16"}})).as_deref(), Some("10.1.0.2"));
        assert!(version_at_least("1.1.0", (1, 1)) && !version_at_least("1.0.0", (1, 1)));
    }
}
