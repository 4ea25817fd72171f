"""Short commands through CRI, in loops, idle and beside a CPU hog: ExecSync, streaming Exec and Attach must
deliver every byte and the exit code however fast the process ends, and a container's log must be complete
once its status says EXITED (kubelet reads it then).  Waits are on observable conditions only."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2
from lib import cpuhog, cri, spdy_client
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.leaks import leftovers
from lib.registry import Registry

EXECS = 50
CONTAINERS = 12


@pytest.fixture(scope="module")
def nw() -> Iterator[DaemonProcess]:
    d = start_daemon()
    try:
        yield d
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


@pytest.fixture
def pod(nw: DaemonProcess, registry: Registry, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(sandbox id, image ref) of a fresh pod; removed with its containers after, and nothing left behind."""
    ref = cri.push_busybox(registry)
    cri.pull(nw.images(), ref)
    rs = nw.runtime()
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(log_dir=tmp_path, host_network=True)), timeout=60).pod_sandbox_id
    try:
        yield sid, ref
    finally:
        rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    assert leftovers(nw) == {}


def _start(nw: DaemonProcess, sid: str, ref: str, cmd: list[str], name: str, **kwargs: object) -> str:
    rs = nw.runtime()
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cri.container_config(
        ref, cmd, name=name, log_path=f"{name}.log", **kwargs)), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def _exit_code(status: dict[str, object] | None) -> int:
    if status is None or status.get("status") == "Success":
        return 0
    causes = status["details"]["causes"]  # type: ignore[index]
    return int(next(c["message"] for c in causes if c["reason"] == "ExitCode"))


@pytest.mark.parametrize("load", cpuhog.LOADS)
def test_exec_sync_and_exec_of_short_commands(nw: DaemonProcess, pod: tuple[str, str], load: str) -> None:
    sid, ref = pod
    rs = nw.runtime()
    cid = _start(nw, sid, ref, ["sleep", "100000"], "sleeper")
    failures: list[str] = []
    with cpuhog.load(load):
        for i in range(EXECS):
            script = f"echo out{i}; echo err{i} >&2; exit 3"
            if i % 3 == 2:  # streaming Exec, as kubectl exec
                url = rs.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["sh", "-c", script], stdout=True,
                                                  stderr=True), timeout=30).url
                out, err, status = asyncio.run(spdy_client.run_exec(url))
                got = (out, err, _exit_code(status))
            else:
                resp = rs.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script], timeout=60),
                                   timeout=90)
                got = (resp.stdout, resp.stderr, resp.exit_code)
            if got != (f"out{i}\n".encode(), f"err{i}\n".encode(), 3):
                failures.append(f"exec {i}: {got!r}")
    assert not failures, f"{len(failures)} of {EXECS} execs lost something:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("load", cpuhog.LOADS)
def test_attach_and_log_of_short_containers(nw: DaemonProcess, pod: tuple[str, str], load: str,
                                            tmp_path: Path) -> None:
    """Attach to a container that answers its input and exits at once: both lines and the exit code arrive;
    its log holds them once the status is EXITED."""
    sid, ref = pod
    rs = nw.runtime()
    failures: list[str] = []
    with cpuhog.load(load):
        for i in range(CONTAINERS):
            cid = _start(nw, sid, ref, ["sh", "-c", "read x; echo got$x; echo err$x >&2; exit 3"], f"att{i}",
                         stdin=True, stdin_once=True)
            url = rs.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True),
                            timeout=30).url
            out, err, _ = asyncio.run(spdy_client.run_exec(url, stdin_data=f"{i}\n".encode()))
            if (out, err) != (f"got{i}\n".encode(), f"err{i}\n".encode()):
                failures.append(f"attach {i}: {(out, err)!r}")
            cri.wait_for(lambda c=cid: cri.container_state(rs, c).state == api_pb2.CONTAINER_EXITED,  # type: ignore[misc]
                         what=f"att{i} exits")
            status = cri.container_state(rs, cid)
            log = (tmp_path / f"att{i}.log").read_bytes()
            if status.exit_code != 3 or f"stdout F got{i}\n".encode() not in log \
                    or f"stderr F err{i}\n".encode() not in log:
                failures.append(f"status/log {i}: {status.exit_code} {log!r}")
            rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)
            # No input at all: the log alone, complete as soon as the status says EXITED.
            cid = _start(nw, sid, ref, ["sh", "-c", f"echo out{i}; echo err{i} >&2; exit 4"], f"log{i}")
            cri.wait_for(lambda c=cid: cri.container_state(rs, c).state == api_pb2.CONTAINER_EXITED,  # type: ignore[misc]
                         what=f"log{i} exits")
            lines = [line.split(b" ", 1)[1] for line in (tmp_path / f"log{i}.log").read_bytes().splitlines()]
            if sorted(lines) != sorted([f"stdout F out{i}".encode(), f"stderr F err{i}".encode()]):
                failures.append(f"log {i}: {lines!r}")
            rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)
    assert not failures, f"{len(failures)} checks failed:\n" + "\n".join(failures[:10])
