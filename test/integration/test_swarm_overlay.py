"""Overlay networks on a single-node swarm through the real docker CLI: create/ls/inspect/rm as moby
shows them (scope swarm, driver overlay, the VNI option, a /24 of 10.0.0.0/8 from the etcd IPAM), the
node's bridge and kernel vxlan device (on this test's data path port), attachable containers and
service tasks getting addresses there and finding each other through the embedded DNS (container
name, service name, tasks.<service>), the refusals (not in a swarm, in use, duplicate name, encrypted),
and nothing left after rm and swarm leave.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from lib.cni_host import InstanceNetwork
from lib.daemon import start_daemon
from lib.docker import BUSYBOX, DockerDaemon, docker_daemon, eventually, mirror_config
from lib.images import push
from lib.leaks import host_leftovers, leftovers
from lib.registry import Registry

NOT_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this '
               "node to swarm and try again.")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


@pytest.fixture
def swarm(dd: DockerDaemon) -> Iterator[int]:
    """A single-node swarm whose VXLAN port is this test's own (parallel tests never share one)."""
    port = free_udp_port()
    dd.out("swarm", "init", "--advertise-addr", "127.0.0.1", "--data-path-port", str(port))
    try:
        yield port
    finally:
        dd.docker("swarm", "leave", "--force", check=False)
        assert eventually(lambda: leftovers(dd.daemon) == {}, timeout=15), leftovers(dd.daemon)


def link(name: str) -> str:
    return subprocess.run(["ip", "-d", "link", "show", name], capture_output=True, text=True).stdout


def inspect(dd: DockerDaemon, name: str) -> dict[str, object]:
    data = json.loads(dd.out("network", "inspect", name))
    assert isinstance(data, list)
    return dict(data[0])


def test_overlay_refused_outside_a_swarm(dd: DockerDaemon) -> None:
    out = dd.docker("network", "create", "-d", "overlay", "nope", check=False)
    assert out.returncode != 0 and NOT_MANAGER in out.stderr


def test_overlay_network_lifecycle_and_attachable_containers(dd: DockerDaemon, swarm: int) -> None:
    dd.out("network", "create", "-d", "overlay", "--attachable", "--label", "k=v", "ov1")
    net = inspect(dd, "ov1")
    assert (net["Scope"], net["Driver"], net["Attachable"], net["Internal"]) == ("swarm", "overlay", True, False)
    assert net["Labels"] == {"k": "v"}
    ipam = net["IPAM"]["Config"][0]  # type: ignore[index]
    assert ipam["Subnet"].startswith("10.0.") and ipam["Subnet"].endswith(".0/24")
    ingress = inspect(dd, "ingress")
    assert ingress["Ingress"] is True and ingress["IPAM"]["Config"][0]["Subnet"] != ipam["Subnet"]  # type: ignore[index]
    vni = net["Options"]["com.docker.network.driver.overlay.vxlanid_list"]  # type: ignore[index]
    assert int(vni) >= 4097
    ls = dd.out("network", "ls", "--filter", "scope=swarm", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    assert sorted(ls.split("\n")) == ["ingress overlay swarm", "ov1 overlay swarm"]  # moby's at init, and ours
    net_id = str(net["Id"])
    assert not link(f"nwv{net_id[:12].lower()}")  # made when the first endpoint joins, as libnetwork does
    # moby's refusals
    dup = dd.docker("network", "create", "-d", "overlay", "ov1", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    enc = dd.docker("network", "create", "-d", "overlay", "--opt", "encrypted", "ov2", check=False)
    assert enc.returncode != 0 and "encrypted" in enc.stderr
    assert "ov2" not in dd.out("network", "ls", "--format", "{{.Name}}")
    # attachable containers: addresses from the subnet, MTU for VXLAN, names through the embedded DNS
    dd.out("run", "-d", "--name", "srv", "--network", "ov1", BUSYBOX, "sleep", "300")
    srv = json.loads(dd.out("inspect", "srv"))[0]["NetworkSettings"]["Networks"]["ov1"]["IPAddress"]
    vx = link(f"nwv{net_id[:12].lower()}")
    assert f"vxlan id {vni}" in vx and f"dstport {swarm}" in vx and "nolearning" in vx
    assert "master" in vx and link(f"nwo{net_id[:12].lower()}")
    assert srv.startswith(ipam["Subnet"].rsplit(".", 1)[0] + ".") and srv != ipam["Gateway"]
    out = dd.out("run", "--rm", "--network", "ov1", BUSYBOX, "sh", "-c",
                 "ip -o link show eth0; ping -c1 -W2 srv >/dev/null && echo reached")
    assert "mtu 1450" in out and "reached" in out
    busy = dd.docker("network", "rm", "ov1", check=False)
    assert busy.returncode != 0 and "has active endpoints" in busy.stderr
    dd.out("rm", "-f", "srv")
    dd.out("network", "rm", "ov1")
    assert "ov1" not in dd.out("network", "ls", "--format", "{{.Name}}")
    assert eventually(lambda: not link(f"nwv{net_id[:12].lower()}"), timeout=10)
    assert not link(f"nwo{net_id[:12].lower()}")
    # the address pool came back: the next network gets the same subnet again
    dd.out("network", "create", "-d", "overlay", "ov3")
    assert inspect(dd, "ov3")["IPAM"]["Config"][0]["Subnet"] == ipam["Subnet"]  # type: ignore[index]
    dd.out("network", "rm", "ov3")


def test_service_tasks_on_an_overlay_find_each_other(dd: DockerDaemon, swarm: int) -> None:
    dd.out("network", "create", "-d", "overlay", "--attachable", "backend")
    dd.out("service", "create", "--detach", "--name", "web", "--replicas", "2", "--network", "backend",
           "--endpoint-mode", "dnsrr", BUSYBOX, "sleep", "600")

    def task_ips() -> list[str]:
        names = [n for n in dd.out("ps", "--format", "{{.Names}}").split() if n.startswith("web.")]
        if len(names) != 2:
            return []
        info = json.loads(dd.out("inspect", *names))
        return [c["NetworkSettings"]["Networks"].get("backend", {}).get("IPAddress", "") for c in info]

    assert eventually(lambda: len(task_ips()) == 2 and all(task_ips()), timeout=60), dd.out(
        "ps", "-a", "--format", "{{.Names}} {{.Networks}} {{.Status}}")
    ips = task_ips()
    subnet = inspect(dd, "backend")["IPAM"]["Config"][0]["Subnet"]  # type: ignore[index]
    assert all(ip.startswith(str(subnet).rsplit(".", 1)[0] + ".") for ip in ips) and len(set(ips)) == 2
    answer = dd.out("run", "--rm", "--network", "backend", BUSYBOX, "sh", "-c",
                    "nslookup web 127.0.0.11; nslookup tasks.web 127.0.0.11; ping -c1 -W2 web >/dev/null && echo ok")
    for ip in ips:
        assert ip in answer
    assert answer.rstrip().endswith("ok")
    # a network made without --attachable is for services only, as moby's
    dd.out("network", "create", "-d", "overlay", "svconly")
    refused = dd.docker("run", "--rm", "--network", "svconly", BUSYBOX, "true", check=False)
    assert refused.returncode != 0 and "network svconly not manually attachable" in refused.stderr
    dd.out("network", "rm", "svconly")
    in_use = dd.docker("network", "rm", "backend", check=False)
    assert in_use.returncode != 0 and "in use by service" in in_use.stderr
    # an attachable container's endpoint keeps the network; a removed service's tasks do not, even while
    # their containers are still leaving (swarmkit counts only tasks meant to run): docker-py's teardown
    # removes the service and then at once its networks
    dd.out("run", "-d", "--name", "holder", "--network", "backend", BUSYBOX, "sleep", "600")
    dd.out("service", "rm", "web")
    busy = dd.docker("network", "rm", "backend", check=False)
    assert busy.returncode != 0 and "has active endpoints" in busy.stderr
    dd.out("rm", "-f", "holder")
    dd.out("network", "rm", "backend")
    assert eventually(lambda: not [n for n in dd.out("ps", "-a", "--format", "{{.Names}}").split()
                                    if n.startswith("web.")], timeout=60)


def test_swarm_leave_removes_overlay_links(dd: DockerDaemon) -> None:
    port = free_udp_port()
    dd.out("swarm", "init", "--advertise-addr", "127.0.0.1", "--data-path-port", str(port))
    try:
        net_id = dd.out("network", "create", "-d", "overlay", "--attachable", "gone")
        dd.out("run", "-d", "--name", "stay", "--network", "gone", BUSYBOX, "sleep", "300")
        assert link(f"nwv{net_id[:12].lower()}")
        dd.out("rm", "-f", "stay")
    finally:
        dd.docker("swarm", "leave", "--force", check=False)
    assert eventually(lambda: not link(f"nwo{net_id[:12].lower()}"), timeout=15)
    assert not link(f"nwv{net_id[:12].lower()}")
    assert "gone" not in dd.out("network", "ls", "--format", "{{.Name}}")
    assert eventually(lambda: leftovers(dd.daemon) == {}, timeout=15), leftovers(dd.daemon)


def test_cleanup_removes_overlay_links_of_a_killed_daemon(registry: Registry) -> None:
    """kill -9 with a container on an overlay: ``narwhald cleanup`` removes the segment's links (it reads
    which from the state dir, without the store), and nothing else of the instance is left on the host."""
    push(registry.host, "library/busybox")
    d = start_daemon(mirror_config(registry.host))
    dd = DockerDaemon(d)
    try:
        dd.docker("pull", BUSYBOX)
        dd.out("swarm", "init", "--advertise-addr", "127.0.0.1", "--data-path-port", str(free_udp_port()))
        net_id = dd.out("network", "create", "-d", "overlay", "--attachable", "kept")
        dd.out("run", "-d", "--name", "keeper", "--network", "kept", BUSYBOX, "sleep", "300")
        names = (f"nwv{net_id[:12].lower()}", f"nwo{net_id[:12].lower()}")
        assert all(link(n) for n in names)
        d.kill9()
        etcd_pid = int((d.state / "docker" / "swarm" / "etcd.pid").read_text())
        os.kill(etcd_pid, signal.SIGKILL)  # a machine going down takes its etcd along
        result = d.cleanup("--force", "--remove-dirs")
        assert result.returncode == 0, result.stderr
        assert not any(link(n) for n in names), result.stdout
        assert host_leftovers(d, bridges=names) == {}
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


def resolved(out: str) -> list[str]:
    """The addresses busybox nslookup printed for the name (after its "Name:" line)."""
    tail = out[out.find("Name:"):] if "Name:" in out else ""
    return [line.split()[-1] for line in tail.splitlines() if line.startswith("Address")]


def test_service_vip_balances_over_the_tasks(dd: DockerDaemon, swarm: int) -> None:
    """vip endpoint mode (the default): the service name resolves to one address of the network that is no
    task's, tasks.<service> to the tasks; connections to the VIP reach every task (round robin)."""
    dd.out("network", "create", "-d", "overlay", "--attachable", "front")
    dd.out("service", "create", "--detach", "--name", "echo", "--replicas", "2", "--network", "front",
           BUSYBOX, "sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
    try:
        def tasks() -> dict[str, str]:
            names = [n for n in dd.out("ps", "--format", "{{.Names}}").split() if n.startswith("echo.")]
            if len(names) != 2:
                return {}
            info = json.loads(dd.out("inspect", *names))
            return {c["NetworkSettings"]["Networks"].get("front", {}).get("IPAddress", ""): c["Config"]["Hostname"]
                    for c in info}

        assert eventually(lambda: len(tasks()) == 2 and all(tasks()), timeout=60)
        by_ip = tasks()
        dd.out("run", "-d", "--name", "client", "--network", "front", BUSYBOX, "sleep", "300")
        assert eventually(lambda: len(resolved(dd.docker("exec", "client", "nslookup", "echo", "127.0.0.11",
                                                         check=False).stdout)) == 1, timeout=15)
        vip = resolved(dd.out("exec", "client", "nslookup", "echo", "127.0.0.11"))[0]
        assert vip not in by_ip and vip.rsplit(".", 1)[0] == next(iter(by_ip)).rsplit(".", 1)[0]
        assert sorted(resolved(dd.out("exec", "client", "nslookup", "tasks.echo", "127.0.0.11"))) == sorted(by_ip)
        seen: set[str] = set()

        def both_answer() -> bool:
            # busybox's wget -T crashes (139) in this image: busybox timeout bounds it instead
            got = dd.docker("exec", "client", "timeout", "3", "wget", "-q", "-O", "-", "http://echo:8080/",
                            check=False)
            seen.update(line for line in got.stdout.split() if line)
            return seen == set(by_ip.values())

        assert eventually(both_answer, timeout=30), (seen, by_ip)
    finally:
        dd.docker("rm", "-f", "client", check=False)
        dd.docker("service", "rm", "echo", check=False)
    assert eventually(lambda: dd.docker("network", "rm", "front", check=False).returncode == 0, timeout=60)
