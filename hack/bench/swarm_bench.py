"""Swarm mode benchmarks with the real docker CLI, against narwhald's swarm (etcd) and dockerd's (SwarmKit),
each a single-node swarm on the same machine:

* ``docker service create --replicas N`` until N tasks run (the CLI with ``--detach``; the harness polls
  the tasks through the API every 100 ms, the same way on both sides);
* ``docker service update --image`` of those N replicas with ``--update-parallelism 2 --update-delay 0s``
  until N tasks of the new image run.

Each round creates a fresh service and removes it afterwards (not timed); the swarm is left with
``--force`` at the end.  Both sides listen for the swarm on 127.0.0.1 only.
"""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker as dockerpy
from anchors import DOCKER_CLI, System
from results import Results

GROUP = "Swarm"
ANCHOR = "dockerd"
IMAGE, NEW_IMAGE = "busybox:latest", "busybox:v2"


@dataclass(frozen=True)
class SwarmPlan:
    replicas: int = 10
    rounds: int = 3
    timeout: int = 300  # seconds one round may take before it counts as failed


def rows(plan: SwarmPlan) -> dict[str, str]:
    return {
        "create": f"service create --replicas {plan.replicas} until {plan.replicas} tasks run",
        "update": f"service update --image, {plan.replicas} replicas, parallelism 2",
    }


def declare(results: Results, plan: SwarmPlan) -> None:
    names = rows(plan)
    results.row(GROUP, names["create"], "ms", ANCHOR)
    results.row(GROUP, names["update"], "ms", ANCHOR, note="until every task runs the new image")


def docker(system: System, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([DOCKER_CLI, *args], env=system.docker_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[:160] or "no output"
        raise RuntimeError(f"docker {' '.join(args[:3])}: exit {proc.returncode}: {output}")
    return proc.stdout


def _running(client: dockerpy.APIClient, service: str, image_prefix: str) -> int:
    tasks: list[dict[str, Any]] = client.tasks(filters={"service": service, "desired-state": "running"})
    return sum(1 for t in tasks if t["Status"]["State"] == "running"
               and t["Spec"]["ContainerSpec"]["Image"].startswith(image_prefix))


def _wait(system: System, service: str, image_prefix: str, want: int, timeout: float) -> None:
    assert system.docker_host is not None
    client = dockerpy.APIClient(base_url=system.docker_host, version="1.41", timeout=60)  # dockerd 20.10: 1.41
    try:
        deadline = time.monotonic() + timeout
        while _running(client, service, image_prefix) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service}: {want} tasks of {image_prefix} not running after {timeout:g} s")
            time.sleep(0.1)
    finally:
        client.close()


def _gone(system: System, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while docker(system, "ps", "-aq").strip():
        if time.monotonic() > deadline:
            raise RuntimeError("task containers still there after service rm")
        time.sleep(0.2)


def run(systems: list[System], plan: SwarmPlan, results: Results, log: Callable[[str], None]) -> None:
    names = rows(plan)
    live: list[System] = []
    for system in systems:
        with results.guard(GROUP, list(names.values()), system.name, log):
            docker(system, "pull", "-q", IMAGE)
            docker(system, "pull", "-q", NEW_IMAGE)
            port = _free_port()
            docker(system, "swarm", "init", "--advertise-addr", f"127.0.0.1:{port}", "--listen-addr",
                   f"127.0.0.1:{port}")
            live.append(system)
    try:
        log(f"  {plan.rounds} x service create/update of {plan.replicas} replicas each")
        for i in range(plan.rounds):
            for system in live if i % 2 == 0 else list(reversed(live)):
                name = f"bench{i}"
                row = names["create"]
                try:
                    start = time.perf_counter()
                    docker(system, "service", "create", "--detach", "--replicas", str(plan.replicas), "--name",
                           name, "--stop-grace-period", "1s", IMAGE, "sleep", "3600")
                    _wait(system, name, "busybox:latest", plan.replicas, plan.timeout)
                    results.add(GROUP, row, system.name, 1000 * (time.perf_counter() - start))
                    row = names["update"]
                    start = time.perf_counter()
                    docker(system, "service", "update", "--detach", "--image", NEW_IMAGE, "--update-parallelism",
                           "2", "--update-delay", "0s", name)
                    _wait(system, name, NEW_IMAGE, plan.replicas, plan.timeout)
                    results.add(GROUP, row, system.name, 1000 * (time.perf_counter() - start))
                except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                    log(f"  {system.name} swarm round {i} failed: {err}")
                    results.get(GROUP, row).failed(system.name, err)
                finally:
                    if _exists(system, name):
                        docker(system, "service", "rm", name, timeout=120)
                    _gone(system)
    finally:
        for system in live:
            subprocess.run([DOCKER_CLI, "swarm", "leave", "--force"], env=system.docker_env(), capture_output=True,
                           timeout=120, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exists(system: System, name: str) -> bool:
    return bool(docker(system, "service", "ls", "-q", "--filter", f"name={name}").strip())
