//! Throwaway network namespaces for tests and the benchmark: a thread unshares a new network
//! namespace and bind-mounts it on a file in a private directory; the guard unmounts and removes
//! it when dropped, also when a test fails. Work runs inside from a thread that entered it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Runs `f` on a new thread that entered the network namespace bound at `path`.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(path: &Path, f: F) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
    })
}

/// A network namespace owned by this value, with its loopback up.
#[derive(Debug)]
pub struct NetNs {
    dir: PathBuf,
    path: PathBuf,
}

impl NetNs {
    pub fn new() -> io::Result<NetNs> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skerry-netns-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        let path = dir.join("net");
        // From here on, Drop cleans up whatever was made.
        let ns = NetNs { dir, path };
        File::create(&ns.path)?;
        let target = ns.path.clone();
        std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(io::Error::from)?;
            Ok(())
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))??;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The bind mount: pass it to `setns`, `ip link set ... netns <path>`, [`super::NamespaceNft`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> io::Result<T> {
        run_in(&self.path, f)
    }

    /// Runs `ip <args>` inside; an error carries its stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let out = self.run(|| Command::new("ip").args(args).output())??;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Joins `client` and `server` by a veth pair on 10.251.0.0/30 (client .1, server .2, the
/// client's default route via the server) — the two-namespace setup of the kernel tests and the
/// benchmark. Test-only addresses, inside namespaces the caller owns.
pub fn wire_pair(client: &NetNs, server: &NetNs) -> io::Result<()> {
    let server_path = server.path().to_str().unwrap_or_default().to_string();
    client.ip(&["link", "add", "vc0", "type", "veth", "peer", "name", "vs0"])?;
    client.ip(&["link", "set", "vs0", "netns", &server_path])?;
    client.ip(&["addr", "add", "10.251.0.1/30", "dev", "vc0"])?;
    client.ip(&["link", "set", "vc0", "up"])?;
    server.ip(&["addr", "add", "10.251.0.2/30", "dev", "vs0"])?;
    server.ip(&["link", "set", "vs0", "up"])?;
    client.ip(&["route", "add", "default", "via", "10.251.0.2"])
}

/// A TCP server on 10.251.0.2:8080 inside `server` (after [`wire_pair`]) that answers every
/// connection with `ok`; stopped and joined on drop.
pub struct OkServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl OkServer {
    pub fn start(server: &NetNs) -> io::Result<OkServer> {
        use std::io::Write;
        let listener = server.run(|| std::net::TcpListener::bind("10.251.0.2:8080"))??;
        listener.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let acceptor = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(b"ok");
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Ok(OkServer { stop, acceptor: Some(acceptor) })
    }
}

impl Drop for OkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}
