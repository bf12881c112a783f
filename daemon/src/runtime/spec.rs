//! Pure OCI runtime-spec rendering and Kubernetes command/env merging.
//!
//! The spec is built as `serde_json::Value` (no `oci-spec` dependency) and is
//! modelled on containerd's default Unix spec: Docker's default capabilities,
//! `noNewPrivileges`, no rlimits (a host hard limit below the value would make
//! runc fail), the usual /proc, /dev, /sys mounts, masked and read-only paths,
//! and a device cgroup that denies everything runc does not allow by default.
//!
//! Users: the rootfs is not mounted when the spec is rendered, so names cannot
//! be looked up in its /etc/passwd. Supported are `""`/`root` (0:0), `nobody`
//! (65534:65534), numeric `uid` (gid 0, as Docker does without a passwd entry)
//! and numeric `uid:gid`. Check with [`parse_user`] first; [`build_spec`] maps
//! anything else to nobody rather than to root.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{ImageConfig, RuntimeError};

/// A bind mount into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// Everything [`build_spec`] needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecInput {
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Working directory; empty means `/`.
    pub cwd: String,
    pub user: Option<String>,
    pub hostname: String,
    /// Join these namespaces by path (the pod sandbox's); `None` means a new one.
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// Share the host's network namespace (hostNetwork); overrides `netns`.
    pub host_network: bool,
    pub mounts: Vec<BindMount>,
    /// e.g. `/skerry/pod-uid/container`; empty leaves it to runc.
    pub cgroups_path: String,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Memory + swap limit in bytes (v1 `memory.memsw.limit_in_bytes`; runc turns it into
    /// `memory.swap.max` = swap − limit on v2). Equal to the limit means no swap; set it only
    /// where the host has swap accounting, or runc fails to write the file.
    pub memory_swap: Option<i64>,
    /// CPU shares (cgroup v1 semantics; runc converts them to `cpu.weight` on v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota and period in µs (`cpu.cfs_quota_us`/`cpu.cfs_period_us`; `cpu.max` on v2).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Parses a container user: `root`, `nobody`, `uid` or `uid:gid`.
pub fn parse_user(user: &str) -> Result<(u32, u32), RuntimeError> {
    let unsupported = || {
        RuntimeError::InvalidImage {
        image: String::new(),
        reason: format!("user {user:?} cannot be resolved before the container starts; use a numeric uid or uid:gid (runAsUser/runAsGroup)"),
    }
    };
    match user {
        "" | "root" => Ok((0, 0)),
        "nobody" => Ok((65534, 65534)),
        _ => match user.split_once(':') {
            Some((u, g)) => Ok((u.parse().map_err(|_| unsupported())?, g.parse().map_err(|_| unsupported())?)),
            None => Ok((user.parse().map_err(|_| unsupported())?, 0)),
        },
    }
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": destination, "type": kind, "source": source, "options": options})
}

fn default_mounts() -> Vec<Value> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ]
}

fn namespace(kind: &str, path: &Option<PathBuf>) -> Value {
    match path {
        Some(p) => json!({"type": kind, "path": p}),
        None => json!({"type": kind}),
    }
}

fn namespaces(input: &SpecInput) -> Vec<Value> {
    let mut ns = vec![
        json!({"type": "pid"}),
        namespace("ipc", &input.ipcns),
        namespace("uts", &input.utsns),
        json!({"type": "mount"}),
    ];
    if !input.host_network {
        ns.push(namespace("network", &input.netns));
    }
    ns
}

/// `linux.resources`: the device rule, then memory and CPU members only for values set (an
/// absent member leaves runc's default, unlimited).
fn resources(input: &SpecInput) -> Value {
    let mut r = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let mut memory = serde_json::Map::new();
    if let Some(limit) = input.memory_limit {
        memory.insert("limit".into(), json!(limit));
    }
    if let Some(swap) = input.memory_swap {
        memory.insert("swap".into(), json!(swap));
    }
    if !memory.is_empty() {
        r["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = input.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = input.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
    }
    if let Some(period) = input.cpu_period {
        cpu.insert("period".into(), json!(period));
    }
    if !cpu.is_empty() {
        r["cpu"] = Value::Object(cpu);
    }
    r
}

/// Renders the OCI runtime spec for one container.
pub fn build_spec(input: &SpecInput) -> Value {
    let (uid, gid) = parse_user(input.user.as_deref().unwrap_or("")).unwrap_or((65534, 65534));
    let mut mounts = default_mounts();
    for m in &input.mounts {
        let mode = if m.readonly { "ro" } else { "rw" };
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": ["rbind", "rprivate", mode]}));
    }
    let mut linux = json!({
        "resources": resources(input),
        "namespaces": namespaces(input),
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    });
    if !input.cgroups_path.is_empty() {
        linux["cgroupsPath"] = json!(input.cgroups_path);
    }
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": input.args,
            "env": input.env,
            "cwd": if input.cwd.is_empty() { "/" } else { input.cwd.as_str() },
            "capabilities": {
                "bounding": DEFAULT_CAPABILITIES,
                "effective": DEFAULT_CAPABILITIES,
                "permitted": DEFAULT_CAPABILITIES,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

/// Kubernetes' rules: `command` replaces the image's Entrypoint and drops its
/// Cmd; `args` replaces Cmd. Errors when nothing is left to run.
pub fn merge_command(image: &ImageConfig, command: &[String], args: &[String]) -> Result<Vec<String>, RuntimeError> {
    let merged: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (false, false) => command.iter().chain(args).cloned().collect(),
        (false, true) => command.to_vec(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if merged.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    Ok(merged)
}

/// Image env then container env; a container entry replaces the image's entry
/// with the same key in place, new keys are appended in order.
pub fn merge_env(image_env: &[String], container_env: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.to_string());
    let mut out: Vec<String> = Vec::with_capacity(image_env.len() + container_env.len());
    for e in image_env.iter().chain(container_env) {
        let k = key(e);
        match out.iter_mut().find(|x| key(x) == k) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn spec_snapshot() {
        let input = SpecInput {
            args: s(&["sh", "-c", "echo hi"]),
            env: s(&["PATH=/bin"]),
            cwd: "/work".into(),
            user: Some("1000:1001".into()),
            hostname: "web-0".into(),
            netns: Some("/run/skerry/netns/pod1".into()),
            ipcns: None,
            utsns: Some("/run/skerry/utsns/pod1".into()),
            host_network: false,
            mounts: vec![BindMount {
                source: "/var/lib/skerry/pods/p/hosts".into(),
                destination: "/etc/hosts".into(),
                readonly: true,
            }],
            cgroups_path: "/skerry/p/c".into(),
            memory_limit: Some(64 << 20),
            cpu_shares: None,
            ..Default::default()
        };
        let caps = json!(DEFAULT_CAPABILITIES);
        let expected = json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": false,
                "user": {"uid": 1000, "gid": 1001},
                "args": ["sh", "-c", "echo hi"],
                "env": ["PATH=/bin"],
                "cwd": "/work",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "web-0",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/skerry/pods/p/hosts", "options": ["rbind", "rprivate", "ro"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}], "memory": {"limit": 67108864}},
                "namespaces": [
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts", "path": "/run/skerry/utsns/pod1"},
                    {"type": "mount"},
                    {"type": "network", "path": "/run/skerry/netns/pod1"}
                ],
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
                "cgroupsPath": "/skerry/p/c"
            }
        });
        assert_eq!(build_spec(&input), expected);
    }

    #[test]
    fn resources_render_for_runc() {
        let spec = build_spec(&SpecInput {
            memory_limit: Some(32 << 20),
            memory_swap: Some(32 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            ..Default::default()
        });
        assert_eq!(
            spec["linux"]["resources"],
            json!({
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 33554432, "swap": 33554432},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000}
            })
        );
        let best_effort = build_spec(&SpecInput { cpu_shares: Some(2), ..Default::default() });
        assert_eq!(
            best_effort["linux"]["resources"],
            json!({"devices": [{"allow": false, "access": "rwm"}], "cpu": {"shares": 2}})
        );
        let none = build_spec(&SpecInput::default());
        assert_eq!(
            none["linux"]["resources"],
            json!({"devices": [{"allow": false, "access": "rwm"}]}),
            "no empty members"
        );
    }

    #[test]
    fn host_network_omits_the_network_namespace() {
        let spec = build_spec(&SpecInput { host_network: true, netns: Some("/x".into()), ..Default::default() });
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().all(|n| n["type"] != "network"));
        assert_eq!(spec["process"]["cwd"], "/");
        assert!(spec["linux"].get("cgroupsPath").is_none());
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("").unwrap(), (0, 0));
        assert_eq!(parse_user("root").unwrap(), (0, 0));
        assert_eq!(parse_user("nobody").unwrap(), (65534, 65534));
        assert_eq!(parse_user("1000").unwrap(), (1000, 0));
        assert_eq!(parse_user("1000:50").unwrap(), (1000, 50));
        assert!(parse_user("www-data").is_err());
        let spec = build_spec(&SpecInput { user: Some("www-data".into()), ..Default::default() });
        assert_eq!(spec["process"]["user"], json!({"uid": 65534, "gid": 65534}));
    }

    #[test]
    fn command_merging_follows_kubernetes() {
        let image = ImageConfig { entrypoint: s(&["/entry"]), cmd: s(&["a", "b"]), ..Default::default() };
        assert_eq!(merge_command(&image, &[], &[]).unwrap(), s(&["/entry", "a", "b"]));
        assert_eq!(merge_command(&image, &s(&["sh"]), &[]).unwrap(), s(&["sh"]));
        assert_eq!(merge_command(&image, &[], &s(&["x"])).unwrap(), s(&["/entry", "x"]));
        assert_eq!(merge_command(&image, &s(&["sh"]), &s(&["-c", "x"])).unwrap(), s(&["sh", "-c", "x"]));
        let cmd_only = ImageConfig { cmd: s(&["sh"]), ..Default::default() };
        assert_eq!(merge_command(&cmd_only, &[], &s(&["top"])).unwrap(), s(&["top"]));
        assert!(matches!(merge_command(&ImageConfig::default(), &[], &[]), Err(RuntimeError::NoCommand)));
    }

    #[test]
    fn env_merging_lets_the_container_win_in_place() {
        let merged = merge_env(&s(&["PATH=/bin", "A=1", "B=2"]), &s(&["A=x", "C=3"]));
        assert_eq!(merged, s(&["PATH=/bin", "A=x", "B=2", "C=3"]));
        assert_eq!(merge_env(&[], &s(&["X=1", "X=2"])), s(&["X=2"]));
    }
}
