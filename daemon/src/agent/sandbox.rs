//! A pod's sandbox: network, IPC and UTS namespaces held open by bind mounts, no pause process.
//!
//! Each namespace is created on a dedicated OS thread that `unshare`s, configures it (hostname,
//! loopback up) and bind-mounts `/proc/thread-self/ns/*` onto a file under the pod's directory;
//! containers join the namespaces by those paths.
//!
//! The worker creates and removes sandboxes through the [`Namespaces`] trait: [`KernelNamespaces`]
//! is the real thing (the methods below); [`FakeNamespaces`] (tests) records the calls and
//! leaves plain files where the namespace files would be, with no namespace behind them.

use std::path::PathBuf;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("creating the pod sandbox in {dir}: {step}: {source}")]
    Create { dir: PathBuf, step: &'static str, source: std::io::Error },
    #[error("removing the pod sandbox in {dir}: {source}")]
    Remove { dir: PathBuf, source: std::io::Error },
}

/// The namespace files of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub dir: PathBuf,
}

const KINDS: &[&str] = &["net", "ipc", "uts"];

impl Sandbox {
    pub fn at(dir: PathBuf) -> Sandbox {
        Sandbox { dir }
    }
    pub fn netns(&self) -> PathBuf {
        self.dir.join("net")
    }
    pub fn ipcns(&self) -> PathBuf {
        self.dir.join("ipc")
    }
    pub fn utsns(&self) -> PathBuf {
        self.dir.join("uts")
    }

    /// True when every namespace file is a live bind mount.
    pub fn exists(&self) -> bool {
        KINDS.iter().all(|k| is_namespace_mount(&self.dir.join(k)))
    }

    /// Creates the namespaces (idempotent: a complete sandbox is left alone).
    pub fn create(&self, hostname: &str) -> Result<(), SandboxError> {
        if self.exists() {
            return Ok(());
        }
        self.remove()?;
        let err = |step: &'static str| {
            let dir = self.dir.clone();
            move |source: std::io::Error| SandboxError::Create { dir: dir.clone(), step, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err("creating the directory"))?;
        for k in KINDS {
            std::fs::File::create(self.dir.join(k)).map_err(err("creating a namespace file"))?;
        }
        let dir = self.dir.clone();
        let hostname = hostname.to_string();
        let result = std::thread::spawn(move || -> Result<(), (&'static str, std::io::Error)> {
            let io = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
            nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
                .map_err(|e| ("unshare", io(e)))?;
            nix::unistd::sethostname(&hostname).map_err(|e| ("setting the hostname", io(e)))?;
            loopback_up().map_err(|e| ("bringing up loopback", e))?;
            for k in KINDS {
                let src = format!("/proc/thread-self/ns/{k}");
                mount(Some(src.as_str()), &dir.join(k), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| ("bind-mounting a namespace", io(e)))?;
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(("namespace thread", std::io::Error::other("panicked"))));
        if let Err((step, source)) = result {
            let _ = self.remove();
            return Err(SandboxError::Create { dir: self.dir.clone(), step, source });
        }
        Ok(())
    }

    /// Unmounts and removes the namespace files; a missing sandbox is fine.
    pub fn remove(&self) -> Result<(), SandboxError> {
        for k in KINDS {
            let path = self.dir.join(k);
            if is_namespace_mount(&path) {
                umount2(&path, MntFlags::MNT_DETACH).map_err(|e| SandboxError::Remove {
                    dir: self.dir.clone(),
                    source: std::io::Error::from_raw_os_error(e as i32),
                })?;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SandboxError::Remove { dir: self.dir.clone(), source }),
            }
        }
        Ok(())
    }
}

/// Creating and removing sandboxes. Both calls block (namespace threads, mounts): call them
/// from `spawn_blocking`.
pub trait Namespaces: Send + Sync + 'static {
    /// Creates the sandbox's namespaces (idempotent: a complete sandbox is left alone).
    fn create(&self, sandbox: &Sandbox, hostname: &str) -> Result<(), SandboxError>;
    /// Removes them; a missing sandbox is fine.
    fn remove(&self, sandbox: &Sandbox) -> Result<(), SandboxError>;
}

/// The kernel's namespaces: [`Sandbox::create`] and [`Sandbox::remove`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelNamespaces;

impl Namespaces for KernelNamespaces {
    fn create(&self, sandbox: &Sandbox, hostname: &str) -> Result<(), SandboxError> {
        sandbox.create(hostname)
    }
    fn remove(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        sandbox.remove()
    }
}

/// What a [`FakeNamespaces`] was asked to do.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceCall {
    Create { dir: PathBuf, hostname: String },
    Remove { dir: PathBuf },
}

/// Sandboxes without a kernel (tests): records the calls; creates the sandbox's directory and
/// its namespace files as plain files (so the pod directory is laid out as with real ones) and
/// removes them again.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeNamespaces {
    calls: std::sync::Mutex<Vec<NamespaceCall>>,
}

#[cfg(test)]
impl FakeNamespaces {
    pub fn calls(&self) -> Vec<NamespaceCall> {
        self.calls.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl Namespaces for FakeNamespaces {
    fn create(&self, sandbox: &Sandbox, hostname: &str) -> Result<(), SandboxError> {
        let call = NamespaceCall::Create { dir: sandbox.dir.clone(), hostname: hostname.to_string() };
        self.calls.lock().unwrap().push(call);
        let err = |source| SandboxError::Create { dir: sandbox.dir.clone(), step: "fake", source };
        std::fs::create_dir_all(&sandbox.dir).map_err(err)?;
        for k in KINDS {
            std::fs::write(sandbox.dir.join(k), "").map_err(err)?;
        }
        Ok(())
    }
    fn remove(&self, sandbox: &Sandbox) -> Result<(), SandboxError> {
        self.calls.lock().unwrap().push(NamespaceCall::Remove { dir: sandbox.dir.clone() });
        for k in KINDS {
            match std::fs::remove_file(sandbox.dir.join(k)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SandboxError::Remove { dir: sandbox.dir.clone(), source: e })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Brings `lo` up in the calling thread's network namespace, through netlink.
fn loopback_up() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(conn);
        let result = async {
            use futures::TryStreamExt;
            let mut links = handle.link().get().match_name("lo").execute();
            let link = links
                .try_next()
                .await
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other("no lo link"))?;
            let msg = rtnetlink::LinkUnspec::new_with_index(link.header.index).up().build();
            handle.link().set(msg).execute().await.map_err(std::io::Error::other)
        }
        .await;
        task.abort();
        result
    })
}

/// `NSFS_MAGIC`: the file system of namespace files (`/proc/<pid>/ns/*` and bind mounts of them).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a bind mount of a namespace: one `statfs`, where reading the mount table
/// would cost time that grows with the number of pods.
fn is_namespace_mount(path: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::is_namespace_mount;

    #[test]
    fn namespace_files_are_told_from_plain_files() {
        assert!(is_namespace_mount(std::path::Path::new("/proc/self/ns/net")));
        let plain = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_namespace_mount(plain.path()));
        assert!(!is_namespace_mount(std::path::Path::new("/nonexistent/sk-ns")));
    }
}
