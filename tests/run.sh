#!/usr/bin/env bash
# Runs Skerry's whole test suite: unit tests and end-to-end tests against a real containerd,
# runc, nftables and network namespaces (each test starts its own containerd and skerryd).
# Installs what is missing from Debian's packages first. Run as root: sudo tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: the end-to-end tests need root (sudo $0)" >&2; exit 1; }
source packaging/install-deps.sh

# Code health first: formatting and clippy (warnings are errors), as CI checks them.
cargo fmt --all --check || { echo "error: run 'cargo fmt --all' and commit the result" >&2; exit 1; }
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --tests --locked
# Two test binaries at a time keep a 2-core machine responsive; tests inside a binary share it.
cargo test --workspace --locked --no-fail-fast -j 2 -- --test-threads="${SKERRY_TEST_THREADS:-4}"
