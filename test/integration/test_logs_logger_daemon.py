"""``log-service: false`` under a real narwhald: a narwhal-logger per container (the shim's child, or narwhald's
on fifos for a container with stdin) writes the CRI and Docker logs, exact by the time the exit is reported, and
keeps writing while narwhald is killed -9; ReopenContainerLog signals it.  The log service is the default since
issue 21's round three; this module keeps the per-container logger working (docs/logs.md)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess
from lib.docker import BUSYBOX, checked_cli, mirrored_daemon
from lib.leaks import leftovers, log_service_pids, logger_pids
from lib.logger import streams_of
from lib.registry import Registry
from lib.wait import wait_for


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    yield from mirrored_daemon(registry, ["--log-service", "false"])


def loggers(d: DaemonProcess) -> int:
    return len(logger_pids(d))


def test_cri_loggers_per_container_through_kill9_and_reopen(daemon: DaemonProcess, registry: Registry,
                                                            tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config(log_dir=tmp_path)),
                           timeout=120).pod_sandbox_id
    counter = ["sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.02; done"]
    script = 'i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; printf "no newline"; echo e >&2'
    cids = {}
    for name, command, stdin in (("counter", counter, False), ("burst", ["sh", "-c", script], False),
                                 ("stdin", ["sh", "-c", "echo from-stdin-container; sleep 3600"], True)):
        cids[name] = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cri.container_config(
            ref, command, name=name, log_path=f"{name}.log", stdin=stdin)), timeout=120).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cids[name]), timeout=120)
    assert log_service_pids(daemon) == []
    wait_for(lambda: cri.container_state(rs, cids["burst"]).state == api_pb2.CONTAINER_EXITED, 60, "burst exited")
    expected = b"".join(b"line %d\n" % i for i in range(2000)) + b"no newline"
    assert streams_of(tmp_path / "burst.log") == {"stdout": expected, "stderr": b"e\n"}
    # The two running containers' loggers: the shim's (binary://) and narwhald's own on fifos (stdin).
    assert loggers(daemon) == 2
    wait_for(lambda: streams_of(tmp_path / "stdin.log").get("stdout") == b"from-stdin-container\n", 30, "stdin's")

    log = tmp_path / "counter.log"
    daemon.kill9()
    size = log.stat().st_size
    wait_for(lambda: log.stat().st_size > size + 100, 30, "output while narwhald is down")
    daemon.start()
    rs = daemon.runtime()
    log.rename(tmp_path / "counter.log.1")  # as the kubelet rotates
    rs.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cids["counter"]), timeout=30)
    wait_for(lambda: log.exists() and log.stat().st_size > 100, 30, "output into the reopened log")
    rs.StopContainer(api_pb2.StopContainerRequest(container_id=cids["counter"], timeout=0), timeout=60)
    numbers = streams_of(tmp_path / "counter.log.1", log)["stdout"].split()
    assert numbers == [b"%d" % i for i in range(len(numbers))]  # nothing lost, nothing twice, in order
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    wait_for(lambda: loggers(daemon) == 0, 30, "the loggers gone with their containers")
    assert leftovers(daemon) == {}


def test_docker_run_rm_output_exact(daemon: DaemonProcess) -> None:
    docker = checked_cli(daemon)

    docker("pull", BUSYBOX)
    run = docker("run", "--rm", BUSYBOX, "sh", "-c", "seq 1 3000; echo err >&2")
    assert run.stdout == b"".join(b"%d\n" % i for i in range(1, 3001)) and run.stderr == b"err\n"
    assert log_service_pids(daemon) == []
    assert leftovers(daemon) == {}
