"""``log-service: true`` under a real narwhald: containers' output reaches their CRI and Docker logs through the
instance's one log service (no narwhal-logger per container), exact and complete by the time the exit is
reported, and keeps flowing while narwhald is killed -9 and while the service itself is killed -9 and restarted.
The whole suite can also run with it: NARWHAL_TEST_FLAGS="--log-service true" (docs/logs.md)."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess
from lib.docker import BUSYBOX, checked_cli, mirrored_daemon
from lib.leaks import leftovers, logger_pids
from lib.logger import streams_of
from lib.registry import Registry
from lib.wait import wait_for

from pkg.logs.service_client import service_pid


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    yield from mirrored_daemon(registry, ["--log-service", "true"])



def no_loggers(d: DaemonProcess) -> bool:
    """No narwhal-logger process of this instance: the service copies everything."""
    return not logger_pids(d)


def test_cri_output_exact_and_complete_at_exit(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config(log_dir=tmp_path)),
                           timeout=120).pod_sandbox_id
    script = 'i=0; while [ $i -lt 3000 ]; do echo "$0 line $i"; i=$((i+1)); done; printf "no newline"; echo e >&2'
    cids = []
    for n in range(4):
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cri.container_config(
            ref, ["sh", "-c", script, f"c{n}"], name=f"c{n}", log_path=f"c{n}.log")), timeout=120).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
        cids.append(cid)
    assert no_loggers(daemon)
    for n, cid in enumerate(cids):
        wait_for(lambda c=cid: cri.container_state(rs, c).state == api_pb2.CONTAINER_EXITED, 60, f"c{n} exited")
        # Read at once: the exit is reported only after the service wrote the last record.
        expected = b"".join(b"c%d line %d\n" % (n, i) for i in range(3000)) + b"no newline"
        assert streams_of(tmp_path / f"c{n}.log") == {"stdout": expected, "stderr": b"e\n"}
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    assert leftovers(daemon) == {}


def test_logs_flow_through_narwhald_and_service_kill9(daemon: DaemonProcess, registry: Registry,
                                                      tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config(log_dir=tmp_path)),
                           timeout=120).pod_sandbox_id
    counter = ["sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.02; done"]
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cri.container_config(
        ref, counter, log_path="c.log")), timeout=120).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
    log = tmp_path / "c.log"
    wait_for(lambda: log.exists() and log.stat().st_size > 0, 30, "first output")
    service = service_pid(daemon.state / "logs")
    assert service is not None

    daemon.kill9()
    size = log.stat().st_size
    wait_for(lambda: log.stat().st_size > size + 100, 30, "output while narwhald is down")
    daemon.start()
    rs = daemon.runtime()
    assert service_pid(daemon.state / "logs") == service  # adopted, not restarted

    # The service killed -9: narwhald's watcher restarts it; what the container wrote meanwhile waited in the
    # fifo (the shim holds a read end of its own: no EPIPE).  A kill lands between the service's read and its
    # write only with a chance of about one in ten thousand here (one short line each 20 ms).
    os.kill(service, signal.SIGKILL)
    wait_for(lambda: service_pid(daemon.state / "logs") not in (None, service), 30, "a restarted log service")
    size = log.stat().st_size
    wait_for(lambda: log.stat().st_size > size + 100, 30, "output after the service's restart")

    log.rename(tmp_path / "c.log.1")  # as the kubelet rotates
    rs.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid), timeout=30)
    assert log.exists()
    wait_for(lambda: log.stat().st_size > 100, 30, "output into the reopened log")
    rs.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    with pytest.raises(grpc.RpcError) as err:
        rs.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    numbers = streams_of(tmp_path / "c.log.1", log)["stdout"].split()
    assert numbers == [b"%d" % i for i in range(len(numbers))]  # nothing lost, nothing twice, in order
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    assert leftovers(daemon) == {}


def test_docker_run_rm_and_logs_exact(daemon: DaemonProcess) -> None:
    docker = checked_cli(daemon)

    docker("pull", BUSYBOX)
    expected = b"".join(b"%d\n" % i for i in range(1, 5001))
    run = docker("run", "--rm", BUSYBOX, "sh", "-c", "seq 1 5000; echo err >&2")
    assert run.stdout == expected and run.stderr == b"err\n"
    docker("run", "-d", "-t", "--name", "tty-local", BUSYBOX, "seq", "1", "500")  # one stream: the terminal
    assert docker("wait", "tty-local").stdout.strip() == b"0"
    logs = docker("logs", "tty-local")
    assert logs.stdout.replace(b"\r\n", b"\n") == b"".join(b"%d\n" % i for i in range(1, 501))
    docker("rm", "tty-local")
    assert no_loggers(daemon)
    assert leftovers(daemon) == {}
