"""Density benchmarks (issue 21): what a running pod costs the node, how fast many pods come and go,
and a cold pull of big incompressible layers, against containerd's CRI plugin on the same machine.

* memory per pod, over ``mem_pods`` and ``mem_pods_max`` running pods (one ``sleep`` container each,
  no stdin): the proportional set size (PSS, so the shims' and loggers' shared code is counted once,
  not once per process) of every per-pod process the system runs (its runc v2 shims and everything
  they started that is not the workload: narwhal-logger for Narwhal, the pause container for
  containerd's CRI) plus what the daemons grew by since before the pods (narwhald and its containerd;
  containerd with CRI), divided by the pod count.
* 50 pods started concurrently (RunPodSandbox + CreateContainer + StartContainer each) and then removed
  concurrently (StopPodSandbox + RemovePodSandbox each): two wall times.
* PullImage of a ~100 MiB image of five incompressible 20 MiB layers (removed before each pull).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from anchors import System
from cri_bench import GROUP, Driver, _interleaved
from results import Results

ANCHOR = "containerd"
WORKLOAD = ["sleep", "3600"]
COLD_LAYERS, COLD_LAYER_MB = 5, 20
MEMORY_TARGET = 0.5  # issue 21: total node memory per pod at most half of containerd's


@dataclass(frozen=True)
class DensityPlan:
    mem_pods: int = 10
    mem_pods_max: int = 50
    density_pods: int = 50
    density_rounds: int = 2
    cold_pulls: int = 3


def memory_row(n: int) -> str:
    return f"memory per pod, {n} pods"


def declare(results: Results, plan: DensityPlan) -> None:
    for n in (plan.mem_pods, plan.mem_pods_max):
        results.row(GROUP, memory_row(n), "MiB", ANCHOR, target=MEMORY_TARGET,
                    note="PSS of shims + loggers/pause + daemon growth (narwhald and its containerd) per running pod")
    results.row(GROUP, f"{plan.density_pods} pods started concurrently (density)", "s", ANCHOR,
                note="wall time, RunPodSandbox+CreateContainer+StartContainer each")
    results.row(GROUP, f"{plan.density_pods} pods removed concurrently (density)", "s", ANCHOR,
                note="wall time, StopPodSandbox+RemovePodSandbox each")
    results.row(GROUP, "PullImage, cold, 5 × 20 MiB", "s", ANCHOR,
                note="five incompressible 20 MiB layers from the local registry")


def pss_kib(pid: int) -> int:
    """Proportional set size of one process, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (proc / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            tree.setdefault(ppid, []).append(int(proc.name))
    return tree


def per_pod_processes(system: System) -> dict[str, list[int]]:
    """The system's shims (their command line names the system's base dir: its containerd socket) and
    what they started that is not a workload, by kind: ``shim``, ``logger``, ``pause``, ``other``."""
    needle = str(system.base)
    tree = _children()
    shims = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
             and (args := _cmdline(int(p.name))) and args[0].endswith("containerd-shim-runc-v2")
             and any(needle in a for a in args)]
    kinds: dict[str, list[int]] = {"shim": shims, "logger": [], "pause": [], "other": []}
    stack = [c for s in shims for c in tree.get(s, [])]
    while stack:
        pid = stack.pop()
        args = _cmdline(pid)
        if args == WORKLOAD:
            continue  # the workload, and whatever it runs, is the user's
        text = " ".join(args)
        kind = ("logger" if "narwhal-logger" in text or "pkg.logs.logger" in text or "logger.py" in text
                else "pause" if args and (args[0].endswith("/pause") or "catatonit" in args[0]) else "other")
        kinds[kind].append(pid)
        stack.extend(tree.get(pid, []))
    return kinds


def node_pss(system: System) -> dict[str, float]:
    """MiB of PSS: each daemon, and each kind of per-pod process summed."""
    out = {name: pss_kib(pid) / 1024 for name, pid in system.daemon_pids().items()}
    for kind, pids in per_pod_processes(system).items():
        out[kind] = sum(pss_kib(p) for p in pids) / 1024
        out[f"{kind}s"] = float(len(pids))
    return out


def settled_pss(system: System, seconds: float = 2.0) -> dict[str, float]:
    samples = []
    for _ in range(5):
        time.sleep(seconds / 5)
        samples.append(node_pss(system))
    return {key: statistics.median(s.get(key, 0.0) for s in samples) for key in samples[0]}


def _daemons(system: System, pss: dict[str, float]) -> float:
    return sum(pss.get(name, 0.0) for name in system.daemon_pids())


def _start(d: Driver, n: int, threads: int) -> list[str]:
    with ThreadPoolExecutor(threads) as pool:
        return [sid for sid, _, _ in pool.map(lambda _: d.pod(WORKLOAD), range(n))]


def _remove(d: Driver, sids: list[str], threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(d.teardown, sids))


def run(systems: list[System], images: dict[str, str], plan: DensityPlan, results: Results,
        log: Callable[[str], None]) -> None:
    """Every system is up; each benchmark runs on all of them interleaved round by round."""
    drivers = [Driver(system, images, results) for system in systems]
    try:
        for d in drivers:  # busybox (and containerd's pause image) present: pulls are not measured here
            d.pull(images["busybox"])
            if d.system.name == ANCHOR:
                d.pull(images["pause"])
            d.teardown(d.pod(WORKLOAD)[0])  # first-use costs (snapshots, CNI config) are not measured
        _run(drivers, images, plan, results, log)
    finally:
        for d in drivers:
            d.close()


def _run(drivers: list[Driver], images: dict[str, str], plan: DensityPlan, results: Results,
         log: Callable[[str], None]) -> None:
    def each(rows: list[str], rounds: int, step: Callable[[Driver], None]) -> None:
        for i, d in _interleaved(drivers, rounds):
            try:
                step(d)
            except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                log(f"  {d.system.name} {', '.join(rows)}: round {i} failed: {err!r}")
                for row in rows:
                    results.get(GROUP, row).failed(d.system.name, err)

    log(f"  memory per pod with {plan.mem_pods} and {plan.mem_pods_max} pods, one system at a time")

    def memory(d: Driver) -> None:
        sids: list[str] = []
        try:
            before = settled_pss(d.system)
            for n in (plan.mem_pods, plan.mem_pods_max):
                sids += _start(d, n - len(sids), 8)
                now = settled_pss(d.system)
                growth = _daemons(d.system, now) - _daemons(d.system, before)
                per_pod = sum(now[k] for k in ("shim", "logger", "pause", "other"))
                results.add(GROUP, memory_row(n), d.system.name, (per_pod + growth) / n)
                results.profiles[f"{d.system.name}, {n} pods"] = {
                    "before": before, "after": now, "daemon growth MiB": growth}
                log(f"  {d.system.name} {n} pods: " + ", ".join(f"{k} {v:.1f}" for k, v in now.items())
                    + f"; daemon growth {growth:.1f} MiB")
        finally:
            _remove(d, sids, 8)

    each([memory_row(plan.mem_pods), memory_row(plan.mem_pods_max)], 1, memory)

    started_row = f"{plan.density_pods} pods started concurrently (density)"
    removed_row = f"{plan.density_pods} pods removed concurrently (density)"
    log(f"  {plan.density_pods} pods at once, x{plan.density_rounds}")

    def density(d: Driver) -> None:
        start = time.perf_counter()
        sids = _start(d, plan.density_pods, plan.density_pods)
        results.add(GROUP, started_row, d.system.name, time.perf_counter() - start)
        start = time.perf_counter()
        _remove(d, sids, plan.density_pods)
        results.add(GROUP, removed_row, d.system.name, time.perf_counter() - start)

    each([started_row, removed_row], plan.density_rounds, density)

    log(f"  {plan.cold_pulls} cold pulls of {images['cold']}")

    def pull(d: Driver) -> None:
        start = time.perf_counter()
        d.pull(images["cold"])
        results.add(GROUP, "PullImage, cold, 5 × 20 MiB", d.system.name, time.perf_counter() - start)
        d.remove_image(images["cold"])

    each(["PullImage, cold, 5 × 20 MiB"], plan.cold_pulls, pull)
