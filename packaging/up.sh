#!/usr/bin/env bash
# Brings up a single-node Skerry on this host and runs a demo pod:
# installs missing packages, builds, starts containerd (if it is not running) and skerryd,
# imports a demo image built from busybox-static, and applies a demo pod.
# Run as root from the repository: sudo packaging/up.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (sudo $0)" >&2; exit 1; }
source packaging/install-deps.sh

cargo build --release --workspace --bins
bin=$PWD/target/release
install -m 0755 "$bin/skerryd" "$bin/skerry" "$bin/skerry-logger" /usr/local/bin/
install -d -m 0755 /opt/cni/bin
install -m 0755 "$bin/skerry-cni" /opt/cni/bin/
install -d -m 0755 /etc/skerry /run/skerry
[ -f /etc/skerry/config.yaml ] || install -m 0644 packaging/config.yaml /etc/skerry/config.yaml
getent group skerry >/dev/null || groupadd --system skerry

containerd_sock=/run/containerd/containerd.sock
if ! [ -S "$containerd_sock" ]; then
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start containerd
  else
    echo "starting containerd (log: /var/log/containerd.log)"
    nohup containerd >/var/log/containerd.log 2>&1 &
  fi
fi
for _ in $(seq 100); do [ -S "$containerd_sock" ] && break; sleep 0.1; done
[ -S "$containerd_sock" ] || { echo "error: containerd did not start; see /var/log/containerd.log" >&2; exit 1; }

sock=/run/skerry/skerry.sock
if ! skerry --socket "$sock" version >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    install -m 0644 packaging/skerryd.service /etc/systemd/system/skerryd.service
    systemctl daemon-reload
    systemctl enable --now skerryd
  else
    echo "starting skerryd (log: /var/log/skerryd.log)"
    nohup /usr/local/bin/skerryd >/var/log/skerryd.log 2>&1 &
  fi
fi
for _ in $(seq 100); do skerry version >/dev/null 2>&1 && break; sleep 0.1; done
skerry version

demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
echo '<h1>Hello from Skerry</h1>' >"$demo/index.html"
"$bin/skerry-mkimage" busybox --name docker.io/library/skerry-demo:1.0 --out "$demo/demo.tar" \
  --expose 80/tcp --file /www/index.html="$demo/index.html" --cmd httpd -f -p 80 -h /www
skerry image import "$demo/demo.tar"
skerry apply -f packaging/demo-pod.yaml
for _ in $(seq 300); do
  skerry get pod demo -o json | grep -q '"phase": *"Running"' && break
  sleep 0.1
done
skerry get pods
echo
echo "The demo pod answers on its pod IP:"
ip=$(skerry get pod demo -o json | sed -n 's/.*"podIP": *"\([0-9.]*\)".*/\1/p' | head -1)
skerry exec demo -- wget -qO- "http://$ip:80"
echo
echo "Try: skerry get pods -o wide; skerry describe pod demo; skerry logs demo; skerry exec -it demo -- sh"
