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

import breakdown
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
    results.row(GROUP, names["exec"], "ms", ANCHOR, target=0.8, note="`true` in a running container")
    results.row(GROUP, names["ps"], "ms", ANCHOR, target=0.8)


class CLIError(RuntimeError):
    pass


def docker(system: System, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([DOCKER_CLI, *args], env=system.docker_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[:160] or "no output"
        raise CLIError(f"docker {' '.join(args[:3])}: exit {proc.returncode}: {output}")
    return proc.stdout


def timed(system: System, results: Results, row: str, *args: str) -> str:
    start = time.perf_counter()
    out = docker(system, *args)
    results.add(GROUP, row, system.name, 1000 * (time.perf_counter() - start))
    return out


def run(systems: list[System], plan: DockerPlan, results: Results, log: Callable[[str], None]) -> None:
    """Each benchmark on every system in alternating turns (see cri_bench); a system whose set-up fails
    gets "n/a (error: ...)" rows and the others go on."""
    names = rows(plan)
    live: list[System] = []
    for system in systems:
        with results.guard(GROUP, list(names.values()), system.name, log):
            docker(system, "pull", "-q", IMAGE)
            docker(system, "run", "--rm", IMAGE, "true")  # warm-up
            live.append(system)

    def each(row: str, rounds: int, step: Callable[[System], None]) -> None:
        """A failing round is counted (and shown) but does not discard the other rounds' samples; a
        system whose every round fails gets "n/a (error: ...)"."""
        for i in range(rounds):
            for system in live if i % 2 == 0 else list(reversed(live)):
                try:
                    step(system)
                except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                    log(f"  {system.name} {row}: round {i} failed: {err}")
                    results.get(GROUP, row).failed(system.name, err)

    log(f"  {plan.runs} x {names['run']} each")
    metered = [s for s in live if s.metrics_url]
    before = {s.name: breakdown.scrape(s.metrics_url) for s in metered}  # type: ignore[arg-type]
    each(names["run"], plan.runs, lambda s: timed(s, results, names["run"], "run", "--rm", IMAGE, "true"))
    for s in metered:
        calls = breakdown.diff(before[s.name], breakdown.scrape(s.metrics_url), plan.runs)  # type: ignore[arg-type]
        results.breakdown[f"{s.name}, docker run --rm"] = {"unit": "docker run", "calls": calls}

    log(f"  {plan.execs} x docker exec each")
    execs: dict[str, str] = {}
    for system in live:
        with results.guard(GROUP, [names["exec"]], system.name, log):
            execs[system.name] = docker(system, "run", "-d", IMAGE, "sleep", "3600").strip()
    try:
        each(names["exec"], plan.execs, lambda s: timed(s, results, names["exec"], "exec", execs[s.name], "true"))
    finally:
        for system in live:
            if system.name in execs:
                docker(system, "rm", "-f", execs[system.name])

    log(f"  docker ps -a with {plan.ps_containers} containers each")
    created: dict[str, list[str]] = {}
    try:
        for system in live:
            with results.guard(GROUP, [names["ps"]], system.name, log):
                ids = created[system.name] = []
                with ThreadPoolExecutor(8) as pool:
                    futures = [pool.submit(docker, system, "create", IMAGE, "true") for _ in range(plan.ps_containers)]
                    for future in futures:
                        ids.append(future.result().strip())

        def ps(system: System) -> None:
            out = timed(system, results, names["ps"], "ps", "-a")
            listed = len(out.splitlines()) - 1  # minus the header
            if listed < len(created[system.name]):
                raise RuntimeError(f"docker ps -a lists {listed} containers, {len(created[system.name])} were created")

        each(names["ps"], plan.ps_calls, ps)
    finally:
        for system in live:
            ids = created.get(system.name, [])
            for start in range(0, len(ids), 50):
                docker(system, "rm", "-f", *ids[start:start + 50])
