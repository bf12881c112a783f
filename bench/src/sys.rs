//! Process memory, process lookup and the machine line. Starting and removing containerd,
//! skerryd and its network namespace is the e2e harness's job (`skerry_tests`).

use std::fs;

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
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name"))?.split_once(':').map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let model = if cpu_model.is_empty() { String::new() } else { format!(" ({cpu_model})") };
    format!(
        "{cpus} CPUs{model}, {:.1} GiB RAM, kernel {kernel}, containerd {containerd_version}",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

/// The parent PID of `pid`: the field after the state in `/proc/PID/stat` (the command name
/// before it is in parentheses and may hold spaces, so the text after the last `)` is parsed).
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Every process below `root` in the process tree (children, their children, …), as (pid, argv).
/// A daemon that detached itself (a containerd shim) is no longer below its starter.
pub fn descendants(root: u32) -> Vec<(u32, Vec<String>)> {
    let all = processes();
    let parents: std::collections::HashMap<u32, u32> =
        all.iter().filter_map(|(pid, _)| Some((*pid, ppid(*pid)?))).collect();
    all.into_iter()
        .filter(|(pid, _)| {
            let mut p = *pid;
            // Bounded: a PID reused while we read could make a cycle.
            for _ in 0..64 {
                match parents.get(&p) {
                    Some(&parent) if parent == root => return true,
                    Some(&parent) if parent > 1 => p = parent,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// The value after `flag` in `argv` (`--socket PATH`).
pub fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str)
}
