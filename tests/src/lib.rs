//! Test support: images, containerd, skerryd.
//!
//! # Layout
//! - [`images`]: deterministic busybox test images (OCI and docker archives).
//! - [`containerd`]: a private containerd per test, torn down on drop.
//! - [`netns`]: a network namespace per test node, joined to the root namespace by a veth pair,
//!   or to a cluster's test switch (a bridge in a namespace of its own).
//! - [`hostpath`]: exclusive use of host paths the manifests name, removed after the test.
//! - [`registry`]: a private docker-registry on 127.0.0.1 (of the root or a node's namespace) for pull tests.
//! - [`skerryd`]: a real skerryd per test, inside its own network namespace with its own CNI
//!   config ([`skerryd::TestNode`] = containerd + skerryd), and the CLI.
//! - [`cluster`]: several nodes on one test switch ([`cluster::TestCluster`]), with cut/heal,
//!   kill -9 and restart of a node.
//! - [`standins`]: stand-in images under the names the conformance manifests use.
//! - [`http`]: raw API requests and watch streams over the daemon's socket.
//! - [`pty`]: running a command under a pseudo-terminal (`exec -it`).
//! - [`wait_until`]: poll a condition with a deadline instead of sleeping.

pub mod cluster;
pub mod containerd;
pub mod hostpath;
pub mod http;
pub mod images;
pub mod netns;
pub mod pty;
pub mod registry;
pub mod skerryd;
pub mod standins;
pub mod svc;

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds; panics naming `what` at the deadline.
pub fn wait_until<F: FnMut() -> bool>(deadline: Instant, what: &str, mut cond: F) {
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of a folder of `../shared/conformance` (relative to the workspace).
pub fn conformance(rel: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    let p = root.join(rel);
    assert!(p.exists(), "{} is missing (the conformance manifests live in ../shared/conformance)", p.display());
    p
}
