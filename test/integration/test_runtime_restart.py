"""kill -9 narwhald with 20 networked pods running, restart: all come back; then nothing leaks.

``NARWHAL_KILL9_PODS=50`` runs it with issue 21's 50 pods (not in `make test`: ~2 min more on 2 cores)."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess
from lib.leaks import leftovers
from lib.registry import Registry

PODS = int(os.environ.get("NARWHAL_KILL9_PODS", "20"))


def test_kill9_with_pods_running(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()

    def make(i: int) -> tuple[str, str]:
        sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
            config=cri.sandbox_config(name=f"p{i}", log_dir=tmp_path / f"p{i}")), timeout=120).pod_sandbox_id
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cri.container_config(
            ref, ["sh", "-c", "while true; do echo tick; sleep 0.2; done"], log_path="c.log")),
            timeout=120).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
        return sid, cid

    with ThreadPoolExecutor(4) as pool:
        pods = list(pool.map(make, range(PODS)))
    ips = {sid: rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=10)
           .status.network.ip for sid, _ in pods}

    daemon.kill9()
    sizes = {i: (tmp_path / f"p{i}" / "c.log").stat().st_size for i in range(PODS)}
    daemon.start()
    rs = daemon.runtime()
    for sid, cid in pods:
        status = rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=10).status
        assert status.state == api_pb2.SANDBOX_READY and status.network.ip == ips[sid]
        assert cri.container_state(rs, cid).state == api_pb2.CONTAINER_RUNNING
    # Every container prints a line each 0.2 s: each log must grow past its size at the kill (a deadline, not a
    # fixed sleep, so a loaded host only makes it slower).
    deadline = time.monotonic() + 30
    stalled = set(range(PODS))
    while stalled and time.monotonic() < deadline:
        stalled = {i for i in stalled if (tmp_path / f"p{i}" / "c.log").stat().st_size <= sizes[i]}
        if stalled:
            time.sleep(0.1)
    assert not stalled, f"logs of pods {sorted(stalled)} stopped growing"

    def remove(pod: tuple[str, str]) -> None:
        rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod[0]), timeout=120)
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod[0]), timeout=120)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(remove, pods))
    assert leftovers(daemon) == {}
