//! `skerry drain`: cordons nodes, then evicts their pods the way kubectl does — the same filters
//! (DaemonSet pods, pods with emptyDir data, pods without a controller), the same messages
//! (`evicting pod ns/name`, `pod/name evicted`, `node/N drained`, kubectl's refusals and
//! timeouts, its wording kept even where it repeats itself) — and waits for the pods to be gone
//! within `--timeout`. Evictions go through the Eviction subresource (`--disable-eviction`
//! deletes instead).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use super::cordon;
use super::{parse_duration, request, Ctx};
use crate::client;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NODE...
    pub nodes: Vec<String>,
    /// Continue even if there are pods that do not declare a controller
    #[arg(long)]
    pub force: bool,
    /// Ignore DaemonSet-managed pods
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Continue even if there are pods using emptyDir (local data that will be deleted when the node is drained)
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Period of time in seconds given to each pod to terminate gracefully; negative: the pod's own
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// The length of time to wait before giving up, zero means infinite
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Label selector to filter pods on the node
    #[arg(long)]
    pub pod_selector: Option<String>,
    /// Delete pods instead of evicting them
    #[arg(long)]
    pub disable_eviction: bool,
    /// Selector (label query) to filter nodes on
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

const DAEMON_SET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMON_SET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str = "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
// kubectl's own text: its error list adds another "cannot delete " in front.
const UNMANAGED_FATAL: &str = "cannot delete Pods that declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";

/// The flags the filters read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub force: bool,
    pub ignore_daemonsets: bool,
    pub delete_emptydir_data: bool,
}

/// What a filter says about a pod (kubectl's `PodDeleteStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Okay,
    Skip,
    Warning { delete: bool, message: String },
    Error(String),
}

impl Verdict {
    fn deletes(&self) -> bool {
        matches!(self, Verdict::Okay | Verdict::Warning { delete: true, .. })
    }
}

/// What reading a pod's DaemonSet gave: present, or the error's message and whether it was a 404.
pub type DaemonSets = HashMap<(String, String), std::result::Result<(), (bool, String)>>;

fn finished(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

fn controller(pod: &Value) -> Option<&Value> {
    pod.pointer("/metadata/ownerReferences")?.as_array()?.iter().find(|r| r["controller"] == true)
}

/// kubectl's filters in their order; the first that keeps a pod decides, else the last one's
/// verdict stands (so an earlier warning is dropped, as kubectl drops it).
pub fn verdict(pod: &Value, opts: Options, daemon_sets: &DaemonSets) -> Verdict {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let filters: [&dyn Fn() -> Verdict; 4] = [
        &|| {
            let Some(c) = controller(pod).filter(|c| c["kind"] == "DaemonSet") else { return Verdict::Okay };
            if finished(pod) {
                return Verdict::Okay;
            }
            let key = (ns.clone(), c["name"].as_str().unwrap_or("").to_string());
            match daemon_sets.get(&key) {
                Some(Err((true, message))) if opts.force => Verdict::Warning { delete: true, message: message.clone() },
                Some(Err((_, message))) => Verdict::Error(message.clone()),
                _ if !opts.ignore_daemonsets => Verdict::Error(DAEMON_SET_FATAL.into()),
                _ => Verdict::Warning { delete: false, message: DAEMON_SET_WARNING.into() },
            }
        },
        &|| {
            let mirror = pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some();
            if mirror {
                Verdict::Skip
            } else {
                Verdict::Okay
            }
        },
        &|| {
            let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array);
            let local = volumes.into_iter().flatten().any(|v| v.get("emptyDir").is_some_and(|e| !e.is_null()));
            if !local || finished(pod) {
                Verdict::Okay
            } else if !opts.delete_emptydir_data {
                Verdict::Error(LOCAL_STORAGE_FATAL.into())
            } else {
                Verdict::Warning { delete: true, message: LOCAL_STORAGE_WARNING.into() }
            }
        },
        &|| {
            if finished(pod) || controller(pod).is_some() {
                Verdict::Okay
            } else if opts.force {
                Verdict::Warning { delete: true, message: UNMANAGED_WARNING.into() }
            } else {
                Verdict::Error(UNMANAGED_FATAL.into())
            }
        },
    ];
    let mut last = Verdict::Okay;
    for f in filters {
        last = f();
        if !last.deletes() {
            break;
        }
    }
    last
}

/// The pods to evict, the warning line and the errors of one node (kubectl's `PodDeleteList`).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub pods: Vec<Value>,
    pub warnings: String,
    pub errors: Vec<String>,
}

fn ns_name(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

pub fn plan(pods: &[Value], opts: Options, daemon_sets: &DaemonSets) -> Plan {
    let mut out = Plan::default();
    let (mut warnings, mut errors): (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) = Default::default();
    for pod in pods {
        let v = verdict(pod, opts, daemon_sets);
        if v.deletes() {
            out.pods.push(pod.clone());
        }
        match v {
            Verdict::Warning { message, .. } => warnings.entry(message).or_default().push(ns_name(pod)),
            Verdict::Error(message) => errors.entry(message).or_default().push(ns_name(pod)),
            _ => {}
        }
    }
    let lines: Vec<String> = warnings.iter().map(|(m, pods)| format!("{m}: {}", pods.join(", "))).collect();
    out.warnings = lines.join("; ");
    out.errors = errors.iter().map(|(m, pods)| format!("cannot delete {m}: {}", pods.join(", "))).collect();
    out
}

/// An aggregate error as Go's `utilerrors` prints it: one message, or `[a, b]` (repeats once).
pub fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// A duration as Go's `time.Duration` prints it (`0s`, `500ms`, `30s`, `1m30s`, `1h0m0s`).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (h, m, s, frac) = (secs / 3600, (secs % 3600) / 60, secs % 60, ms % 1000);
    let sec = if frac == 0 { s.to_string() } else { format!("{s}.{frac:03}").trim_end_matches('0').to_string() };
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// The message of a failed request as Go's `err.Error()` gives it.
fn message(e: &Error) -> String {
    match e {
        Error::Status(s) => s.message.clone(),
        other => other.to_string().trim_start_matches("error: ").to_string(),
    }
}

/// The pods on `node` (all namespaces), optionally narrowed by `--pod-selector`.
async fn pods_on(ctx: &mut Ctx, node: &str, selector: Option<&String>) -> Result<Vec<Value>> {
    let mut q = vec![("fieldSelector", format!("spec.nodeName={node}"))];
    if let Some(s) = selector {
        q.push(("labelSelector", s.clone()));
    }
    let list = ctx.get_json(&format!("/api/v1/pods{}", client::query(&q)), false).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// kubectl's `GetPodsForDeletion`: reads the pods and the DaemonSets they name, and plans.
async fn pods_for_deletion(ctx: &mut Ctx, node: &str, args: &Args) -> Result<Plan> {
    let pods = pods_on(ctx, node, args.pod_selector.as_ref()).await?;
    let mut daemon_sets = DaemonSets::new();
    for pod in &pods {
        let Some(c) = controller(pod).filter(|c| c["kind"] == "DaemonSet") else { continue };
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = c["name"].as_str().unwrap_or("").to_string();
        let path = format!("/apis/apps/v1/namespaces/{ns}/daemonsets/{}", client::encode(&name));
        let found = match ctx.get_json(&path, false).await {
            Ok(_) => Ok(()),
            Err(e @ Error::Status(_)) => Err((e.is_not_found(), message(&e))),
            Err(e) => return Err(e),
        };
        daemon_sets.insert((ns, name), found);
    }
    let opts = Options {
        force: args.force,
        ignore_daemonsets: args.ignore_daemonsets,
        delete_emptydir_data: args.delete_emptydir_data,
    };
    Ok(plan(&pods, opts, &daemon_sets))
}

/// One pod being evicted: who it is, and whether (and when) its eviction must be sent again.
struct Evicting {
    namespace: String,
    name: String,
    uid: String,
    /// `Some(when)`: the eviction was refused for now (429) and is sent again then.
    retry_at: Option<Instant>,
}

/// Sends one eviction (or delete): `Ok(true)` accepted, `Ok(false)` the pod is already gone.
async fn evict(ctx: &mut Ctx, p: &Evicting, args: &Args) -> Result<bool> {
    let path = format!("/api/v1/namespaces/{}/pods/{}", p.namespace, client::encode(&p.name));
    let mut options = json!({});
    if args.grace_period >= 0 {
        options["gracePeriodSeconds"] = json!(args.grace_period);
    }
    let req = if args.disable_eviction {
        request(Method::DELETE, &path, super::json_body(&options))
    } else {
        let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": p.name, "namespace": p.namespace}, "deleteOptions": options});
        request(Method::POST, &format!("{path}/eviction"), super::json_body(&eviction))
    };
    match ctx.bytes(req).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// kubectl's `evictPods`/`deletePods` and `waitForDelete`: every pod is evicted, then polled
/// every second until it is gone (or replaced by another of the same name), within `timeout`
/// (zero: no limit). Returns the errors, one per pod that did not go.
async fn evict_pods(ctx: &mut Ctx, pods: &[Value], args: &Args, timeout: Duration) -> Result<Vec<String>> {
    let started = Instant::now();
    let expired = || !timeout.is_zero() && started.elapsed() >= timeout;
    let verb = if args.disable_eviction { "deleted" } else { "evicted" };
    let mut errors = Vec::new();
    let mut waiting: Vec<Evicting> = pods
        .iter()
        .map(|p| Evicting {
            namespace: p["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
            name: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            uid: p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            retry_at: Some(Instant::now()),
        })
        .collect();
    loop {
        // Send the evictions that are due.
        let mut i = 0;
        while i < waiting.len() {
            if waiting[i].retry_at.is_none_or(|at| Instant::now() < at) {
                i += 1;
                continue;
            }
            let p = &waiting[i];
            if !args.disable_eviction {
                writeln!(ctx.out, "evicting pod {}/{}", p.namespace, p.name)?;
            }
            if expired() {
                errors.push(format!(
                    "error when evicting pods/{:?} -n {:?}: global timeout reached: {}",
                    p.name,
                    p.namespace,
                    go_duration(timeout)
                ));
                waiting.remove(i);
                continue;
            }
            match evict(ctx, p, args).await {
                Ok(true) => {
                    waiting[i].retry_at = None;
                    i += 1;
                }
                Ok(false) => {
                    waiting.remove(i);
                }
                Err(e @ Error::Status(_)) if matches!(&e, Error::Status(s) if s.code == 429) => {
                    writeln!(
                        ctx.err,
                        "error when evicting pods/{:?} -n {:?} (will retry after 5s): {}",
                        p.name,
                        p.namespace,
                        message(&e)
                    )?;
                    waiting[i].retry_at = Some(Instant::now() + Duration::from_secs(5));
                    i += 1;
                }
                Err(e @ (Error::Status(_) | Error::Msg(_))) => {
                    let what = if args.disable_eviction { "deleting" } else { "evicting" };
                    errors.push(format!("error when {what} pods/{:?} -n {:?}: {}", p.name, p.namespace, message(&e)));
                    waiting.remove(i);
                }
                Err(e) => return Err(e),
            }
        }
        // Wait for the accepted ones to go.
        let mut i = 0;
        while i < waiting.len() {
            if waiting[i].retry_at.is_some() {
                i += 1;
                continue;
            }
            let p = &waiting[i];
            let path = format!("/api/v1/namespaces/{}/pods/{}", p.namespace, client::encode(&p.name));
            match ctx.get_json(&path, false).await {
                Err(e) if e.is_not_found() => {}
                Ok(pod) if pod["metadata"]["uid"].as_str() != Some(p.uid.as_str()) => {}
                Ok(_) if expired() => {
                    errors.push(format!(
                        "error when waiting for pod {:?} in namespace {:?} to terminate: global timeout reached: {}",
                        p.name,
                        p.namespace,
                        go_duration(timeout)
                    ));
                    waiting.remove(i);
                    continue;
                }
                Ok(_) => {
                    i += 1;
                    continue;
                }
                Err(e @ (Error::Status(_) | Error::Msg(_))) => {
                    errors.push(format!(
                        "error when waiting for pod {:?} in namespace {:?} to terminate: {}",
                        p.name,
                        p.namespace,
                        message(&e)
                    ));
                    waiting.remove(i);
                    continue;
                }
                Err(e) => return Err(e),
            }
            writeln!(ctx.out, "pod/{} {verb}", p.name)?;
            waiting.remove(i);
        }
        if waiting.is_empty() {
            return Ok(errors);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// kubectl's `deleteOrEvictPodsSimple` for one node: `Err` holds the node's errors.
async fn drain_node(ctx: &mut Ctx, node: &str, args: &Args, timeout: Duration) -> Result<Vec<String>> {
    let plan = pods_for_deletion(ctx, node, args).await?;
    if !plan.errors.is_empty() {
        return Ok(plan.errors);
    }
    if !plan.warnings.is_empty() {
        writeln!(ctx.err, "Warning: {}", plan.warnings)?;
    }
    let errors = evict_pods(ctx, &plan.pods, args, timeout).await?;
    if errors.is_empty() {
        return Ok(errors);
    }
    let pending = pods_for_deletion(ctx, node, args).await?;
    if !pending.pods.is_empty() {
        writeln!(ctx.err, "There are pending pods in node {node:?} when an error occurred: {}", aggregate(&errors))?;
        for p in &pending.pods {
            writeln!(ctx.err, "pod/{}", p["metadata"]["name"].as_str().unwrap_or(""))?;
        }
    }
    if !pending.errors.is_empty() {
        writeln!(
            ctx.err,
            "Following errors occurred while getting the list of pods to delete:\n{}",
            aggregate(&pending.errors)
        )?;
    }
    Ok(errors)
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let timeout = parse_duration(&args.timeout).map_err(Error::Msg)?;
    let nodes = cordon::nodes(ctx, "drain", &args.nodes, args.selector.as_ref()).await?;
    cordon::cordon_nodes(ctx, &nodes, true).await?;
    let mut failed: Vec<(String, Vec<String>)> = Vec::new();
    for node in &nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        let errors = drain_node(ctx, &name, &args, timeout).await?;
        if errors.is_empty() {
            writeln!(ctx.out, "node/{name} drained")?;
        } else {
            writeln!(
                ctx.err,
                "error: unable to drain node {name:?} due to error: {}, continuing command...",
                aggregate(&errors)
            )?;
            failed.push((name, errors));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    writeln!(ctx.err, "There are pending nodes to be drained:")?;
    for (name, _) in &failed {
        writeln!(ctx.err, " {name}")?;
    }
    // kubectl's CheckErr: one node's errors one per line; several nodes' one line each.
    let lines: Vec<String> = match failed.as_slice() {
        [(_, errors)] => errors.clone(),
        many => many.iter().map(|(_, errors)| aggregate(errors)).collect(),
    };
    for l in lines {
        writeln!(ctx.err, "{l}")?;
    }
    Err(Error::Reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")}, "spec": {}, "status": {"phase": "Running"}});
        for (k, v) in extra.as_object().unwrap() {
            for (k2, v2) in v.as_object().unwrap() {
                p[k][k2] = v2.clone();
            }
        }
        p
    }

    fn owned(kind: &str) -> Value {
        json!({"metadata": {"ownerReferences": [{"kind": kind, "name": "owner", "controller": true}]}})
    }

    #[test]
    fn filters_refuse_and_warn_like_kubectl() {
        let none = DaemonSets::new();
        let rs = pod("web-1", owned("ReplicaSet"));
        let bare = pod("lonely", json!({}));
        let scratch = pod(
            "scratch",
            json!({"spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]}, "metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "o", "controller": true}]}}),
        );
        let ds = pod("agent", owned("DaemonSet"));
        let done = pod("job-done", json!({"status": {"phase": "Succeeded"}}));
        let mirror = pod("static", json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}));
        let all = [rs.clone(), bare.clone(), scratch.clone(), done.clone(), mirror];
        let p = plan(&all, Options::default(), &none);
        assert_eq!(p.pods, [rs.clone(), done.clone()]);
        assert_eq!(
            p.errors,
            [
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/scratch",
                "cannot delete cannot delete Pods that declare no controller (use --force to override): default/lonely",
            ]
        );
        let opts = Options { force: true, ignore_daemonsets: false, delete_emptydir_data: true };
        let p = plan(&all, opts, &none);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.pods.len(), 4, "the mirror pod is skipped");
        // The emptyDir warning of a managed pod is dropped by the later filter, as in kubectl.
        assert_eq!(p.warnings, "deleting Pods that declare no controller: default/lonely");
        let mut found = DaemonSets::new();
        found.insert(("default".into(), "owner".into()), Ok(()));
        let p = plan(std::slice::from_ref(&ds), Options::default(), &found);
        assert_eq!(
            p.errors,
            ["cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/agent"]
        );
        let p = plan(std::slice::from_ref(&ds), Options { ignore_daemonsets: true, ..Options::default() }, &found);
        assert_eq!((p.pods.len(), p.warnings.as_str()), (0, "ignoring DaemonSet-managed Pods: default/agent"));
        let mut gone = DaemonSets::new();
        gone.insert(("default".into(), "owner".into()), Err((true, "daemonsets.apps \"owner\" not found".into())));
        let p = plan(std::slice::from_ref(&ds), Options { force: true, ..Options::default() }, &gone);
        assert_eq!(p.pods.len(), 1, "an orphaned DaemonSet pod goes with --force");
    }

    #[test]
    fn errors_and_durations_print_like_go() {
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into(), "a".into()]), "[a, b]");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }
}
