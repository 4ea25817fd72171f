#!/usr/bin/env bash
# Run the real critest (cri-tools v1.29.0) against a private narwhald, offline (docs/critest.md).
#
#   hack/critest.sh [--src DIR] [--bin DIR] [--out DIR] [--benchmark] [--anchor] [--build-only] [-- CRITEST FLAGS...]
#
# --src DIR     cri-tools source (default $CRI_TOOLS_SRC or /tmp/cri-tools-src): a `git archive v1.29.0`
#               of kubernetes-sigs/cri-tools. It is only read, never copied into this repository.
# --bin DIR     where crictl and critest are (built there when missing; default $CRITOOLS_BIN or
#               /tmp/critools/bin). test/integration/test_crictl.py uses the crictl found there.
# --out DIR     critest's log, JUnit report and narwhald's log (default /tmp/critest-run)
# --benchmark   run `critest -benchmark` instead of the validation suite (median per operation printed
#               and written to OUT/benchmark.md)
# --anchor      also run the same against containerd 1.6's own CRI plugin (hack/bench/anchors.py), side by side
# --build-only  build the binaries and stop
# After `--`: more critest flags, e.g. -ginkgo.focus='HostPID'.
#
# Needs root, Go (Debian's golang-go 1.19 builds v1.29.0 from its vendor/ dir, GOPROXY=off), gcc with
# libc6-dev (for the test images' helper), and host ports 12000-12003 free (critest's own choice).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
src=${CRI_TOOLS_SRC:-/tmp/cri-tools-src}
bin=${CRITOOLS_BIN:-/tmp/critools/bin}
out=/tmp/critest-run
benchmark=0
anchor=0
build_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --benchmark) benchmark=1; shift ;;
    --anchor) anchor=1; shift ;;
    --build-only) build_only=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

build() {
  if [ -x "$bin/crictl" ] && [ -x "$bin/critest" ]; then
    return
  fi
  if [ ! -f "$src/cmd/critest/cri_test.go" ] || [ ! -d "$src/vendor" ]; then
    cat >&2 <<EOF
critest/crictl are not in $bin and there is no cri-tools source at $src.
Get a copy of https://github.com/kubernetes-sigs/cri-tools (DEVELOPERS.md), then:
  git -C cri-tools archive v1.29.0 | (mkdir -p $src && tar -x -C $src)
and run this again (or pass --src DIR / set CRI_TOOLS_SRC). v1.29.0 is the newest tag Debian's Go 1.19 builds.
EOF
    exit 3
  fi
  command -v go >/dev/null || { echo "go is missing: apt-get install golang-go" >&2; exit 3; }
  mkdir -p "$bin"
  echo "building crictl and critest from $src into $bin (offline, vendored modules; about two minutes)"
  (cd "$src" && GOFLAGS=-mod=vendor GOPROXY=off go build -o "$bin/crictl" ./cmd/crictl \
     && GOFLAGS=-mod=vendor GOPROXY=off go test -c -o "$bin/critest" ./cmd/critest)
}

build
[ "$build_only" = 1 ] && { echo "built: $bin/crictl $bin/critest"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "critest needs root (narwhald runs containers)" >&2; exit 3; }
py="$repo/.venv/bin/python"
[ -x "$py" ] || { echo "no $py: run make setup first" >&2; exit 3; }

args=(--critest "$bin/critest" --out "$out")
[ "$benchmark" = 1 ] && args+=(--benchmark)
[ "$anchor" = 1 ] && args+=(--anchor)
exec "$py" "$repo/test/lib/critest_run.py" "${args[@]}" -- "$@"
