//! Docker Swarm on this machine, for the deploy benchmark: a private `dockerd` (Debian's
//! `docker.io`) in its own network namespace, on its own containerd, torn down on drop.
//!
//! Nothing here touches the host's Docker: dockerd gets its own `--data-root`, `--exec-root`,
//! `--pidfile`, socket, empty `--config-file` and cgroup parent, runs on a private
//! [`Containerd`] (never the system's or a test's), and is started inside a network namespace of
//! its own ([`NodeNet`], entered with `setns` only, so it still sees the host's cgroup mounts)
//! whose default route is removed: whatever Swarm creates (`docker_gwbridge`, the ingress
//! sandbox, any rule) lives and dies with that namespace, and nothing it sends can leave it.
//! `--iptables=false --ip6tables=false --bridge=none`; services run with `--network host`
//! (that namespace), so no overlay network is used. Swarm's pull check before each task start
//! is switched off (`DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`, `--no-resolve-image`): the image
//! exists only locally, and no registry is ever contacted. Only processes started here are
//! signalled, by PID.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use skerry_tests::containerd::Containerd;
use skerry_tests::netns::NodeNet;

use crate::http;

pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Docker 20.10's API version (Debian 12's `docker.io`); `status=true` on service lists needs 1.41.
const API: &str = "/v1.41";
/// How often a Swarm run is polled: task lists of 100 tasks are large, and dockerd shares the
/// two cores with the measured work, so this is coarser than Skerry's 5 ms.
const SWARM_POLL: Duration = Duration::from_millis(20);

/// Installs Debian's `docker.io` when dockerd or its client is missing (only called with
/// `--swarm`). A temporary `policy-rc.d` keeps the package from starting the host's dockerd.
pub fn ensure_installed() -> Result<()> {
    if Path::new(DOCKERD).exists() && Path::new(DOCKER).exists() {
        return Ok(());
    }
    eprintln!("installing Debian's docker.io (dockerd for the Swarm comparison)");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let made_policy = !policy.exists();
    if made_policy {
        std::fs::write(
            policy,
            "#!/bin/sh\n# skerry-bench: do not start services while installing docker.io\nexit 101\n",
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "docker.io"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status();
    if made_policy {
        let _ = std::fs::remove_file(policy);
    }
    if !status.context("running apt-get")?.success() {
        bail!("`apt-get install -y --no-install-recommends docker.io` failed; run `apt-get update` first");
    }
    if !Path::new(DOCKERD).exists() {
        bail!("{DOCKERD} is still missing after installing docker.io");
    }
    Ok(())
}

/// The root namespace's links and nftables ruleset, to show that the Swarm run left them as
/// they were.
#[derive(Clone, Debug, PartialEq)]
pub struct HostNet {
    links: BTreeSet<String>,
    ruleset: String,
}

impl HostNet {
    pub fn read() -> HostNet {
        let out = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let links_json: Value =
            serde_json::from_str(&out("/usr/sbin/ip", &["-j", "link", "show"])).unwrap_or(Value::Null);
        let links = links_json
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect();
        HostNet { links, ruleset: out("/usr/sbin/nft", &["list", "ruleset"]) }
    }

    /// Lines that say what differs from `before` (empty when nothing does).
    pub fn diff(before: &HostNet, after: &HostNet) -> Vec<String> {
        let mut d = Vec::new();
        for l in after.links.difference(&before.links) {
            d.push(format!("link {l} appeared"));
        }
        for l in before.links.difference(&after.links) {
            d.push(format!("link {l} disappeared"));
        }
        if before.ruleset != after.ruleset {
            let b: BTreeSet<&str> = before.ruleset.lines().map(str::trim).collect();
            let a: BTreeSet<&str> = after.ruleset.lines().map(str::trim).collect();
            d.extend(a.difference(&b).map(|l| format!("nft + {l}")));
            d.extend(b.difference(&a).map(|l| format!("nft - {l}")));
        }
        d
    }
}

/// A running single-node swarm. Dropping it leaves the swarm, stops dockerd (SIGTERM, then
/// SIGKILL, by PID), stops its containerd (shims and containers with it), unmounts what is left
/// under its directory (the ingress sandbox's namespace file), removes the directory, its
/// cgroups, `/run/docker` if dockerd made it, and the network namespace.
pub struct Swarm {
    dockerd: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    /// Whether `/run/docker` existed before (dockerd creates `/run/docker/plugins` whatever its
    /// exec-root).
    run_docker_existed: bool,
    containerd: Option<Containerd>,
    net: Option<NodeNet>,
    pub version: String,
}

impl Swarm {
    /// Starts containerd, dockerd and `docker swarm init`; imports `rootfs` as `image` (and
    /// tags it `image2`).
    pub async fn start(rootfs: &Path, image: &str, image2: &str) -> Result<Swarm> {
        let run_docker_existed = Path::new("/run/docker").exists();
        let containerd =
            tokio::task::spawn_blocking(Containerd::start).await.context("starting dockerd's containerd")?;
        let net = tokio::task::spawn_blocking(|| {
            let net = NodeNet::create();
            // Nothing in this namespace may reach past it: no default route.
            net.ip(&["route", "del", "default"]);
            net
        })
        .await
        .context("creating Swarm's network namespace")?;
        let dir = tempfile::Builder::new().prefix("sk-swarm-").tempdir_in("/tmp")?.keep();
        let socket = dir.join("docker.sock");
        let mut s = Swarm {
            dockerd: None,
            dir,
            socket,
            run_docker_existed,
            containerd: Some(containerd),
            net: Some(net),
            version: String::new(),
        };
        s.spawn_dockerd()?;
        s.wait_ready().await?;
        s.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).await?;
        s.docker(&["import", &rootfs.to_string_lossy(), image]).await?;
        s.docker(&["tag", image, image2]).await?;
        s.version = s.docker(&["version", "--format", "{{.Server.Version}}"]).await?.trim().to_string();
        Ok(s)
    }

    fn spawn_dockerd(&mut self) -> Result<()> {
        let d = &self.dir;
        std::fs::write(d.join("daemon.json"), "{}")?;
        let ctd = self.containerd.as_ref().expect("containerd");
        let cgroup_parent = format!("{}/docker", ctd.cgroup_parent());
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let mut cmd = self.net.as_ref().expect("net").command(DOCKERD);
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--containerd")
            .arg(ctd.socket())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--cgroup-parent", &cgroup_parent])
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.dockerd = Some(cmd.spawn().context("spawning dockerd")?);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.dockerd.as_mut().expect("dockerd").try_wait()? {
                self.dockerd = None;
                bail!("dockerd exited at start ({status}):\n{}", self.log_tail(30));
            }
            if let Ok((200, _)) = http::get(&self.socket, "/_ping").await {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("dockerd did not answer /_ping within 60 s:\n{}", self.log_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.dockerd.as_ref().map(Child::id)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the docker client (Debian's, matching the daemon) against this dockerd.
    pub async fn docker(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new(DOCKER)
            .args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::null())
            .output()
            .await
            .context("running docker")?;
        if !out.status.success() {
            bail!("docker {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = http::get(&self.socket, &format!("{API}{path}")).await?;
        if code != 200 {
            bail!("GET {path}: HTTP {code}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("parsing GET {path}"))
    }

    /// The service's tasks: (image, desired state, state).
    async fn tasks(&self, service: &str) -> Result<Vec<(String, String, String)>> {
        let filters = urlencode(&format!(r#"{{"service":["{service}"]}}"#));
        let v = self.api(&format!("/tasks?filters={filters}")).await?;
        let s = |t: &Value, p: &str| t.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|t| (s(t, "/Spec/ContainerSpec/Image"), s(t, "/DesiredState"), s(t, "/Status/State")))
            .collect())
    }

    /// Runs a docker command (timed from its start) and polls until `done` holds for the
    /// service's tasks.
    async fn timed(
        &self,
        args: &[&str],
        service: &str,
        timeout: Duration,
        done: impl Fn(&[(String, String, String)]) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        let mut cli = tokio::process::Command::new(DOCKER)
            .args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running docker")?;
        let mut exited = false;
        loop {
            if !exited {
                if let Some(status) = cli.try_wait()? {
                    if !status.success() {
                        let out = cli.wait_with_output().await?;
                        bail!(
                            "docker {} failed ({status}): {}",
                            args.join(" "),
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                    exited = true;
                }
            }
            if exited {
                let tasks = self.tasks(service).await?;
                if done(&tasks) {
                    return Ok(started.elapsed());
                }
                if started.elapsed() > timeout {
                    let running = tasks.iter().filter(|t| t.2 == "running").count();
                    bail!(
                        "swarm: `docker {}` not done after {}s ({running} tasks running):\n{}",
                        args.join(" "),
                        timeout.as_secs(),
                        self.log_tail(20)
                    );
                }
            }
            tokio::time::sleep(SWARM_POLL).await;
        }
    }

    /// `docker service create --replicas n` until all n tasks are running.
    pub async fn create(
        &self,
        service: &str,
        n: usize,
        image: &str,
        command: &[&str],
        timeout: Duration,
    ) -> Result<Duration> {
        let replicas = n.to_string();
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            service,
            "--replicas",
            &replicas,
            "--network",
            "host",
            image,
        ];
        args.extend_from_slice(command);
        self.timed(&args, service, timeout, |tasks| {
            tasks.iter().filter(|(_, desired, state)| desired == "running" && state == "running").count() == n
        })
        .await
    }

    /// `docker service update --image new` (with `extra` flags) until n tasks of `new` run and
    /// no task of another image does — the rollout is over, whatever Swarm's 5 s monitor says.
    pub async fn update(
        &self,
        service: &str,
        n: usize,
        new: &str,
        extra: &[&str],
        timeout: Duration,
    ) -> Result<Duration> {
        let mut args = vec!["service", "update", "--detach", "--no-resolve-image", "--image", new];
        args.extend_from_slice(extra);
        args.push(service);
        self.timed(&args, service, timeout, |tasks| {
            let new_running = tasks
                .iter()
                .filter(|(img, desired, state)| img == new && desired == "running" && state == "running")
                .count();
            let old_running = tasks.iter().filter(|(img, _, state)| img != new && state == "running").count();
            new_running == n && old_running == 0
        })
        .await
    }

    /// `docker service rm` until none of its containers exists any more.
    pub async fn remove(&self, service: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        self.docker(&["service", "rm", service]).await?;
        let filters = urlencode(&format!(r#"{{"label":["com.docker.swarm.service.name={service}"]}}"#));
        loop {
            let v = self.api(&format!("/containers/json?all=1&filters={filters}")).await?;
            if v.as_array().is_none_or(|a| a.is_empty()) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("swarm: containers of {service} still there {}s after `docker service rm`", timeout.as_secs());
            }
            tokio::time::sleep(SWARM_POLL).await;
        }
    }
}

/// What a [`Swarm`] made on the host, to check after its drop that none of it is left.
pub struct Footprint {
    netns: String,
    root_veth: String,
    dirs: Vec<PathBuf>,
    cgroup_parent: String,
}

impl Footprint {
    /// What is still there (empty when the teardown removed everything).
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if Path::new("/run/netns").join(&self.netns).exists() {
            left.push(format!("network namespace {}", self.netns));
        }
        if Command::new("/usr/sbin/ip")
            .args(["link", "show", &self.root_veth])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            left.push(format!("link {}", self.root_veth));
        }
        for d in &self.dirs {
            if d.exists() {
                left.push(format!("directory {}", d.display()));
            }
            let needle = d.to_string_lossy().into_owned();
            for (pid, argv) in crate::sys::processes() {
                if argv.iter().any(|a| a.contains(&needle)) {
                    left.push(format!("process {pid} ({})", argv.join(" ")));
                }
            }
        }
        let rel = self.cgroup_parent.trim_start_matches('/');
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            if h.path().join(rel).is_dir() {
                left.push(format!("cgroup {}", h.path().join(rel).display()));
            }
        }
        left
    }
}

impl Swarm {
    pub fn footprint(&self) -> Footprint {
        let net = self.net.as_ref().expect("net");
        let ctd = self.containerd.as_ref().expect("containerd");
        Footprint {
            netns: net.name().to_string(),
            root_veth: net.root_veth().to_string(),
            dirs: vec![self.dir.clone(), ctd.dir().to_path_buf()],
            cgroup_parent: ctd.cgroup_parent().to_string(),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            // Leaving first makes dockerd drop the ingress sandbox and gateway bridge itself.
            let _ = Command::new(DOCKER)
                .args(["swarm", "leave", "--force"])
                .env("DOCKER_HOST", self.host())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !exited {
                // SAFETY: as above.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
            }
        }
        // containerd's guard kills the shims and containers it started and removes its cgroup
        // parent, which holds dockerd's cgroup parent.
        drop(self.containerd.take());
        skerry_tests::skerryd::unmount_below(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
        if !self.run_docker_existed {
            let _ = std::fs::remove_dir("/run/docker/plugins");
            let _ = std::fs::remove_dir("/run/docker");
        }
        drop(self.net.take());
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{urlencode, HostNet};

    #[test]
    fn host_net_diff_names_links_and_rules() {
        let before =
            HostNet { links: ["lo".to_string(), "eth0".to_string()].into(), ruleset: "table inet a {\n}\n".into() };
        assert!(HostNet::diff(&before, &before.clone()).is_empty());
        let after = HostNet {
            links: ["lo".to_string(), "docker0".to_string()].into(),
            ruleset: "table inet a {\n}\ntable ip nat {\n}\n".into(),
        };
        let d = HostNet::diff(&before, &after);
        assert!(d.contains(&"link docker0 appeared".to_string()), "{d:?}");
        assert!(d.contains(&"link eth0 disappeared".to_string()), "{d:?}");
        assert!(d.contains(&"nft + table ip nat {".to_string()), "{d:?}");
    }

    #[test]
    fn encodes_filters() {
        assert_eq!(urlencode(r#"{"service":["b"]}"#), "%7B%22service%22%3A%5B%22b%22%5D%7D");
    }
}
