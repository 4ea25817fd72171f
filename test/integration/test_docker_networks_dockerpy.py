"""Docker networks through docker-py 7: the networks API, containers joined at run and by connect, network
events, and a narwhald killed with -9 and restarted keeps networks, endpoints and the embedded DNS of running
containers."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from lib import dockerpy
from lib.daemon import DaemonProcess
from lib.registry import Registry

WEB = ["httpd", "-f", "-p", "80", "-h", "/etc"]


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    dockerpy.seed_registry(registry.host, ["library/busybox:latest"])
    d = dockerpy.start_docker_daemon(registry.host)
    try:
        yield d
    finally:
        dockerpy.destroy(d)


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Any]:
    yield from dockerpy.busybox_session(daemon)


def test_networks_api(client: Any) -> None:
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.200.8.0/24",
                                                                       gateway="10.200.8.254")])
    net = client.networks.create("pynet", driver="bridge", ipam=ipam, labels={"k": "v"}, attachable=True)
    assert net.name == "pynet" and len(net.id) == 64
    assert net.attrs["IPAM"]["Config"] == [{"Subnet": "10.200.8.0/24", "Gateway": "10.200.8.254"}]
    assert net.attrs["Attachable"] is True and net.attrs["Labels"] == {"k": "v"}
    assert [n.name for n in client.networks.list(filters={"label": "k=v"})] == ["pynet"]
    assert {n.name for n in client.networks.list(names=["bridge", "pynet"])} == {"bridge", "pynet"}
    assert client.networks.get(net.id[:12]).id == net.id
    with pytest.raises(docker.errors.APIError) as conflict:
        client.networks.create("pynet")
    assert conflict.value.status_code == 409
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("nosuch")
    with pytest.raises(docker.errors.APIError) as builtin:
        client.networks.get("bridge").remove()
    assert builtin.value.status_code == 403

    web = client.containers.run("busybox", WEB, name="pyweb", detach=True, network="pynet")
    other = client.containers.run("busybox", ["sleep", "300"], name="pyother", detach=True)
    net.connect(other, aliases=["friend"], ipv4_address="10.200.8.77")
    net.reload()
    containers = net.attrs["Containers"]
    assert set(containers) == {web.id, other.id}
    assert containers[other.id]["IPv4Address"] == "10.200.8.77/24" and containers[other.id]["Name"] == "pyother"
    code, output = other.exec_run(["wget", "-qO-", "http://pyweb/hostname"])
    assert code == 0 and output.decode().strip() == web.id[:12]
    code, output = web.exec_run(["nslookup", "friend"])
    assert code == 0 and "10.200.8.77" in output.decode()
    with pytest.raises(docker.errors.APIError) as busy:
        net.remove()
    assert busy.value.status_code == 403
    net.disconnect(other)
    net.reload()
    assert set(net.attrs["Containers"]) == {web.id}
    web.remove(force=True)
    net.remove()
    assert "pynet" not in [n.name for n in client.networks.list()]


def test_network_events(client: Any) -> None:
    since = time.time() - 1
    net = client.networks.create("evnet")
    box = client.containers.run("busybox", ["sleep", "300"], detach=True)
    net.connect(box)
    net.disconnect(box)
    joined = client.containers.run("busybox", ["sleep", "300"], detach=True, network="evnet")
    joined.remove(force=True)
    net.remove()
    events = list(client.events(since=since, until=time.time() + 1, filters={"type": "network"}, decode=True))
    mine = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"].get("container", ""))
            for e in events if e["Actor"]["Attributes"].get("name") == "evnet"]
    assert mine == [("create", net.id, ""), ("connect", net.id, box.id), ("disconnect", net.id, box.id),
                    ("connect", net.id, joined.id), ("disconnect", net.id, joined.id), ("destroy", net.id, "")]
    bridge = [e["Action"] for e in events if e["Actor"]["Attributes"].get("name") == "bridge"
              and e["Actor"]["Attributes"].get("container") == box.id]
    assert bridge == ["connect"]  # box is on the default network from run on (removed by the fixture)
    assert all(e["Type"] == "network" and e["Actor"]["Attributes"]["type"] == "bridge" for e in events
               if e["Actor"]["Attributes"].get("name") == "evnet")


def test_kill9_restart_keeps_networks_endpoints_and_dns(client: Any, daemon: DaemonProcess) -> None:
    net = client.networks.create("keepnet")
    web = client.containers.run("busybox", WEB, name="keepweb", detach=True, network="keepnet")
    peer = client.containers.run("busybox", ["sleep", "300"], name="keeppeer", detach=True, network="keepnet")
    before = client.networks.get("keepnet").attrs
    daemon.kill9()  # the DNS servers' sockets die with it; containers and their netns live on
    daemon.start()
    after = dockerpy.client(daemon)
    try:
        assert after.networks.get("keepnet").attrs == before
        code, output = after.containers.get(peer.id).exec_run(["wget", "-qO-", "http://keepweb/hostname"])
        assert code == 0 and output.decode().strip() == web.id[:12]
        info = json.dumps(after.api.inspect_network(net.id))
        assert web.id in info and peer.id in info
    finally:
        after.close()
