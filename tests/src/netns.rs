//! A network namespace per test node, wired to the root namespace by one veth pair, or to a
//! cluster's test switch.
//!
//! [`NodeNet::create`] makes `sk-n<6 hex>` (with `ip netns add`), a veth pair whose root end
//! `sk<6 hex>r` holds `10.250.X.Y+1/30` and whose node end `eth0` holds `+2/30`, brings `lo` and
//! `eth0` up and routes the namespace's default through the root end — so a daemon inside
//! detects `+2` as its node address. The root namespace gets nothing but the connected /30
//! route; `ip_forward` is never touched there. Dropping the guard removes the veth pair and
//! the namespace (its `/run/netns` mount too), also when the test failed.
//!
//! [`Switch::create`] makes a cluster's LAN without touching the root namespace at all: a
//! "switch" namespace `sk-s<tag>` holding one bridge `sk-b<tag>` (no address), and
//! [`Switch::attach`] makes node namespaces `sk-n<tag>-<i>` whose `eth0` is joined to that bridge
//! by a veth (the switch's end is the port `sk-p<tag>-<i>`) and holds `10.251.X.i/24`. The node
//! namespaces get no default route, so a connection to anything outside the /24 fails at once
//! with "network unreachable". `<tag>` is 6 hex digits whose first two are X: one /24 of
//! 10.251.0.0/16 per cluster, reserved by the switch namespace's name so that parallel test
//! processes never share one. A port taken down ([`Switch::set_port`]) is a pulled cable.
//!
//! Everything a test sends goes to loopback or to addresses inside namespaces made here
//! (DESIGN.md, "Network safety for tests").

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

const IP: &str = "/usr/sbin/ip";

/// Serialises address choice and creation inside one test process.
static CREATE: Mutex<()> = Mutex::new(());

/// Guard owning one node's network namespace and veth pair.
#[derive(Debug)]
pub struct NodeNet {
    name: String,
    uplink: Uplink,
    node_ip: Ipv4Addr,
}

/// Where a node's `eth0` leads.
#[derive(Debug)]
enum Uplink {
    /// A veth whose other end is in the root namespace, with the node's gateway address.
    Root { veth: String, ip: Ipv4Addr },
    /// A port of a [`Switch`]'s bridge, in the switch's namespace.
    Switch { ns: String, port: String },
}

/// Six random lowercase hex digits.
pub fn random_hex6() -> String {
    let mut b = [0u8; 3];
    use std::io::Read;
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("reading /dev/urandom");
    hex::encode(b)
}

/// Runs `ip ARGS`; `Err(stderr)` unless it exits 0.
pub(crate) fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(IP).args(args).output().map_err(|e| format!("running {IP}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Every IPv4 (address, prefix length) of the root namespace's interfaces.
fn root_addresses() -> Vec<(Ipv4Addr, u8)> {
    let text = ip(&["-j", "-4", "addr", "show"]).unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("`ip -j addr` is not JSON ({e}): {text}"));
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| Some((a["local"].as_str()?.parse().ok()?, a["prefixlen"].as_u64()? as u8)))
        .collect()
}

fn network(ip: Ipv4Addr, len: u8) -> u32 {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len as u32) };
    u32::from(ip) & mask
}

/// Whether the two prefixes share any address.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let len = a.1.min(b.1);
    network(a.0, len) == network(b.0, len)
}

/// Enters the network namespace at `path` on the calling thread (or process, after fork).
fn enter(file: &File) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open namespace fd.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl NodeNet {
    /// Creates the namespace, the veth pair and the addresses; panics (after removing what was
    /// made) when `ip` is missing or a step fails.
    pub fn create() -> NodeNet {
        assert!(unsafe { libc::geteuid() } == 0, "test nodes need root (network namespaces)");
        assert!(Path::new(IP).exists(), "{IP} is missing; install it with `apt-get install -y iproute2`");
        let _lock = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let mut last_err = String::new();
        for _ in 0..10 {
            let tag = random_hex6();
            let used = root_addresses();
            // A /30 inside 10.250.0.0/16 no interface of the root namespace overlaps.
            let slot = u32::from_str_radix(&tag[2..], 16).unwrap() % 16384;
            let base = u32::from(Ipv4Addr::new(10, 250, 0, 0)) + slot * 4;
            let subnet = (Ipv4Addr::from(base), 30);
            if used.iter().any(|a| overlaps(*a, subnet)) {
                continue;
            }
            let net = NodeNet {
                name: format!("sk-n{tag}"),
                uplink: Uplink::Root { veth: format!("sk{tag}r"), ip: Ipv4Addr::from(base + 1) },
                node_ip: Ipv4Addr::from(base + 2),
            };
            if Path::new("/run/netns").join(&net.name).exists() {
                continue;
            }
            // From here the guard exists, so a failing step is cleaned up by its drop.
            match net.build() {
                Ok(()) => return net,
                Err(e) => last_err = e,
            }
        }
        panic!("could not create a test node's network namespace: {last_err}");
    }

    fn build(&self) -> Result<(), String> {
        let n = self.name.as_str();
        ip(&["netns", "add", n])?;
        match &self.uplink {
            Uplink::Root { veth, ip: gw } => {
                ip(&["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n])?;
                ip(&["addr", "add", &format!("{gw}/30"), "dev", veth])?;
                ip(&["link", "set", veth, "up"])?;
                self.configure_eth0(30)?;
                ip(&["-n", n, "route", "add", "default", "via", &gw.to_string(), "dev", "eth0"])?;
            }
            Uplink::Switch { ns, port } => {
                let bridge = format!("sk-b{}", &ns["sk-s".len()..]);
                ip(&["-n", ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n])?;
                ip(&["-n", ns, "link", "set", port, "master", &bridge])?;
                ip(&["-n", ns, "link", "set", port, "up"])?;
                self.configure_eth0(24)?;
            }
        }
        Ok(())
    }

    /// `lo` and `eth0` up, the node's address on `eth0`.
    fn configure_eth0(&self, prefix: u8) -> Result<(), String> {
        let n = self.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "addr", "add", &format!("{}/{prefix}", self.node_ip), "dev", "eth0"])?;
        ip(&["-n", n, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// `sk-n<6 hex>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// The node's address (`eth0` inside the namespace).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// The root namespace's end of the veth pair (the node's default gateway); panics for a
    /// node on a [`Switch`], which has none.
    pub fn root_ip(&self) -> Ipv4Addr {
        match &self.uplink {
            Uplink::Root { ip, .. } => *ip,
            Uplink::Switch { .. } => panic!("{} is on a test switch: it has no root-namespace gateway", self.name),
        }
    }

    /// The root end's interface name, `sk<6 hex>r`; panics for a node on a [`Switch`].
    pub fn root_veth(&self) -> &str {
        match &self.uplink {
            Uplink::Root { veth, .. } => veth,
            Uplink::Switch { .. } => panic!("{} is on a test switch: it has no root-namespace veth", self.name),
        }
    }

    fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()))
    }

    /// Runs `f` on a thread that entered this namespace; returns its value (a panic in `f`
    /// panics here).
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let ns = self.open();
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&ns).unwrap_or_else(|e| panic!("setns into the node namespace: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Makes `cmd` start inside this namespace (a `pre_exec` that `setns`es).
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let ns = self.open();
        // SAFETY: setns is async-signal-safe; the closure only makes that one syscall.
        unsafe {
            cmd.pre_exec(move || enter(&ns));
        }
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter_on_spawn(&mut cmd);
        cmd
    }

    /// `ip -n <name> ARGS`; panics unless it succeeds; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Names of the interfaces inside the namespace.
    pub fn links(&self) -> Vec<String> {
        let text = self.ip(&["-j", "link", "show"]);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("`ip -j link` is not JSON ({e}): {text}"));
        v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        // Deleting one end removes the pair; the namespace goes when its last user (a daemon,
        // a thread) has gone, its bridge and pod veths with it.
        let in_ns: &[&str] = match &self.uplink {
            Uplink::Root { veth, .. } => &[veth],
            Uplink::Switch { ns, port } if Path::new("/run/netns").join(ns).exists() => &["-n", ns, port],
            Uplink::Switch { .. } => &[],
        };
        if let Some((link, ns)) = in_ns.split_last() {
            if ip(&[ns, &["link", "show", link]].concat()).is_ok() {
                if let Err(e) = ip(&[ns, &["link", "delete", link]].concat()) {
                    eprintln!("warning: {e}");
                }
            }
        }
        if self.path().exists() {
            if let Err(e) = ip(&["netns", "delete", &self.name]) {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// The /16 the cluster switches take their /24s from (10.250.0.0/16 is [`NodeNet::create`]'s).
const SWITCH_RANGE: [u8; 2] = [10, 251];

/// Guard owning a cluster's LAN: the switch namespace `sk-s<tag>` and its bridge `sk-b<tag>`.
/// Dropping it deletes the namespace (the bridge and any port left go with it). Drop the
/// [`NodeNet`]s attached to it first.
#[derive(Debug)]
pub struct Switch {
    tag: String,
    octet: u8,
}

impl Switch {
    /// Picks a /24 of 10.251.0.0/16 that no other switch (of any process) and no root-namespace
    /// address uses, and makes the switch namespace and its bridge; panics (after removing what
    /// was made) when a step fails.
    ///
    /// The switch namespace's name is the /24's reservation: a switch is made first and then
    /// kept only if no other `sk-s<same octet>…` exists. Of two processes racing for one /24 the
    /// later to look sees the other, so both may retry but never both keep it. (`ip netns add`
    /// itself `flock`s `/run/netns`, so a lock of ours there would deadlock.)
    pub fn create() -> Switch {
        assert!(unsafe { libc::geteuid() } == 0, "test clusters need root (network namespaces)");
        assert!(Path::new(IP).exists(), "{IP} is missing; install it with `apt-get install -y iproute2`");
        let switches = || -> Vec<String> {
            std::fs::read_dir("/run/netns")
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default()
        };
        let used = root_addresses();
        let mut last_err = String::from("every /24 of 10.251.0.0/16 is taken");
        for _ in 0..64 {
            let tag = random_hex6();
            let octet = u8::from_str_radix(&tag[..2], 16).unwrap();
            let sw = Switch { tag, octet };
            let prefix = format!("sk-s{}", &sw.tag[..2]);
            let others = |names: Vec<String>| names.into_iter().any(|n| n.starts_with(&prefix) && n != sw.name());
            if others(switches()) || used.iter().any(|a| overlaps(*a, sw.subnet())) {
                continue;
            }
            // From here the guard exists, so a failing step (or a lost race) is cleaned up by its drop.
            match sw.build() {
                Ok(()) if !others(switches()) => return sw,
                Ok(()) => last_err = format!("{} was taken meanwhile", sw.name()),
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(u64::from(octet % 50)));
        }
        panic!("could not create a test switch: {last_err}");
    }

    fn build(&self) -> Result<(), String> {
        let (ns, bridge) = (self.name(), self.bridge());
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", &ns, "link", "set", &bridge, "up"])?;
        Ok(())
    }

    /// Six hex digits naming everything of this switch; the first two are the /24's third octet.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The switch namespace, `sk-s<tag>`.
    pub fn name(&self) -> String {
        format!("sk-s{}", self.tag)
    }

    /// The bridge inside the switch namespace, `sk-b<tag>`.
    pub fn bridge(&self) -> String {
        format!("sk-b{}", self.tag)
    }

    /// `10.251.X.0/24`.
    pub fn subnet(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(SWITCH_RANGE[0], SWITCH_RANGE[1], self.octet, 0), 24)
    }

    /// The address of node `i` (1..=250): `10.251.X.i`.
    pub fn address(&self, i: u8) -> Ipv4Addr {
        assert!((1..=250).contains(&i), "node index {i} is outside 1..=250");
        Ipv4Addr::new(SWITCH_RANGE[0], SWITCH_RANGE[1], self.octet, i)
    }

    /// The switch's port for node `i`, `sk-p<tag>-<i>`.
    pub fn port(&self, i: u8) -> String {
        format!("sk-p{}-{i}", self.tag)
    }

    /// Makes node `i`'s namespace `sk-n<tag>-<i>`, its `eth0` on the bridge with
    /// [`Switch::address`]`(i)/24`, and no default route.
    pub fn attach(&self, i: u8) -> NodeNet {
        let net = NodeNet {
            name: format!("sk-n{}-{i}", self.tag),
            uplink: Uplink::Switch { ns: self.name(), port: self.port(i) },
            node_ip: self.address(i),
        };
        net.build().unwrap_or_else(|e| panic!("attaching node {i} to switch {}: {e}", self.name()));
        net
    }

    /// Takes node `i`'s port down (a pulled cable: frames to and from it are dropped) or up.
    pub fn set_port(&self, i: u8, up: bool) {
        let (ns, port) = (self.name(), self.port(i));
        ip(&["-n", &ns, "link", "set", &port, if up { "up" } else { "down" }]).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if Path::new("/run/netns").join(self.name()).exists() {
            if let Err(e) = ip(&["netns", "delete", &self.name()]) {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// `GET PATH` over HTTP/1.0 to `addr` (connect and read bounded by `timeout`); the body on a
/// 200, an error otherwise. For addresses inside test namespaces only.
pub fn http_get(addr: std::net::SocketAddr, path: &str, timeout: std::time::Duration) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(std::io::Error::other(format!("not a 200 answer: {head:?}")));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap() {
        let a = |s: &str, l| (s.parse().unwrap(), l);
        assert!(overlaps(a("10.250.1.4", 30), a("10.250.1.6", 30)));
        assert!(overlaps(a("10.0.0.1", 8), a("10.250.1.4", 30)));
        assert!(!overlaps(a("10.250.1.4", 30), a("10.250.1.8", 30)));
        assert!(!overlaps(a("192.0.2.2", 24), a("10.250.1.8", 30)));
    }
}
