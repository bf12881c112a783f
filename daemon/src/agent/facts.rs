//! What this node reports about itself, read from the host: CPUs, memory and huge pages
//! (`/proc/meminfo`, `/sys/kernel/mm/hugepages`), the size of the data dir's filesystem, the
//! kernel release, the OS image (`/etc/os-release`), machine, system and boot IDs, and the
//! container runtime's version. [`gather`] is the only function here that does I/O; the
//! parsers are pure.

use std::path::Path;

use crate::runtime::Runtime;

/// The host's facts, as [`super::register`] turns them into a Node's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Online CPUs.
    pub cpus: u64,
    /// `MemTotal`, in bytes.
    pub memory_bytes: u64,
    /// Huge pages reserved, by page size as Kubernetes names it (`2Mi`, `1Gi`), in bytes.
    pub hugepages: Vec<(String, u64)>,
    /// The size of the filesystem holding the data dir, in bytes.
    pub ephemeral_bytes: u64,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// `containerd://<version>`; `None` when the runtime could not be asked.
    pub runtime_version: Option<String>,
}

/// Reads the facts; what cannot be read is left empty (or zero), never an error: a node with a
/// locked-down `/sys` still registers.
pub async fn gather(runtime: &dyn Runtime, data_dir: &Path) -> Facts {
    let dir = data_dir.to_path_buf();
    let mut facts = tokio::task::spawn_blocking(move || read_host(&dir)).await.unwrap_or_default();
    facts.runtime_version = match runtime.version().await {
        Ok(v) => Some(runtime_version(&v)),
        Err(e) => {
            tracing::debug!(error = %e, "the container runtime's version could not be read");
            None
        }
    };
    facts
}

fn read_host(data_dir: &Path) -> Facts {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    // SAFETY: sysconf only reads a value of the C library.
    let cpus = match unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } {
        n if n > 0 => n as u64,
        _ => 1,
    };
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_total(&t)).unwrap_or(0);
    // The casts widen on 32-bit targets (armv7 edge boxes), where these are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let ephemeral_bytes = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| (s.blocks() as u64).saturating_mul(s.fragment_size() as u64))
        .unwrap_or(0);
    Facts {
        cpus,
        memory_bytes,
        hugepages: hugepages(Path::new("/sys/kernel/mm/hugepages")),
        ephemeral_bytes,
        kernel_version: read("/proc/sys/kernel/osrelease"),
        os_image: std::fs::read_to_string("/etc/os-release").ok().and_then(|t| pretty_name(&t)).unwrap_or_default(),
        machine_id: read("/etc/machine-id"),
        system_uuid: read("/sys/class/dmi/id/product_uuid").to_lowercase(),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        runtime_version: None,
    }
}

/// Huge pages reserved per size, from `hugepages-<n>kB/nr_hugepages` under `dir`, sorted by size.
fn hugepages(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(u64, String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let kb = page_size_kb(&e.file_name().to_string_lossy())?;
            let pages: u64 = std::fs::read_to_string(e.path().join("nr_hugepages")).ok()?.trim().parse().ok()?;
            Some((kb, size_name(kb), pages.saturating_mul(kb * 1024)))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, name, bytes)| (name, bytes)).collect()
}

/// `hugepages-2048kB` → 2048.
fn page_size_kb(dir_name: &str) -> Option<u64> {
    dir_name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()
}

/// A page size as a resource name suffix: 2048 kB → `2Mi`, 1048576 kB → `1Gi`.
fn size_name(kb: u64) -> String {
    crate::objects::quantity::format_units(kb * 1024, true)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let kb: u64 = l.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// `PRETTY_NAME` of an os-release file, unquoted (`Debian GNU/Linux 12 (bookworm)`).
pub fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\"))
}

/// The runtime's version as kubelet reports it: `containerd://1.7.24` (containerd's own `v`
/// prefix dropped, as its CRI service does).
pub fn runtime_version(version: &str) -> String {
    format!("containerd://{}", version.strip_prefix('v').unwrap_or(version))
}

/// Go's name for this machine's architecture (`GOARCH`), as Kubernetes reports it.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_are_read_like_kubelet() {
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(pretty_name(os).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(pretty_name("PRETTY_NAME=Alpine").as_deref(), Some("Alpine"));
        assert_eq!(pretty_name("ID=x\n"), None);
        assert_eq!(mem_total("MemTotal:        4015520 kB\nMemFree: 1 kB\n"), Some(4015520 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(page_size_kb("hugepages-2048kB"), Some(2048));
        assert_eq!(page_size_kb("nope"), None);
        assert_eq!(size_name(2048), "2Mi");
        assert_eq!(size_name(1048576), "1Gi");
        assert_eq!(runtime_version("v1.7.24"), "containerd://1.7.24");
        assert_eq!(runtime_version("1.6.20~ds1"), "containerd://1.6.20~ds1");
        assert_eq!((go_arch("x86_64"), go_arch("aarch64"), go_arch("riscv64")), ("amd64", "arm64", "riscv64"));
    }

    #[test]
    fn huge_page_sizes_come_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (name, pages) in [("hugepages-1048576kB", "0"), ("hugepages-2048kB", "3")] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("nr_hugepages"), format!("{pages}\n")).unwrap();
        }
        assert_eq!(hugepages(dir.path()), [("2Mi".to_string(), 3 * (2 << 20)), ("1Gi".to_string(), 0)]);
        assert!(hugepages(&dir.path().join("missing")).is_empty());
    }
}
