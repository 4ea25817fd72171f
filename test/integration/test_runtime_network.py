"""Pods on the default CNI network, driven over CRI: IPs, pod-to-pod and host-to-pod traffic, hostPorts."""
from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess, free_port
from lib.registry import Registry

SERVE = ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]


def _run_pod(rs: object, name: str, log_dir: Path, ports: list[api_pb2.PortMapping] | None = None) -> str:
    config = cri.sandbox_config(name=name, log_dir=log_dir, port_mappings=ports or [])
    return rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id  # type: ignore


def test_pods_get_ips_talk_and_publish_host_ports(daemon: DaemonProcess, registry: Registry,
                                                  tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    host_port = free_port()
    server = _run_pod(rs, "server", tmp_path, [api_pb2.PortMapping(
        protocol=api_pb2.TCP, container_port=8080, host_port=host_port, host_ip="127.0.0.1")])
    client = _run_pod(rs, "client", tmp_path)
    ips = {sid: rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=10)
           .status.network.ip for sid in (server, client)}
    assert all(ips.values()) and len(set(ips.values())) == 2

    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=server, config=cri.container_config(ref, SERVE, name="httpd")), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)

    # host -> pod IP, and host -> hostPort
    def fetch(url: str) -> str:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return ""

    cri.wait_for(lambda: "hello-from-server" in fetch(f"http://{ips[server]}:8080/"), what="pod IP answers")
    cri.wait_for(lambda: "hello-from-server" in fetch(f"http://127.0.0.1:{host_port}/"), what="hostPort answers")

    # pod -> pod
    getter = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=client, config=cri.container_config(
            ref, ["sh", "-c", f"wget -qO- http://{ips[server]}:8080/"], name="wget", log_path="wget.log")),
        timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=getter), timeout=60)
    cri.wait_for(lambda: cri.container_state(rs, getter).state == api_pb2.CONTAINER_EXITED, what="wget exit")
    assert cri.container_state(rs, getter).exit_code == 0
    assert "hello-from-server" in (tmp_path / "wget.log").read_text()

    for sid in (server, client):
        rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    time.sleep(0.2)
    assert fetch(f"http://127.0.0.1:{host_port}/") == ""
    assert list((daemon.state / "netns").iterdir()) == []
