"""Pod networking through a real narwhald: kill -9 during concurrent RunPodSandbox, broken configs.

No images are needed: pods that do not share their PID namespace have no
infra container, so a sandbox is its pinned namespaces plus its network.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.cni_host import (
    HostGuard,
    bridge_ports,
    firewall_rules,
    free_port,
    request_from,
    start_server,
    stop_server,
    tagged_rules,
)
from lib.daemon import DaemonFactory, DaemonProcess

from pkg.cni import defaults
from pkg.config import Config, build


@pytest.fixture(scope="module")
def host_guard() -> Iterator[HostGuard]:
    guard = HostGuard.take()
    yield guard
    guard.restore()


def instance(d: DaemonProcess, guard: HostGuard) -> Config:
    cfg = build({}, {"root": str(d.root), "state": str(d.state), "cni-conf-dir": str(d.base / "net.d")})
    guard.bridges.append(defaults.bridge_name(cfg))
    guard.admin_chains.append(defaults.admin_chain(cfg))
    return cfg


def leftovers(cfg: Config, subnet_prefix: str) -> dict[str, list[str]]:
    def names(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    ipam = cfg.cni_state_dir / "ipam"
    return {
        "netns": names(cfg.netns_dir),
        "ips": sorted(p.name for p in ipam.rglob("*") if p.name[0].isdigit()) if ipam.exists() else [],
        "cache": names(cfg.cni_state_dir / "results"),
        "veths": bridge_ports(defaults.bridge_name(cfg)),
        "tagged_rules": tagged_rules(defaults.network_name(cfg)),
        "firewall_rules": firewall_rules(subnet_prefix),
    }


def subnet_prefix(cfg: Config) -> str:
    data = json.loads((cfg.cni_conf_dir / defaults.FILE_NAME).read_text())
    return defaults.subnets_of(data)[0].rsplit(".", 1)[0] + "."


def network_condition(d: DaemonProcess) -> api_pb2.RuntimeCondition:
    status = d.runtime().Status(api_pb2.StatusRequest(), timeout=10).status
    return next(c for c in status.conditions if c.type == "NetworkReady")


def test_kill_9_during_10_concurrent_run_pod_sandbox(daemon_factory: DaemonFactory, host_guard: HostGuard) -> None:
    d: DaemonProcess = daemon_factory()
    cfg = instance(d, host_guard)
    prefix = subnet_prefix(cfg)
    rs = d.runtime()
    first_done = threading.Event()

    def run_pod(i: int) -> None:
        config = cri.sandbox_config(name=f"k{i}", port_mappings=[
            api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=8080, host_port=free_port())])
        try:
            rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60)
            first_done.set()
        except grpc.RpcError:
            pass  # the daemon died under it

    threads = [threading.Thread(target=run_pod, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    assert first_done.wait(60)
    d.kill9()
    for t in threads:
        t.join(30)
    d.start()

    rs = d.runtime()
    pods = rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    ready = [p.id for p in pods if p.state == api_pb2.SANDBOX_READY]
    assert ready
    for sid in ready:
        ip = rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=10).status.network.ip
        server = start_server(cfg.netns_dir / sid, sid, 8080)
        try:
            assert request_from(None, ip, 8080) == sid, f"READY pod {sid[:12]} at {ip} does not answer"
        finally:
            stop_server(server)
    # attachments of sandboxes the restarted daemon does not know are released by its start-up GC
    known = {p.id for p in pods}
    cri.wait_for(lambda: set(leftovers(cfg, prefix)["netns"]) <= known, what="GC of unknown netns")
    cri.wait_for(lambda: {c.removesuffix(".json") for c in leftovers(cfg, prefix)["cache"]} <= known,
                 what="GC of unknown attachments")
    for p in pods:
        rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
    cri.wait_for(lambda: leftovers(cfg, prefix) == {k: [] for k in leftovers(cfg, prefix)},
                 what=f"no network leftovers: {leftovers(cfg, prefix)}")


def test_broken_conflist_makes_network_not_ready_and_pods_fail(daemon_factory: DaemonFactory,
                                                                host_guard: HostGuard) -> None:
    d: DaemonProcess = daemon_factory()
    cfg = instance(d, host_guard)
    assert network_condition(d).status
    default = cfg.cni_conf_dir / defaults.FILE_NAME
    default.rename(cfg.cni_conf_dir / "default.bak")
    (cfg.cni_conf_dir / "00-broken.conflist").write_text('{"cniVersion": "1.0.0", "plugins": [}')
    cri.wait_for(lambda: not network_condition(d).status, what="NetworkReady false")
    cond = network_condition(d)
    assert cond.reason == "InvalidNetworkConfig" and "00-broken.conflist" in cond.message
    rs = d.runtime()
    with pytest.raises(grpc.RpcError) as info:
        rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config()), timeout=60)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "InvalidNetworkConfig" in info.value.details()
    assert not cfg.netns_dir.exists() or list(cfg.netns_dir.iterdir()) == []
    # fixed without a restart: the conf dir is watched
    (cfg.cni_conf_dir / "00-broken.conflist").unlink()
    (cfg.cni_conf_dir / "default.bak").rename(default)
    cri.wait_for(lambda: network_condition(d).status, what="NetworkReady true again")
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config()), timeout=60).pod_sandbox_id
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
