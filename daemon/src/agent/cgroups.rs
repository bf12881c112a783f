//! Pod cgroups: containers run under `<cgroup-parent>/pod<uid>/<container-id>`, and a pod's
//! tree is removed with the pod (runc removes a container's own cgroup, never its parents).
//! Also what the agent reads from a container's memory cgroup: whether the host accounts swap
//! (so a limit can forbid it) and the kernel's OOM-kill counter.
//!
//! OOM detection reads the counter (`oom_kill` in v1 `memory.oom_control`, v2 `memory.events`)
//! when the worker sees the task exited. The cgroup lives until the task is deleted, which the
//! worker does only after recording the exit, and an exited task survives a `skerryd` restart,
//! so this needs no subscription to containerd's `/tasks/oom` events and misses none that
//! happened while `skerryd` was down.

use std::path::{Path, PathBuf};

/// The cgroup path of one container, relative to every hierarchy's root.
pub fn container_path(parent: &str, pod_uid: &str, container_id: &str) -> String {
    format!("{}/{}", pod_path(parent, pod_uid), container_id)
}

/// The cgroup path of a pod.
pub fn pod_path(parent: &str, pod_uid: &str) -> String {
    format!("{}/pod{}", parent.trim_end_matches('/'), pod_uid)
}

/// One cgroup hierarchy as mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    /// `cgroup2` (the unified tree) rather than a v1 hierarchy.
    unified: bool,
    /// The v1 controllers bound to it (from the super options); empty for v2.
    controllers: Vec<String>,
}

/// The cgroup hierarchies in a `/proc/self/mountinfo` text.
fn parse_mountinfo(info: &str) -> Vec<Hierarchy> {
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or("");
            let mount = left.split(' ').nth(4)?;
            let unified = match fstype {
                "cgroup" => false,
                "cgroup2" => true,
                _ => return None,
            };
            let controllers = if unified { Vec::new() } else { options.split(',').map(String::from).collect() };
            Some(Hierarchy { mount: PathBuf::from(mount), unified, controllers })
        })
        .collect()
}

fn mounted() -> Vec<Hierarchy> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|i| parse_mountinfo(&i)).unwrap_or_default()
}

/// The mount points of every cgroup hierarchy (v1 controllers and the v2 unified tree).
fn hierarchies() -> Vec<PathBuf> {
    mounted().into_iter().map(|h| h.mount).collect()
}

/// Where the memory controller lives: the v1 `memory` hierarchy, else the unified tree (a
/// hybrid host's unified mount has no controllers; runc then uses v1, and so do we).
fn memory_hierarchy(all: &[Hierarchy]) -> Option<&Hierarchy> {
    all.iter()
        .find(|h| !h.unified && h.controllers.iter().any(|c| c == "memory"))
        .or_else(|| all.iter().find(|h| h.unified))
}

/// Whether a memory + swap limit can be set (containerd's CRI plugin asks the same before it
/// sets `swap` = `limit`): v1 needs swap accounting (`memory.memsw.limit_in_bytes`), v2 the
/// swap controller (`memory.swap.max`, looked up in our own cgroup: the root has none).
/// Asked once per process; blocking the first time (small file reads).
pub fn swap_limit_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(detect_swap_limit)
}

fn detect_swap_limit() -> bool {
    let all = mounted();
    let Some(memory) = memory_hierarchy(&all) else { return false };
    if !memory.unified {
        return memory.mount.join("memory.memsw.limit_in_bytes").exists();
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
    memory.mount.join(own.trim_start_matches('/')).join("memory.swap.max").exists()
}

/// The `oom_kill` count of a v1 `memory.oom_control` or v2 `memory.events` text.
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

/// How many processes the kernel OOM-killed in the cgroup at `relative` (a container's), or
/// `None` when the cgroup or the counter is not there (kernels before 4.13 lack it on v1).
/// Blocking (a small sysfs read).
pub fn oom_kills(relative: &str) -> Option<u64> {
    let all = mounted();
    let memory = memory_hierarchy(&all)?;
    let file = if memory.unified { "memory.events" } else { "memory.oom_control" };
    let text = std::fs::read_to_string(memory.mount.join(relative.trim_start_matches('/')).join(file)).ok()?;
    oom_kill_count(&text)
}

/// Removes the (empty) cgroup directories at `relative` in every hierarchy, deepest first.
/// Directories that still hold processes stay; nothing here fails loudly.
pub fn remove_tree(relative: &str) {
    for root in hierarchies() {
        let dir = root.join(relative.trim_start_matches('/'));
        remove_dirs(&dir);
    }
}

fn remove_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dirs(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
40 22 0:5 / /proc rw - proc proc rw";

    const UNIFIED: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
40 22 0:5 / /proc rw - proc proc rw";

    #[test]
    fn finds_the_memory_controller_on_v1_and_v2() {
        let hybrid = parse_mountinfo(HYBRID);
        assert_eq!(hybrid.len(), 3);
        assert_eq!(hybrid[1].controllers, ["rw", "cpu", "cpuacct"]);
        let m = memory_hierarchy(&hybrid).unwrap();
        assert_eq!(
            (m.mount.to_str().unwrap(), m.unified),
            ("/sys/fs/cgroup/memory", false),
            "a hybrid host uses v1 memory"
        );
        let unified = parse_mountinfo(UNIFIED);
        let m = memory_hierarchy(&unified).unwrap();
        assert_eq!((m.mount.to_str().unwrap(), m.unified), ("/sys/fs/cgroup", true));
        assert_eq!(memory_hierarchy(&parse_mountinfo("40 22 0:5 / /proc rw - proc proc rw")), None);
    }

    #[test]
    fn reads_the_oom_kill_counter() {
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), Some(2), "v1 memory.oom_control");
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 13\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1),
            "v2 memory.events"
        );
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None, "kernels before 4.13");
        assert_eq!(oom_kills("/no-such-cgroup-for-skerry-tests/x"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(super::container_path("/skerry/", "u1", "c1"), "/skerry/podu1/c1");
        assert_eq!(super::pod_path("/skerry", "u1"), "/skerry/podu1");
    }
}
