"""docker build benchmarks with the real docker CLI (legacy builder protocol: ``DOCKER_BUILDKIT=0`` for both
sides), against narwhald's builder and dockerd's classic builder, on the same Dockerfiles.

* two independent stages (each ``RUN sleep``), ``--no-cache``: narwhald runs them in parallel, dockerd's classic
  builder one after the other (target: ≤ 0.6× dockerd);
* a fully cached rebuild of a context with files copied (≤ 1.0×);
* a rebuild after changing one file that a late COPY reads (the steps before it cached).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anchors import DOCKER_CLI, System
from results import Results

GROUP = "Docker"
ANCHOR = "dockerd"
PARALLEL = ("FROM busybox AS a\nRUN sleep {sleep} && echo a > /a\n"
            "FROM busybox AS b\nRUN sleep {sleep} && echo b > /b\n"
            "FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n")
CACHED = ("FROM busybox\nRUN echo one > /one\nCOPY early /early\nRUN echo two > /two\nCOPY late /late\n"
          "CMD [\"cat\", \"/late\"]\n")


@dataclass(frozen=True)
class BuildPlan:
    builds: int = 5
    sleep: int = 2  # seconds each parallel stage's RUN sleeps


def rows(plan: BuildPlan) -> dict[str, str]:
    return {
        "parallel": f"docker build, two independent stages (RUN sleep {plan.sleep} each), --no-cache",
        "cached": "docker build, fully cached rebuild",
        "changed": "docker build, one late-copied file changed",
    }


def declare(results: Results, plan: BuildPlan) -> None:
    names = rows(plan)
    results.row(GROUP, names["parallel"], "ms", ANCHOR, target=0.6)
    results.row(GROUP, names["cached"], "ms", ANCHOR, target=1.0)
    results.row(GROUP, names["changed"], "ms", ANCHOR)


def build(system: System, ctx: Path, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([DOCKER_CLI, "build", "-q", *args, str(ctx)], env={**system.docker_env(),
                          "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True, timeout=600)
    elapsed = 1000 * (time.perf_counter() - start)
    if proc.returncode != 0:
        raise RuntimeError(f"docker build: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:160]}")
    return elapsed


def run(systems: list[System], plan: BuildPlan, results: Results, log: Callable[[str], None]) -> None:
    names = rows(plan)
    with tempfile.TemporaryDirectory(prefix="nw-bench-build-") as tmp:
        parallel = Path(tmp, "parallel")
        parallel.mkdir()
        (parallel / "Dockerfile").write_text(PARALLEL.format(sleep=plan.sleep))
        cached = Path(tmp, "cached")
        cached.mkdir()
        (cached / "Dockerfile").write_text(CACHED)
        (cached / "early").write_bytes(os.urandom(1 << 20))
        (cached / "late").write_text("0\n")
        live: list[System] = []
        for system in systems:
            with results.guard(GROUP, list(names.values()), system.name, log):
                build(system, cached)  # warm-up: base image present, cache filled
                live.append(system)

        def each(row: str, step: Callable[[System], float]) -> None:
            for i in range(plan.builds):
                for system in live if i % 2 == 0 else list(reversed(live)):
                    try:
                        results.add(GROUP, row, system.name, step(system))
                    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                        log(f"  {system.name} {row}: round {i} failed: {err}")
                        results.get(GROUP, row).failed(system.name, err)

        log(f"  {plan.builds} x each build row")
        each(names["parallel"], lambda s: build(s, parallel, "--no-cache"))
        each(names["cached"], lambda s: build(s, cached))
        counter = iter(range(1, 1 << 30))

        def changed(system: System) -> float:
            (cached / "late").write_text(f"{next(counter)}\n")
            return build(system, cached)
        each(names["changed"], changed)
