"""The Docker face is loaded when its first client connects (issue 21: idle RSS; narwhal/docker_face.py), or at
start when the Docker domain has something to bring back.

* A fresh narwhald listens on the Docker socket but has not imported aiohttp (nor the Docker face): CRI and
  /metrics answer; the first Docker clients, several at once, wait and are all served; `docker run` works.
* With a container whose restart policy must act, a kill -9 of narwhald brings the face back at start: the
  container runs again before anything asks the Docker API.  Once the Docker domain is empty again, the next
  start waits for a first client again.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2
from lib.daemon import DaemonProcess
from lib.docker import DOCKER, DockerDaemon, docker_daemon, eventually
from lib.leaks import leftovers
from lib.registry import Registry

LAZY = "loaded at its first client"


@pytest.fixture
def fresh(registry: Registry) -> Iterator[DockerDaemon]:
    """A narwhald whose Docker domain was never used (nothing pulled through Docker)."""
    yield from docker_daemon(registry, pull=False)


def _aiohttp_loaded(d: DaemonProcess) -> bool:
    """aiohttp's HTTP parser (a C extension) is mapped once anything imported aiohttp."""
    assert d.proc is not None
    return "/aiohttp/_http_parser" in Path(f"/proc/{d.proc.pid}/maps").read_text()


def test_first_docker_clients_load_the_face_while_cri_and_metrics_answer(fresh: DockerDaemon) -> None:
    d = fresh.daemon
    assert LAZY in d.log() and not _aiohttp_loaded(d)
    assert d.runtime().Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "narwhal"
    assert len(d.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items) == 0
    assert not _aiohttp_loaded(d), "CRI alone must not load the Docker face"

    def version() -> str:
        out = subprocess.run([DOCKER, "version", "--format", "{{json .Server}}"], env=d.docker_env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["ApiVersion"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # all connect before the face is loaded
        assert list(pool.map(lambda _: version(), range(4))) == ["1.53"] * 4
    assert d.log().count("Docker API: first client, loading") == 1
    assert _aiohttp_loaded(d)
    assert fresh.out("run", "--rm", "busybox", "echo", "hello") == "hello"
    body = urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=10).read().decode()
    assert "narwhal_containerd_up 1.0" in body


def test_docker_state_brings_the_face_back_at_start(fresh: DockerDaemon) -> None:
    d = fresh.daemon
    cid = fresh.out("run", "-d", "--name", "phoenix", "--restart", "always", "busybox", "sleep", "1000")
    pid = fresh.inspect("phoenix")["State"]["Pid"]
    d.kill9()
    os.kill(pid, signal.SIGKILL)  # dies while narwhald is down: only the engine at start restarts it
    offset = len(d.log())
    d.start()
    assert "Docker face loaded at start (Docker containers in containerd)" in d.log()[offset:]
    assert eventually(lambda: _task_pid(d, cid) not in (None, pid)), "restart policy not applied at start"
    assert "Docker API: first client" not in d.log()[offset:]  # nothing asked the Docker API yet
    assert fresh.inspect("phoenix")["RestartCount"] >= 1

    fresh.out("rm", "-f", "phoenix")
    assert d.stop() == 0
    d.start()
    assert d.log().count(LAZY) == 2, [line for line in d.log().splitlines() if "Docker face" in line]
    assert fresh.out("ps", "-aq") == ""
    assert leftovers(d) == {}


def _task_pid(d: DaemonProcess, container_id: str) -> int | None:
    sock = d.state / "containerd" / "containerd.sock"
    out = subprocess.run(["ctr", "--address", str(sock), "-n", "narwhal-docker", "tasks", "ls"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields[0] == container_id and fields[2] == "RUNNING":
            return int(fields[1])
    return None
