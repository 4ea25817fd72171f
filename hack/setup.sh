#!/usr/bin/env bash
# Idempotent set-up: Debian packages, .venv with the project and its test extras,
# and containerd's gRPC stubs.  Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  containerd runc containernetworking-plugins iptables iproute2 catatonit busybox-static
  docker-registry apache2-utils golang-github-containerd-containerd-dev
  # Swarm mode: each manager runs a private etcd member (pkg/docker/swarm/etcd.py).
  etcd-server
  # Tests only: the SPDY library kubelet and crictl use (moby/spdystream), built offline with Go,
  # drives the streaming server in test/integration/test_streaming_interop.py.
  golang-go golang-github-docker-spdystream-dev
  # Tests only: promtool checks the /metrics exposition (test/unit/test_metrics*.py, test_observability*.py).
  prometheus
  # Tests only: Compose v1 (docker-py underneath) as a real client of the Docker API (test/integration/test_compose.py).
  docker-compose
  # Tests only: systemd-analyze verifies the package's unit (test/integration/test_deb.py); dpkg-deb is dpkg's.
  systemd
  # Tests only: moby's swagger.yaml (API v1.41), which test/integration/test_security_schemathesis.py fuzzes.
  golang-github-docker-docker-dev
)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup: must run as root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system registry on :5000; tests run their own.
if systemctl is-active --quiet docker-registry 2>/dev/null; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
# Debian's etcd-server package starts a system etcd on :2379; narwhald runs its own members.
if systemctl is-active --quiet etcd 2>/dev/null; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
# Likewise Debian's prometheus package starts a server (and node exporter) that the tests do not want.
for unit in prometheus prometheus-node-exporter; do
  if systemctl is-active --quiet "$unit" 2>/dev/null; then systemctl disable --now "$unit" >/dev/null 2>&1 || true; fi
done

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.narwhal-installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
if [ ! -f pkg/containerd/api/services/tasks/v1/tasks_pb2.py ] || [ hack/gen_containerd_api.py -nt pkg/containerd/api/services/tasks/v1/tasks_pb2.py ]; then
  .venv/bin/python hack/gen_containerd_api.py
fi
