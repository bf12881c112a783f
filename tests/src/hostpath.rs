//! Host paths the conformance manifests name (`storage.yml`'s `hostPath`): tests that use one
//! take it exclusively and remove what they created.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The seed's `microservices_deployment/storage.yml` volume lives at this path on the host.
pub const SEED_HOST_PATH: &str = "/mnt/some new/directory/structure/";

/// Exclusive use of a host path for one test: holds a lock (tests in other binaries that use
/// the same path wait), and on drop removes the topmost directory of the path that did not
/// exist when the guard was made (nothing when the whole path existed) and the files the test
/// listed in `files`.
pub struct HostPathGuard {
    created: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    _lock: std::fs::File,
}

impl HostPathGuard {
    pub fn new(path: &Path) -> HostPathGuard {
        let name = path.to_string_lossy().replace(['/', ' '], "_");
        let lock_path = std::env::temp_dir().join(format!("sk-hostpath{name}.lock"));
        let lock =
            std::fs::File::create(&lock_path).unwrap_or_else(|e| panic!("creating {}: {e}", lock_path.display()));
        // SAFETY: flock on a file descriptor this guard owns for its whole life.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "locking {}: {}", lock_path.display(), std::io::Error::last_os_error());
        let created = path.ancestors().filter(|a| !a.exists()).last().map(Path::to_path_buf);
        HostPathGuard { created, files: Vec::new(), _lock: lock }
    }

    /// The guard for [`SEED_HOST_PATH`].
    pub fn seed() -> HostPathGuard {
        HostPathGuard::new(Path::new(SEED_HOST_PATH))
    }
}

impl Drop for HostPathGuard {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        if let Some(dir) = &self.created {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("warning: could not remove {}: {e}", dir.display());
                }
            }
        }
    }
}
