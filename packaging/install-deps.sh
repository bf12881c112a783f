#!/usr/bin/env bash
# Installs what Skerry needs to build, run and test on Debian 12, from Debian's packages.
# Idempotent: installs only what is missing. Run as root.
set -euo pipefail

packages=(
  containerd runc nftables iproute2 protobuf-compiler busybox-static
  docker-registry skopeo containernetworking-plugins util-linux pkg-config gcc
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
    [ -x "$c" ] && export PATH="$(dirname "$c"):$PATH" && break
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo (Rust 1.85 or newer) is not installed; install it with rustup (https://rustup.rs) and run this again" >&2
  exit 1
fi
