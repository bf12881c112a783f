//! A private Docker registry (Debian's `docker-registry`) on 127.0.0.1 for pull tests: of the
//! root namespace ([`Registry::start`]) or of a test node's namespace ([`Registry::start_in`],
//! where that node's skerryd can reach it; skopeo pushes from inside it too).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";

/// Guard owning a running registry; dropping it kills it and removes its storage.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    net: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("binding a free port").local_addr().unwrap().port()
}

impl Registry {
    /// Starts a registry with storage in a temp dir, plain HTTP on 127.0.0.1:<free port>.
    pub fn start() -> Registry {
        Self::start_at(None)
    }

    /// Like [`Registry::start`], on 127.0.0.1 inside `net` (a test node's namespace).
    pub fn start_in(net: &crate::netns::NodeNet) -> Registry {
        Self::start_at(Some(net))
    }

    fn start_at(net: Option<&crate::netns::NodeNet>) -> Registry {
        assert!(
            Path::new(REGISTRY).exists(),
            "{REGISTRY} is missing; install it with `apt-get install -y docker-registry`"
        );
        assert!(Path::new(SKOPEO).exists(), "{SKOPEO} is missing; install it with `apt-get install -y skopeo`");
        let dir = tempfile::Builder::new().prefix("sk-registry-").tempdir_in("/tmp").expect("creating registry dir");
        let port = match net {
            Some(n) => n.run(free_port),
            None => free_port(),
        };
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("writing registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("creating registry log");
        let mut cmd = Command::new(REGISTRY);
        if let Some(n) = net {
            n.enter_on_spawn(&mut cmd);
        }
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning docker-registry");
        let mut reg = Registry { child, dir, addr, net: net.map(|n| n.path()) };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited early ({status}); log:\n{}", self.log());
            }
            if self.in_net(|| TcpStream::connect(&self.addr).is_ok()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {} within 20s; log:\n{}", self.addr, self.log());
    }

    /// Runs `f` in the registry's namespace.
    fn in_net<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let Some(path) = &self.net else { return f() };
        let ns = fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        std::thread::scope(|s| {
            s.spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on an open namespace fd, on this thread only.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0,
                    "setns: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes an OCI archive as `ADDR/repo:tag` with skopeo; returns the full reference.
    pub fn push_oci_archive(&self, archive: &Path, repo_tag: &str) -> String {
        let reference = format!("{}/{repo_tag}", self.addr);
        let mut cmd = Command::new(SKOPEO);
        if let Some(path) = &self.net {
            let ns = fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            // SAFETY: setns is async-signal-safe; the closure makes only that syscall.
            unsafe {
                use std::os::fd::AsRawFd;
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let out = cmd
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("running skopeo");
        assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
        reference
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
