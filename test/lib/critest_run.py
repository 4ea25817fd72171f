#!/usr/bin/env python3
"""Run the real critest (cri-tools' validation suite or its benchmarks) against a private narwhald, offline.

hack/critest.sh builds the binaries and calls this. It starts a local registry holding the substitute
images (test/lib/critest_images.py) under the public paths critest pulls, a narwhald whose
``registry.mirrors`` send registry.k8s.io, gcr.io, public.ecr.aws and docker.io there, runs
``critest -ginkgo.v`` with a JUnit report, prints the tally and tears everything down. ``--benchmark``
runs ``critest -benchmark`` instead and prints the median of each operation; ``--anchor`` runs the same
against containerd 1.6's own CRI plugin (hack/bench/anchors.py) for a side-by-side table.

    .venv/bin/python test/lib/critest_run.py --critest /tmp/critools/bin/critest --out /tmp/critest-run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "hack", REPO / "hack" / "bench", REPO / "test"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lib import critest_images  # noqa: E402
from lib.cni_host import InstanceNetwork  # noqa: E402
from lib.daemon import start_daemon  # noqa: E402
from lib.registry import Registry, start_registry  # noqa: E402

SUITE_NODES = ("[SynchronizedBeforeSuite]", "[BeforeSuite]", "[AfterSuite]", "[SynchronizedAfterSuite]",
               "[ReportAfterSuite]", "[ReportBeforeSuite]")
# The one spec no offline run can pass: it pulls an upstream image pinned by a digest we cannot rebuild.
OFFLINE_FAILURE = "public image with digest should be pulled and removed"
HOST_PORTS = (12000, 12001, 12002, 12003)  # critest's fixed host ports (port mapping, port forward, hostnet)


def tally(report: Path) -> tuple[Counter[str], list[str]]:
    """Outcomes from critest's JUnit report: (counts by outcome, names of the failed specs)."""
    counts: Counter[str] = Counter()
    failed: list[str] = []
    if not report.exists():
        return counts, failed
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        if name.startswith(SUITE_NODES):
            continue
        status = case.get("status", "")
        if case.find("skipped") is not None or status == "skipped":
            counts["skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None or status == "failed":
            counts["failed"] += 1
            failed.append(name)
        else:
            counts["passed"] += 1
    return counts, failed


# critest -benchmark's sample counts (it has no defaults: without a params file it samples nothing).
BENCHMARK_PARAMS = """containersNumber: 20
containersNumberParallel: 1
containerBenchmarkTimeoutSeconds: 120
podsNumber: 20
podsNumberParallel: 1
podBenchmarkTimeoutSeconds: 120
imagesNumber: 10
imagesNumberParallel: 1
imageBenchmarkTimeoutSeconds: 120
podContainerStartBenchmarkTimeoutSeconds: 120
"""


def run_critest(critest: Path, socket: Path, out: Path, extra: list[str], benchmark: bool) -> int:
    endpoint = f"unix://{socket}"
    out.mkdir(parents=True, exist_ok=True)
    report = out / "junit.xml"
    report.unlink(missing_ok=True)
    args = [str(critest), "-runtime-endpoint", endpoint, "-image-endpoint", endpoint,
            "-ginkgo.no-color", f"-ginkgo.junit-report={report}", "-config", "/dev/null"]
    if not benchmark:
        args.append("-ginkgo.v")  # -benchmark sets its own (succinct) verbosity and refuses a second one
    else:
        (out / "benchmark").mkdir(exist_ok=True)
        (out / "benchmark-params.yaml").write_text(BENCHMARK_PARAMS)
        args += ["-benchmark", "-benchmarking-output-dir", str(out / "benchmark"),
                 "-benchmarking-params-file", str(out / "benchmark-params.yaml")]
    args += extra
    log = out / "critest.log"
    print(f"+ {' '.join(args)}\n  (output: {log})", flush=True)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=out)
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        return proc.wait()


def benchmark_medians(directory: Path) -> dict[str, float]:
    """``benchmark file: operation`` -> median milliseconds, from critest's *_benchmark_data.json."""
    medians: dict[str, float] = {}
    for path in sorted(directory.glob("*_benchmark_data.json")):
        data = json.loads(path.read_text())
        names = data.get("operationsNames") or []
        points = data.get("datapoints") or []
        for i, name in enumerate(names):
            samples = [p["operationsDurationsNs"][i] for p in points if len(p.get("operationsDurationsNs") or []) > i]
            if samples:
                medians[f"{path.name.removesuffix('_benchmark_data.json')}: {name}"] = \
                    statistics.median(samples) / 1e6
    return medians


def benchmark_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per operation, one column per system (median ms), and the ratio to the first."""
    systems = list(results)
    rows = sorted({op for medians in results.values() for op in medians})
    head = "| operation | " + " | ".join(f"{s} p50 ms" for s in systems) + (" | ratio |" if len(systems) > 1 else " |")
    lines = [head, "|" + "---|" * (len(systems) + 1 + (len(systems) > 1))]
    for op in rows:
        values = [results[s].get(op) for s in systems]
        cells = [f"{v:.1f}" if v is not None else "n/a" for v in values]
        ratio = ""
        if len(systems) > 1:
            ratio = f" {values[0] / values[1]:.2f} |" if values[0] and values[1] else " n/a |"
        lines.append(f"| {op} | " + " | ".join(cells) + " |" + ratio)
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def narwhal(registry: Registry) -> Iterator[Path]:
    daemon = start_daemon(critest_images.mirrors_config(registry.host))
    print(f"narwhald: {daemon.cri_socket} (log {daemon.log_path})", flush=True)
    try:
        yield daemon.cri_socket
    finally:
        network = InstanceNetwork.of(daemon.root, daemon.base / "net.d")
        daemon.destroy()
        network.remove()


@contextlib.contextmanager
def containerd(registry: Registry) -> Iterator[Path]:
    """containerd 1.6's own CRI plugin, set up as hack/bench sets it up, mirroring critest's registries."""
    import anchors  # hack/bench

    with anchors.containerd_cri(registry, critest_images.MIRRORED_HOSTS) as system:
        assert system.cri_socket is not None
        print(f"containerd CRI: {system.cri_socket}", flush=True)
        yield system.cri_socket


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--critest", type=Path, required=True, help="the critest binary")
    parser.add_argument("--out", type=Path, default=Path("/tmp/critest-run"), help="logs and JUnit report here")
    parser.add_argument("--benchmark", action="store_true", help="run critest -benchmark instead of validation")
    parser.add_argument("--anchor", action="store_true",
                        help="also run against containerd 1.6's own CRI plugin, side by side")
    parser.add_argument("critest_args", nargs="*", help="more critest flags (after --), e.g. -ginkgo.focus=HostPID")
    args = parser.parse_args()
    busy = [p for p in HOST_PORTS if subprocess.run(["ss", "-Htln", f"sport = :{p}"], capture_output=True,
                                                     text=True).stdout.strip()]
    if busy:
        print(f"critest needs host ports {HOST_PORTS} free; in use: {busy}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    os.umask(0o022)
    systems = {"narwhal": narwhal, **({"containerd": containerd} if args.anchor else {})}
    registry = start_registry()
    status = 0
    medians: dict[str, dict[str, float]] = {}
    try:
        try:
            pushed = critest_images.push_all(registry.host)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"cannot build critest's substitute images: {exc}\n(they need gcc with libc6-dev, and Debian's "
                  "busybox package from apt's cache or `apt-get download busybox`)", file=sys.stderr)
            return 3
        print(f"registry {registry.host}: {len(pushed)} substitute images", flush=True)
        for name, system in systems.items():
            out = args.out if len(systems) == 1 else args.out / name
            with system(registry) as socket:
                rc = run_critest(args.critest, socket, out, args.critest_args, args.benchmark)
            counts, failed = tally(out / "junit.xml")
            print(f"\n{name}: critest exit {rc}: {counts['passed']} passed, {counts['failed']} failed, "
                  f"{counts['skipped']} skipped")
            for spec in failed:
                print(f"  FAILED: {spec}")
            if rc != 0 and counts["passed"] and all(OFFLINE_FAILURE in spec for spec in failed):
                print(f"(only {OFFLINE_FAILURE!r} failed: it needs an upstream image, so this run counts as a pass)")
                rc = 0
            status = status or rc
            if args.benchmark:
                medians[name] = benchmark_medians(out / "benchmark")
    finally:
        registry.stop()
    if args.benchmark:
        table = benchmark_table(medians)
        (args.out / "benchmark.md").write_text(table)
        print(f"\ncritest -benchmark, median per operation ({args.out / 'benchmark.md'}):\n{table}")
    return status


if __name__ == "__main__":
    sys.exit(main())
