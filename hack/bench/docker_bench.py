"""Docker API benchmarks with the real docker CLI, against narwhald's Docker facade and against dockerd.

Each figure is the wall time of one CLI invocation, so both sides pay the same client start-up:
``docker run --rm busybox true``; ``docker exec <running container> true``; ``docker ps -a`` with
``ps_containers`` containers created.  A failing path is recorded as "n/a (error: ...)" by the caller.
"""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from anchors import DOCKER_CLI, System
from results import Results

GROUP = "Docker"
ANCHOR = "dockerd"
IMAGE = "busybox"


@dataclass(frozen=True)
class DockerPlan:
    runs: int = 20
    execs: int = 20
    ps_containers: int = 100
    ps_calls: int = 10


def rows(plan: DockerPlan) -> dict[str, str]:
    return {
        "run": "docker run --rm busybox true",
        "exec": "docker exec",
        "ps": f"docker ps -a with {plan.ps_containers} containers",
    }


def declare(results: Results, plan: DockerPlan) -> None:
    names = rows(plan)
    results.row(GROUP, names["run"], "ms", ANCHOR, target=0.6)
    results.row(GROUP, names["exec"], "ms", ANCHOR, note="`true` in a running container")
    results.row(GROUP, names["ps"], "ms", ANCHOR)


class CLIError(RuntimeError):
    pass


def docker(system: System, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([DOCKER_CLI, *args], env=system.docker_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise CLIError(f"docker {' '.join(args[:3])}: {(proc.stderr or proc.stdout).strip()[:160]}")
    return proc.stdout


def timed(system: System, results: Results, row: str, *args: str) -> str:
    start = time.perf_counter()
    out = docker(system, *args)
    results.add(GROUP, row, system.name, 1000 * (time.perf_counter() - start))
    return out


def run(system: System, plan: DockerPlan, results: Results, log: Callable[[str], None]) -> None:
    names = rows(plan)
    with results.guard(GROUP, list(names.values()), system.name, log):
        docker(system, "pull", "-q", IMAGE)
        docker(system, "run", "--rm", IMAGE, "true")  # warm-up
    if any(system.name in results.get(GROUP, n).errors for n in names.values()):
        return

    log(f"  {system.name}: {plan.runs} x {names['run']}")
    with results.guard(GROUP, [names["run"]], system.name, log):
        for _ in range(plan.runs):
            timed(system, results, names["run"], "run", "--rm", IMAGE, "true")

    log(f"  {system.name}: {plan.execs} x docker exec")
    with results.guard(GROUP, [names["exec"]], system.name, log):
        cid = docker(system, "run", "-d", IMAGE, "sleep", "3600").strip()
        try:
            for _ in range(plan.execs):
                timed(system, results, names["exec"], "exec", cid, "true")
        finally:
            docker(system, "rm", "-f", cid)

    log(f"  {system.name}: docker ps -a with {plan.ps_containers} containers")
    with results.guard(GROUP, [names["ps"]], system.name, log):
        created: list[str] = []
        try:
            with ThreadPoolExecutor(4) as pool:
                created = list(pool.map(lambda _: docker(system, "create", IMAGE, "true").strip(),
                                        range(plan.ps_containers)))
            for _ in range(plan.ps_calls):
                out = timed(system, results, names["ps"], "ps", "-a")
                listed = len(out.splitlines()) - 1  # minus the header
                if listed < len(created):
                    raise RuntimeError(f"docker ps -a lists {listed} containers, {len(created)} were created")
        finally:
            for start in range(0, len(created), 50):
                docker(system, "rm", "-f", *created[start:start + 50])
