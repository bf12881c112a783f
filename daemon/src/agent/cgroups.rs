//! Pod cgroups: containers run under `<cgroup-parent>/pod<uid>/<container-id>`, and a pod's
//! tree is removed with the pod (runc removes a container's own cgroup, never its parents).

use std::path::{Path, PathBuf};

/// The cgroup path of one container, relative to every hierarchy's root.
pub fn container_path(parent: &str, pod_uid: &str, container_id: &str) -> String {
    format!("{}/{}", pod_path(parent, pod_uid), container_id)
}

/// The cgroup path of a pod.
pub fn pod_path(parent: &str, pod_uid: &str) -> String {
    format!("{}/pod{}", parent.trim_end_matches('/'), pod_uid)
}

/// The mount points of every cgroup hierarchy (v1 controllers and the v2 unified tree).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount))
        })
        .collect()
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
    #[test]
    fn paths() {
        assert_eq!(super::container_path("/skerry/", "u1", "c1"), "/skerry/podu1/c1");
        assert_eq!(super::pod_path("/skerry", "u1"), "/skerry/podu1");
    }
}
