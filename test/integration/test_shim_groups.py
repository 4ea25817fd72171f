"""pods-per-shim: pods share runc v2 shims by group, keep them across a narwhald kill -9 (recovery rebuilds
the groups from the specs), a group's shim exits with its last pod, and its crash ends its group's pods only."""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cri_api.v1 import api_pb2, api_pb2_grpc
from lib import cri
from lib.daemon import DaemonProcess
from lib.leaks import leftovers
from lib.registry import Registry

from pkg.procs import live_pids

TICK = ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]


def shims(daemon: DaemonProcess) -> set[int]:
    """This instance's runc v2 shims (a grouped shim's -id is its first container's; the group only names
    its socket)."""
    needle = str(daemon.base).encode()
    return set(live_pids(lambda args: args[0].endswith(b"containerd-shim-runc-v2") and any(needle in a for a in args)))


def make_pod(rs: api_pb2_grpc.RuntimeServiceStub, ref: str, log_dir: Path, name: str,
             containers: int = 1) -> tuple[str, list[str]]:
    config = cri.sandbox_config(name=name, log_dir=log_dir)
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    cids = []
    for i in range(containers):
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=sid, config=cri.container_config(ref, TICK, name=f"c{i}", log_path=f"c{i}.log"),
            sandbox_config=config), timeout=120).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
        cids.append(cid)
    return sid, cids


def remove_pod(rs: api_pb2_grpc.RuntimeServiceStub, sid: str) -> None:
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)


def state(rs: api_pb2_grpc.RuntimeServiceStub, cid: str) -> int:
    return int(cri.container_state(rs, cid).state)


def test_pods_share_shims_across_a_restart(daemon_factory: Callable[..., DaemonProcess], registry: Registry,
                                           tmp_path: Path) -> None:
    daemon = daemon_factory(config_yaml="pods-per-shim: 3\n")
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    pods = [make_pod(rs, ref, tmp_path / f"p{i}", f"p{i}", containers=2 if i == 0 else 1) for i in range(4)]
    # Five containers of four pods: three pods in the first group's shim, the fourth in a second one.
    assert len(before := shims(daemon)) == 2

    daemon.kill9()
    sizes = {i: (tmp_path / f"p{i}" / "c0.log").stat().st_size for i in range(4)}
    daemon.start()
    rs = daemon.runtime()
    for _, cids in pods:
        assert all(state(rs, cid) == api_pb2.CONTAINER_RUNNING for cid in cids)
    cri.wait_for(lambda: all((tmp_path / f"p{i}" / "c0.log").stat().st_size > sizes[i] for i in range(4)),
                 30, "logs growing after the restart")
    # Recovery knows the groups: a new pod joins the second group, which has room, rather than a new shim.
    pods.append(make_pod(rs, ref, tmp_path / "p4", "p4"))
    assert shims(daemon) == before

    # A group's shim exits with its last pod; the other group is untouched.
    for sid, _ in pods[3:]:
        remove_pod(rs, sid)
    cri.wait_for(lambda: len(shims(daemon)) == 1, 30, "the second group's shim to exit")
    first = shims(daemon)
    assert all(state(rs, cid) == api_pb2.CONTAINER_RUNNING for _, cids in pods[:3] for cid in cids)

    # The pod whose container started the first group's shim (its -id, its working dir) goes: the shim stays
    # and serves the others, and a new pod takes the free place.
    remove_pod(rs, pods[0][0])
    assert shims(daemon) == first
    reply = rs.ExecSync(api_pb2.ExecSyncRequest(container_id=pods[1][1][0], cmd=["echo", "hi"], timeout=10),
                        timeout=30)
    assert (reply.exit_code, reply.stdout) == (0, b"hi\n")
    pods[0] = make_pod(rs, ref, tmp_path / "p6", "p6")
    assert shims(daemon) == first
    assert all(state(rs, cid) == api_pb2.CONTAINER_RUNNING for _, cids in pods[:3] for cid in cids)

    # Blast radius: the first group's shim killed ends the containers of its three pods, nothing else.
    other = make_pod(rs, ref, tmp_path / "p5", "p5")  # a group of its own: the first one is full
    assert len(shims(daemon)) == 2
    os.kill(first.pop(), signal.SIGKILL)
    cri.wait_for(lambda: all(state(rs, cid) == api_pb2.CONTAINER_EXITED for _, cids in pods[:3] for cid in cids),
                 60, "the first group's containers to be seen exited")
    assert state(rs, other[1][0]) == api_pb2.CONTAINER_RUNNING

    for sid, _ in [*pods[:3], other]:
        remove_pod(rs, sid)
    cri.wait_for(lambda: not shims(daemon), 30, "every shim to exit")
    assert leftovers(daemon) == {}


def test_kill9_with_20_grouped_pods(daemon_factory: Callable[..., DaemonProcess], registry: Registry,
                                    tmp_path: Path) -> None:
    """test_runtime_restart's kill -9 with the pods five to a shim: all READY with the same IPs, logs
    growing, the same four shims serving them, nothing leaked."""
    daemon = daemon_factory(config_yaml="pods-per-shim: 5\n")
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    with ThreadPoolExecutor(4) as pool:
        pods = list(pool.map(lambda i: make_pod(rs, ref, tmp_path / f"p{i}", f"p{i}"), range(20)))
    ips = {sid: rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=10)
           .status.network.ip for sid, _ in pods}
    groups = shims(daemon)
    assert len(groups) == 4

    daemon.kill9()
    sizes = {i: (tmp_path / f"p{i}" / "c0.log").stat().st_size for i in range(20)}
    daemon.start()
    rs = daemon.runtime()
    for sid, cids in pods:
        status = rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=10).status
        assert status.state == api_pb2.SANDBOX_READY and status.network.ip == ips[sid]
        assert state(rs, cids[0]) == api_pb2.CONTAINER_RUNNING
    cri.wait_for(lambda: all((tmp_path / f"p{i}" / "c0.log").stat().st_size > sizes[i] for i in range(20)),
                 30, "every pod's log growing after the restart")
    assert shims(daemon) == groups

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda pod: remove_pod(rs, pod[0]), pods))
    cri.wait_for(lambda: not shims(daemon), 30, "every shim to exit")
    assert leftovers(daemon) == {}
