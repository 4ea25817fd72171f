"""The two PullImage rows alone (`make bench ARGS="--only pull"`), with where a pull's time goes.

Both images of issue 21 (the ~100 MB image of 9 layers, and five incompressible 20 MiB layers), pulled
cold ``pull_rounds`` times each by narwhald and containerd's CRI, interleaved round by round and removed
after each pull (the same rows as the full run's CRI and density groups).  Per pull, around the pull
only: narwhald's containerd calls from its own histograms (breakdown.py), and the CPU seconds each
daemon process spent (/proc/<pid>/stat, user + system, with reaped children such as containerd's
unpigz): on a 2-core host a pull is CPU-bound, so that says who spends it.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import breakdown
from anchors import System
from cri_bench import ANCHOR, GROUP, Driver, _interleaved
from results import Results

ROWS = {"big": "PullImage", "cold": "PullImage, cold, 5 × 20 MiB"}
NOTES = {"big": "multi-layer image from the local registry",
         "cold": "five incompressible 20 MiB layers from the local registry"}
TICKS = 100.0  # USER_HZ: /proc/<pid>/stat counts CPU time in these


@dataclass(frozen=True)
class PullPlan:
    pull_rounds: int = 5


def declare(results: Results, plan: PullPlan) -> None:
    for image, row in ROWS.items():
        results.row(GROUP, row, "s", ANCHOR, note=NOTES[image])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children it has reaped (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICKS  # utime, stime, cutime, cstime


def run(systems: list[System], images: dict[str, str], plan: PullPlan, results: Results,
        log: Callable[[str], None]) -> None:
    drivers = [Driver(system, images, results) for system in systems]
    try:
        for image, row in ROWS.items():
            log(f"  {plan.pull_rounds} cold pulls of {images[image]} each")
            _rounds(drivers, images[image], row, plan.pull_rounds, results, log)
    finally:
        for d in drivers:
            d.close()


def _rounds(drivers: list[Driver], ref: str, row: str, rounds: int, results: Results,
            log: Callable[[str], None]) -> None:
    cpu: dict[str, collections.Counter[str]] = {d.system.name: collections.Counter() for d in drivers}
    calls: dict[tuple[str, str], list[float]] = {}
    pulls = collections.Counter[str]()
    for i, d in _interleaved(drivers, rounds):
        pids = d.system.daemon_pids()
        metrics = d.system.metrics_url
        try:
            scraped = breakdown.scrape(metrics) if metrics else {}
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            start = time.perf_counter()
            d.pull(ref)
            results.add(GROUP, row, d.system.name, time.perf_counter() - start)
            for name, pid in pids.items():
                cpu[d.system.name][name] += cpu_seconds(pid) - before[name]
            pulls[d.system.name] += 1
            if metrics:
                for key, (total, count) in breakdown.scrape(metrics).items():
                    total0, count0 = scraped.get(key, (0.0, 0.0))
                    acc = calls.setdefault(key, [0.0, 0.0])
                    acc[0] += total - total0
                    acc[1] += count - count0
            d.remove_image(ref)
        except Exception as err:  # noqa: BLE001 - recorded, the run goes on
            log(f"  {d.system.name} {row}: round {i} failed: {err!r}")
            results.get(GROUP, row).failed(d.system.name, err)
    for name, spent in cpu.items():
        n = max(1, pulls[name])
        per_pull = {proc: round(seconds / n, 3) for proc, seconds in spent.items()}
        results.profiles[f"CPU seconds per pull, {row}, {name}"] = per_pull
        log(f"  {name}: CPU seconds per pull: " + ", ".join(f"{k} {v:.2f}" for k, v in per_pull.items()))
    narwhal = pulls.get("narwhal", 0)
    if calls and narwhal:
        found = breakdown.diff({}, {k: (v[0], v[1]) for k, v in calls.items()}, narwhal)
        results.breakdown[f"narwhal, {row}"] = {"unit": "pull", "calls": found}
