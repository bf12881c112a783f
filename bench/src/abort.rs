//! Cleanup before an abort: the release profile has `panic = "abort"`, so a panic inside the e2e
//! harness (a node that does not start, a join that fails) ends the bench at once and no guard's
//! `Drop` runs — its skerryds, containerds, network namespaces and temp dirs would stay. The
//! panic hook [`install`] sets runs before the abort and removes what this process started,
//! found from the process tree rather than from the guards (which the panicking code owns):
//!
//! - every process below this one (skerryd, containerd, `skerry` CLIs), and the containerd
//!   shims and containers of those containerds (shims detach, so they are found by the
//!   containerd directory in their argv, containers by that directory's cgroup parent);
//! - the test namespaces those processes ran in (`sk-n<tag>-<i>`), and with them every
//!   namespace of the same tag (the cluster's switch `sk-s<tag>`);
//! - the `/tmp/sk-skerryd-*` and `/tmp/sk-ctrd-*` directories named in their argv (mounts
//!   below detached first), the containerds' runc state and cgroups.
//!
//! Only what this process started is touched; what could not be removed is printed.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// Installs the hook (a no-op in builds that unwind: there the guards clean up).
pub fn install() {
    if !cfg!(panic = "abort") {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        eprintln!("skerry-bench: a panic aborts this build; removing what the bench started");
        clean_up();
    }));
}

fn clean_up() {
    let me = std::process::id();
    let mut tags = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let namespaces: Vec<(String, u64)> = fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.path().metadata().ok()?.ino())))
                .collect()
        })
        .unwrap_or_default();
    // Twice: a harness thread may have been starting a process during the first round.
    for _ in 0..2 {
        let ours = sys::descendants(me);
        for (pid, argv) in &ours {
            if let Ok(ns) = fs::metadata(format!("/proc/{pid}/ns/net")) {
                for (name, ino) in &namespaces {
                    if *ino == ns.ino() {
                        if let Some(tag) = name.strip_prefix("sk-n").and_then(|t| t.split('-').next()) {
                            tags.insert(tag.to_string());
                        }
                    }
                }
            }
            for flag in ["--data-dir", "--config"] {
                let Some(parent) = sys::flag_value(argv, flag).and_then(|v| Path::new(v).parent()) else { continue };
                let name = parent.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if parent.parent() == Some(Path::new("/tmp"))
                    && (name.starts_with("sk-skerryd-") || name.starts_with("sk-ctrd-"))
                {
                    dirs.insert(parent.to_path_buf());
                }
            }
        }
        let ctrds: Vec<String> = dirs
            .iter()
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("sk-ctrd-"))
            .collect();
        let mut pids: Vec<u32> = ours.iter().map(|(pid, _)| *pid).collect();
        for (pid, argv) in sys::processes() {
            let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if ctrds
                .iter()
                .any(|c| argv.iter().any(|a| a.contains(&format!("/{c}/"))) || cgroup.contains(&format!("/{c}/")))
            {
                pids.push(pid);
            }
        }
        pids.retain(|p| *p != me);
        for pid in &pids {
            // SAFETY: kill has no memory preconditions; every PID is one this bench started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
            reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        reap();
    }
    let mut left = Vec::new();
    for dir in &dirs {
        skerry_tests::skerryd::unmount_below(dir);
        if let Err(e) = fs::remove_dir_all(dir) {
            left.push(format!("{}: {e}", dir.display()));
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("sk-ctrd-") {
            // runc keeps state under the containerd namespace: the directory's name in lower case.
            let _ = fs::remove_dir_all(Path::new("/run/containerd/runc").join(name.to_lowercase()));
            remove_cgroups(&name);
        }
    }
    for tag in &tags {
        // Node namespaces first, the switch last.
        let mut names: Vec<&String> = namespaces.iter().map(|(n, _)| n).filter(|n| n.contains(tag.as_str())).collect();
        names.sort_by_key(|n| n.starts_with("sk-s"));
        for name in names {
            match std::process::Command::new("/usr/sbin/ip").args(["netns", "delete", name]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => left.push(format!("netns {name}: {}", String::from_utf8_lossy(&out.stderr).trim())),
                Err(e) => left.push(format!("netns {name}: running /usr/sbin/ip: {e}")),
            }
        }
    }
    eprintln!(
        "skerry-bench: removed {} director{} and the namespaces of cluster tag{} {:?}",
        dirs.len(),
        if dirs.len() == 1 { "y" } else { "ies" },
        if tags.len() == 1 { "" } else { "s" },
        tags
    );
    for l in left {
        eprintln!("skerry-bench: still there: {l}");
    }
}

/// Reaps this process's exited children, so they do not stay as zombies.
fn reap() {
    // SAFETY: waitpid with WNOHANG and a null status pointer has no preconditions.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

/// Removes the cgroup `/<name>` and everything below it in every mounted hierarchy (a cgroup
/// directory goes with `rmdir` once it holds no process; deepest first).
fn remove_cgroups(name: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else { return };
    for h in hierarchies.flatten() {
        let top = h.path().join(name);
        if !top.is_dir() {
            continue;
        }
        let mut all: Vec<PathBuf> = Vec::new();
        let mut todo = vec![top];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
            all.push(d);
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in all {
            let _ = fs::remove_dir(d);
        }
    }
}
