//! Drives the built `skerry-cni` binary as a runtime would, against network namespaces,
//! bridges and IPAM directories each test creates and removes (root required; never skipped).
//!
//! Every test owns a bridge `sk-br<random>`, a subnet 10.99.<n>.0/24 that exists only on that
//! bridge and in the test's namespaces, and an IPAM dataDir in a tempdir. Traffic goes only
//! from the host to addresses inside namespaces the test created.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde_json::{json, Value};
use skerry_cni::cmd::host_veth_name;
use skerry_cni::config::Subnet;
use skerry_cni::ipam::Owner;
use skerry_cni::link::{self, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_skerry-cni");

/// Host veth names derive from the container ID, and the tests reuse IDs (`pod-a`, `pod-1`):
/// run them one at a time so two tests never share a host-side link name.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the skerry-cni integration tests create namespaces, bridges and veths: run them as root"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    std::process::id().wrapping_mul(2_654_435_761) ^ nanos ^ COUNTER.fetch_add(1, Ordering::SeqCst).wrapping_mul(40_503)
}

/// A network namespace bind-mounted on a file in a tempdir; unmounted (and so destroyed,
/// with the pod ends of its veths) on drop.
struct TestNetns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNetns {
    fn new() -> TestNetns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netns");
        File::create(&path).unwrap();
        let target = path.clone();
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .expect("bind-mounting the new netns");
        })
        .join()
        .unwrap();
        TestNetns { path, _dir: dir }
    }

    /// Runs `f` on a thread inside the namespace.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let file = File::open(&self.path).unwrap();
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
            f()
        })
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// Deletes host links by name on drop (the bridge and the host ends of veths).
struct LinkGuard(Vec<String>);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        for name in self.0.drain(..) {
            let _ = link::in_host(|h| async move { link::delete(&h, &name).await });
        }
    }
}

/// One test network: bridge, subnet, IPAM dir.
struct TestNet {
    name: String,
    bridge: String,
    third_octet: u8,
    data: tempfile::TempDir,
    links: LinkGuard,
}

impl TestNet {
    fn new() -> TestNet {
        require_root();
        let u = unique();
        let bridge = format!("sk-br{:08x}", u);
        let net = TestNet {
            name: "sktest".into(),
            bridge: bridge.clone(),
            third_octet: 1 + (u % 250) as u8,
            data: tempfile::tempdir().unwrap(),
            links: LinkGuard(vec![bridge]),
        };
        // The subnet must be ours alone: nothing in the host may route it yet.
        let subnet = net.subnet();
        let taken = link::in_host(|h| async move { link::routes(&h).await }).unwrap();
        assert!(
            !taken
                .iter()
                .any(|(dst, _)| dst.prefix > 0 && (dst.contains(subnet.network) || subnet.contains(dst.network))),
            "test subnet {subnet} is already routed on this host; rerun"
        );
        net
    }

    fn subnet(&self) -> Subnet {
        Subnet::parse(&format!("10.99.{}.0/24", self.third_octet)).unwrap()
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.third_octet, last)
    }

    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "skerry-cni",
            "bridge": self.bridge,
            "ipForward": false,
            "ipam": {"type": "host-local", "subnet": self.subnet().to_string(), "dataDir": self.data.path()},
        });
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn ipam_dir(&self) -> PathBuf {
        self.data.path().join(&self.name)
    }

    /// Runs an attachment command; registers the host veth for cleanup.
    fn run(&mut self, command: &str, container: &str, netns: &Path, stdin: &Value) -> (i32, String) {
        self.links.0.push(host_veth_name(&Owner::new(container, "eth0")));
        run_plugin(
            command,
            &[("CNI_CONTAINERID", container), ("CNI_NETNS", netns.to_str().unwrap()), ("CNI_IFNAME", "eth0")],
            &stdin.to_string(),
        )
    }
}

fn run_plugin(command: &str, env: &[(&str, &str)], stdin: &str) -> (i32, String) {
    let mut child = Command::new(BIN)
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
}

fn host_link_exists(name: &str) -> bool {
    let name = name.to_owned();
    link::in_host(|h| async move { link::get(&h, &name).await }).unwrap().is_some()
}

#[test]
fn add_check_del_round_trip_with_tcp_reachability() {
    let _serial = serial();
    let mut net = TestNet::new();
    let ns = TestNetns::new();
    let conf = net.conf(json!({}));

    let (code, out) = net.run("ADD", "pod-a", &ns.path, &conf);
    assert_eq!(code, 0, "ADD failed: {out}");
    let result = json_of(&out);
    let pod_ip = net.ip(2);
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        result["ips"],
        json!([{"address": format!("{pod_ip}/24"), "gateway": net.ip(1).to_string(), "interface": 2}])
    );
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0", "gw": net.ip(1).to_string()}]));
    let ifaces = result["interfaces"].as_array().unwrap();
    assert_eq!(ifaces[0]["name"], net.bridge.as_str());
    assert_eq!(ifaces[1]["name"], host_veth_name(&Owner::new("pod-a", "eth0")));
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(ifaces[2]["sandbox"], ns.path.to_str().unwrap());
    assert_eq!(std::fs::read_to_string(net.ipam_dir().join(pod_ip.to_string())).unwrap(), "pod-a\neth0");

    // Inside the pod: the address, the default route, lo up, the MAC the result reported.
    let handle = Netns::open(&ns.path).unwrap();
    let (eth0, addrs, routes) = link::in_netns(&handle, |h| async move {
        let eth0 = link::get(&h, "eth0").await?.expect("eth0 in the pod");
        let addrs = link::addresses(&h, eth0.index).await?;
        Ok((eth0, addrs, link::routes(&h).await?))
    })
    .unwrap();
    assert!(addrs.contains(&(pod_ip, 24)), "{addrs:?}");
    assert!(routes.contains(&(Subnet::parse("0.0.0.0/0").unwrap(), Some(net.ip(1)))), "{routes:?}");
    assert_eq!(ifaces[2]["mac"], eth0.mac.as_str());

    // Host → pod over TCP, to a listener inside the pod's namespace.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = ns.enter(move || {
        let listener = TcpListener::bind((pod_ip, 0)).expect("bind inside the pod");
        port_tx.send(listener.local_addr().unwrap().port()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"hello from the pod").unwrap();
    });
    let port = port_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((pod_ip, port)), Duration::from_secs(10))
        .expect("connecting from the host to the pod");
    let mut reply = String::new();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "hello from the pod");
    server.join().unwrap();

    let prev = net.conf(json!({"prevResult": result}));
    let (code, out) = net.run("CHECK", "pod-a", &ns.path, &prev);
    assert_eq!((code, out.as_str()), (0, ""), "CHECK failed");

    // Idempotent ADD: same address again.
    let (code, out) = net.run("ADD", "pod-a", &ns.path, &conf);
    assert_eq!(code, 0, "re-ADD failed: {out}");
    assert_eq!(json_of(&out)["ips"][0]["address"], format!("{pod_ip}/24"));

    let (code, out) = net.run("DEL", "pod-a", &ns.path, &prev);
    assert_eq!((code, out.as_str()), (0, ""), "DEL failed");
    assert!(!host_link_exists(&host_veth_name(&Owner::new("pod-a", "eth0"))), "host veth left behind");
    assert!(!net.ipam_dir().join(pod_ip.to_string()).exists(), "IP file left behind");
    let gone = link::in_netns(&handle, |h| async move { link::get(&h, "eth0").await }).unwrap();
    assert!(gone.is_none(), "eth0 left in the pod");

    // DEL again, and DEL without the namespace: both succeed.
    assert_eq!(net.run("DEL", "pod-a", &ns.path, &conf), (0, String::new()));
    assert_eq!(net.run("DEL", "pod-a", Path::new("/nonexistent/netns"), &conf), (0, String::new()));

    // CHECK after DEL fails with an error object.
    let (code, out) = net.run("CHECK", "pod-a", &ns.path, &conf);
    assert_ne!(code, 0);
    assert_eq!(json_of(&out)["code"], 103);
}

#[test]
fn concurrent_adds_from_separate_processes_get_distinct_addresses() {
    let _serial = serial();
    let mut net = TestNet::new();
    let namespaces: Vec<TestNetns> = (0..4).map(|_| TestNetns::new()).collect();
    let conf = net.conf(json!({}));
    for i in 0..4 {
        net.links.0.push(host_veth_name(&Owner::new(&format!("pod-{i}"), "eth0")));
    }
    let children: Vec<_> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (conf, path) = (conf.to_string(), ns.path.to_str().unwrap().to_owned());
            std::thread::spawn(move || {
                run_plugin(
                    "ADD",
                    &[("CNI_CONTAINERID", &format!("pod-{i}")), ("CNI_NETNS", &path), ("CNI_IFNAME", "eth0")],
                    &conf,
                )
            })
        })
        .collect();
    let mut addresses: Vec<String> = children
        .into_iter()
        .map(|c| {
            let (code, out) = c.join().unwrap();
            assert_eq!(code, 0, "ADD failed: {out}");
            json_of(&out)["ips"][0]["address"].as_str().unwrap().to_owned()
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 4, "{addresses:?}");
}

#[test]
fn add_fails_with_code_100_when_the_range_is_exhausted_and_rolls_back() {
    let _serial = serial();
    let mut net = TestNet::new();
    let (ns1, ns2) = (TestNetns::new(), TestNetns::new());
    let conf = net.conf(json!({"ipam": {"subnet": net.subnet().to_string(), "rangeStart": net.ip(2).to_string(),
        "rangeEnd": net.ip(2).to_string(), "dataDir": net.data.path()}}));
    assert_eq!(net.run("ADD", "pod-1", &ns1.path, &conf).0, 0);
    let (code, out) = net.run("ADD", "pod-2", &ns2.path, &conf);
    assert_ne!(code, 0);
    let err = json_of(&out);
    assert_eq!(err["code"], 100);
    assert_eq!(err["msg"], format!("no IP addresses available in range {}", net.subnet()));
    assert!(!host_link_exists(&host_veth_name(&Owner::new("pod-2", "eth0"))));
}

#[test]
fn gc_frees_allocations_not_in_valid_attachments() {
    let _serial = serial();
    let mut net = TestNet::new();
    let ns = TestNetns::new();
    let conf = net.conf(json!({}));
    assert_eq!(net.run("ADD", "live", &ns.path, &conf).0, 0);
    let leaked = net.ipam_dir().join(net.ip(7).to_string());
    std::fs::write(&leaked, "leaked\neth0").unwrap();
    let live_ip = net.ipam_dir().join(net.ip(2).to_string());

    let gc = |valid: Value| {
        let mut conf = net.conf(json!({"cniVersion": "1.1.0"}));
        conf["cni.dev/valid-attachments"] = valid;
        run_plugin("GC", &[], &conf.to_string())
    };
    assert_eq!(gc(json!([{"containerID": "live", "ifname": "eth0"}])), (0, String::new()));
    assert!(!leaked.exists(), "the leaked allocation survived GC");
    assert!(live_ip.exists(), "GC freed a valid attachment");
    assert!(host_link_exists(&host_veth_name(&Owner::new("live", "eth0"))));

    assert_eq!(gc(json!([])), (0, String::new()));
    assert!(!live_ip.exists(), "an empty valid-attachments list frees everything");
    assert!(!host_link_exists(&host_veth_name(&Owner::new("live", "eth0"))), "GC left the veth");
}

#[test]
fn version_and_bad_input() {
    let _serial = serial();
    require_root();
    let (code, out) = run_plugin("VERSION", &[], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}));
    let (code, out) = run_plugin("VERSION", &[], "");
    assert_eq!((code, json_of(&out)["cniVersion"].clone()), (0, json!("1.1.0")));

    let env = [("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/nonexistent"), ("CNI_IFNAME", "eth0")];
    let (code, out) = run_plugin("ADD", &env, "{not json");
    assert_ne!(code, 0);
    assert_eq!(json_of(&out)["code"], 6);

    let (code, out) = run_plugin("ADD", &env, r#"{"cniVersion":"1.0.0","name":"x","type":"skerry-cni","mtu":1}"#);
    assert_ne!(code, 0);
    let err = json_of(&out);
    assert_eq!((err["cniVersion"].clone(), err["code"].clone()), (json!("1.0.0"), json!(7)));
    assert!(err["msg"].as_str().unwrap().contains("mtu"), "{err}");

    let (code, out) = run_plugin("ADD", &env, r#"{"cniVersion":"0.2.0","name":"x","type":"skerry-cni"}"#);
    assert_eq!((code, json_of(&out)["code"].clone()), (1, json!(1)));

    let (code, out) = run_plugin("ADD", &env, r#"{"cniVersion":"1.0.0","name":"x","type":"skerry-cni"}"#);
    assert_eq!((code, json_of(&out)["code"].clone()), (1, json!(3)), "missing netns");

    let (code, out) = run_plugin("ADD", &[], r#"{"cniVersion":"1.0.0","name":"x","type":"skerry-cni"}"#);
    assert_eq!((code, json_of(&out)["code"].clone()), (1, json!(4)), "missing CNI_CONTAINERID");
}

/// The daemon's conflist shape, with `type` switched, also drives Debian's reference
/// `bridge` + `host-local` plugins (containernetworking-plugins); both keep IPAM state in the
/// same layout. The reference plugin turns on ip_forward, so it runs inside a "node"
/// namespace the test owns, never in the host's.
#[test]
fn reference_bridge_and_host_local_accept_the_same_config() {
    let _serial = serial();
    require_root();
    const REFERENCE: &str = "/usr/lib/cni/bridge";
    assert!(
        Path::new(REFERENCE).exists() && Path::new("/usr/lib/cni/host-local").exists(),
        "install containernetworking-plugins (Debian) for {REFERENCE} and host-local"
    );
    let (node, pod) = (TestNetns::new(), TestNetns::new());
    let data = tempfile::tempdir().unwrap();
    let conf = json!({
        "cniVersion": "1.0.0", "name": "sktest", "type": "bridge", "bridge": "skerry0",
        "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "mtu": 1500,
        "ipam": {"type": "host-local", "subnet": "10.42.0.0/24", "dataDir": data.path()},
    });
    let node_file = File::open(&node.path).unwrap();
    let run_in_node = |command: &str| {
        use std::os::unix::process::CommandExt;
        let node_fd = node_file.try_clone().unwrap();
        let mut cmd = Command::new(REFERENCE);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "ref-pod")
            .env("CNI_NETNS", &pod.path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: only setns, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || setns(&node_fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
    };
    let (code, out) = run_in_node("ADD");
    assert_eq!(code, 0, "reference ADD failed: {out}");
    let result = json_of(&out);
    assert_eq!(result["ips"][0]["address"], "10.42.0.2/24");
    // skerry-cni's IPAM reads what host-local wrote.
    let store = skerry_cni::ipam::FileStore::open(data.path(), "sktest").unwrap();
    let held = skerry_cni::ipam::find(&store.lock().unwrap(), &Owner::new("ref-pod", "eth0")).unwrap();
    assert_eq!(held, Some(Ipv4Addr::new(10, 42, 0, 2)));
    let (code, out) = run_in_node("DEL");
    assert_eq!(code, 0, "reference DEL failed: {out}");
    assert!(!data.path().join("sktest/10.42.0.2").exists());
}

#[test]
fn a_failed_add_rolls_back_the_veth_and_the_address() {
    let _serial = serial();
    let mut net = TestNet::new();
    let ns = TestNetns::new();
    // The pod already has an eth0, so the pod side of ADD fails after the veth and the
    // address were made.
    link::in_netns(&Netns::open(&ns.path).unwrap(), |h| async move {
        h.link()
            .add(rtnetlink::LinkBridge::new("eth0").build())
            .execute()
            .await
            .map_err(|e| link::LinkError::State(e.to_string()))
    })
    .unwrap();
    let (code, out) = net.run("ADD", "pod-x", &ns.path, &net.conf(json!({})));
    assert_ne!(code, 0);
    let err = json_of(&out);
    assert!(err["msg"].as_str().unwrap().contains("already has an interface named eth0"), "{err}");
    assert!(!host_link_exists(&host_veth_name(&Owner::new("pod-x", "eth0"))), "veth not rolled back");
    assert!(!net.ipam_dir().join(net.ip(2).to_string()).exists(), "address not released");
}
