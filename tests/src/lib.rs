//! Test support: images, containerd, skerryd.
//!
//! # Layout
//! - [`images`]: deterministic busybox test images (OCI and docker archives).
//! - [`containerd`]: a private containerd per test, torn down on drop.
//! - [`registry`]: a private docker-registry on 127.0.0.1 for pull tests.
//! - [`wait_until`]: poll a condition with a deadline instead of sleeping.

pub mod containerd;
pub mod images;
pub mod registry;

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
