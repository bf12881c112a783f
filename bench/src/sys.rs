//! Process memory, process lookup, mounts, the machine line, and the guards that clean up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Resident and peak resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

/// `VmRSS` and `VmHWM` from `/proc/PID/status`.
pub fn mem_of(pid: u32) -> Option<Mem> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Mem { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")?, threads: field("Threads:").unwrap_or(0) })
}

/// (pid, argv) of every process.
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv: Vec<String> =
            cmd.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        if !argv.is_empty() {
            out.push((pid, argv));
        }
    }
    out
}

/// Sum of the memory of every process whose argv matches `pred`, and how many there are.
pub fn mem_of_all(pred: impl Fn(&[String]) -> bool) -> (Mem, usize) {
    let mut total = Mem::default();
    let mut n = 0;
    for (pid, argv) in processes() {
        if pred(&argv) {
            if let Some(m) = mem_of(pid) {
                total.rss_kib += m.rss_kib;
                total.hwm_kib += m.hwm_kib;
                total.threads += m.threads;
                n += 1;
            }
        }
    }
    (total, n)
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

pub fn unmount_below(dir: &Path) {
    for m in mounts_below(dir) {
        let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else { continue };
        // SAFETY: a valid NUL-terminated path; umount2 does not keep the pointer.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// "2 CPUs, 23.5 GiB RAM, kernel 6.1.0"
pub fn machine_line(containerd_version: &str) -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name"))?.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    let model = if cpu_model.is_empty() { String::new() } else { format!(" ({cpu_model})") };
    format!(
        "{cpus} CPUs{model}, {:.1} GiB RAM, kernel {kernel}, containerd {containerd_version}",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

/// Sends `sig` to one process we started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain syscall on a pid we spawned ourselves.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Waits for `child` to exit after SIGTERM, then SIGKILLs it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
}

/// The bench's scratch directory: on drop, unmounts what is left below it (pod sandboxes),
/// removes it and any extra paths registered (runc state of the floor's namespace).
pub struct Scratch {
    pub dir: PathBuf,
    pub extra: Vec<PathBuf>,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("sk-bench-").tempdir_in("/tmp")?.keep();
        Ok(Scratch { dir, extra: Vec::new() })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_below(&self.dir);
        for p in &self.extra {
            let _ = fs::remove_dir_all(p);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// A cgroup parent (`/sk-ctrd-…`) removed from every hierarchy on drop, retrying for a moment.
pub struct CgroupParent(pub String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let rel = self.0.trim_start_matches('/');
        if rel.is_empty() {
            return;
        }
        let mut dirs: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path().join(rel)).collect())
            .unwrap_or_default();
        dirs.push(Path::new("/sys/fs/cgroup").join(rel));
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            dirs.retain(|d| {
                if !d.is_dir() {
                    return false;
                }
                if let Ok(children) = fs::read_dir(d) {
                    for c in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = fs::remove_dir(c.path());
                    }
                }
                fs::remove_dir(d).is_err()
            });
            if dirs.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for d in dirs {
            eprintln!("warning: could not remove cgroup {}", d.display());
        }
    }
}
