//! A network namespace per test node, wired to the root namespace by one veth pair.
//!
//! [`NodeNet::create`] makes `sk-n<6 hex>` (with `ip netns add`), a veth pair whose root end
//! `sk<6 hex>r` holds `10.250.X.Y+1/30` and whose node end `eth0` holds `+2/30`, brings `lo` and
//! `eth0` up and routes the namespace's default through the root end — so a daemon inside
//! detects `+2` as its node address. The root namespace gets nothing but the connected /30
//! route; `ip_forward` is never touched there. Dropping the guard removes the veth pair and
//! the namespace (its `/run/netns` mount too), also when the test failed.
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

const IP: &str = "/usr/sbin/ip";

/// Serialises address choice and creation inside one test process.
static CREATE: Mutex<()> = Mutex::new(());

/// Guard owning one node's network namespace and veth pair.
#[derive(Debug)]
pub struct NodeNet {
    name: String,
    root_veth: String,
    root_ip: Ipv4Addr,
    node_ip: Ipv4Addr,
}

/// Six random lowercase hex digits.
pub fn random_hex6() -> String {
    let mut b = [0u8; 3];
    use std::io::Read;
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("reading /dev/urandom");
    hex::encode(b)
}

/// Runs `ip ARGS`; `Err(stderr)` unless it exits 0.
fn ip(args: &[&str]) -> Result<String, String> {
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
                root_veth: format!("sk{tag}r"),
                root_ip: Ipv4Addr::from(base + 1),
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
        let root = format!("{}/30", self.root_ip);
        let node = format!("{}/30", self.node_ip);
        let gw = self.root_ip.to_string();
        ip(&["netns", "add", n])?;
        ip(&["link", "add", &self.root_veth, "type", "veth", "peer", "name", "eth0", "netns", n])?;
        ip(&["addr", "add", &root, "dev", &self.root_veth])?;
        ip(&["link", "set", &self.root_veth, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "addr", "add", &node, "dev", "eth0"])?;
        ip(&["-n", n, "link", "set", "eth0", "up"])?;
        ip(&["-n", n, "route", "add", "default", "via", &gw, "dev", "eth0"])?;
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

    /// The root namespace's end of the veth pair (the node's default gateway).
    pub fn root_ip(&self) -> Ipv4Addr {
        self.root_ip
    }

    /// The root end's interface name, `sk<6 hex>r`.
    pub fn root_veth(&self) -> &str {
        &self.root_veth
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
        if ip(&["link", "show", &self.root_veth]).is_ok() {
            if let Err(e) = ip(&["link", "delete", &self.root_veth]) {
                eprintln!("warning: {e}");
            }
        }
        if self.path().exists() {
            if let Err(e) = ip(&["netns", "delete", &self.name]) {
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
