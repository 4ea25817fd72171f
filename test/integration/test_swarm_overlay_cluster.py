"""Overlay networks across narwhald nodes (the cluster test bed: each node in its own network namespace):
a network created on the manager appears on the worker, containers on the two nodes get distinct
addresses from the etcd IPAM and reach each other over VXLAN (static FDB entries pointing at the other
node's address), and a service's tasks on both nodes talk to each other over it, by address and by name
(the embedded DNS answers for tasks of the other node from the etcd records), and through the service's
VIP, balanced over the tasks of both nodes.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lib.cluster import Bed, Node, cluster, eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def bed2() -> Iterator[Bed]:
    with cluster(2, managers=1) as bed:
        yield bed


def address(node: Node, container: str, network: str) -> str:
    info = json.loads(node.out("inspect", container))[0]
    return str(info["NetworkSettings"]["Networks"][network]["IPAddress"])


def reaches(node: Node, container: str, ip: str) -> bool:
    return node.docker("exec", container, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def test_containers_on_two_nodes_talk_over_the_overlay(bed2: Bed) -> None:
    manager, worker = bed2.nodes
    net_id = manager.out("network", "create", "-d", "overlay", "--attachable", "ovx")
    try:
        assert eventually(lambda: "ovx" in worker.out("network", "ls", "--format", "{{.Name}}").split(), 15)
        manager.out("run", "-d", "--name", "ca", "--network", "ovx", "busybox", "sleep", "300")
        worker.out("run", "-d", "--name", "cb", "--network", "ovx", "busybox", "sleep", "300")
        ip_a, ip_b = address(manager, "ca", "ovx"), address(worker, "cb", "ovx")
        assert ip_a != ip_b and ip_a.rsplit(".", 1)[0] == ip_b.rsplit(".", 1)[0]
        assert eventually(lambda: reaches(worker, "cb", ip_a), 20)
        assert reaches(manager, "ca", ip_b)
        # container names resolve on the other node (the name is in the address's etcd record)
        assert ip_a in worker.out("exec", "cb", "nslookup", "ca", "127.0.0.11")
        vxlan = f"nwv{net_id[:12].lower()}"
        assert worker.address in manager.run_in("bridge", "fdb", "show", "dev", vxlan).stdout
        assert manager.address in worker.run_in("bridge", "fdb", "show", "dev", vxlan).stdout
        # a removed container's address is withdrawn from the other node's entries
        worker.out("rm", "-f", "cb")
        assert eventually(lambda: ip_b not in manager.run_in("ip", "neigh", "show", "dev", vxlan).stdout, 15)
        manager.out("rm", "-f", "ca")
    finally:
        for node, name in ((manager, "ca"), (worker, "cb")):
            node.docker("rm", "-f", name, check=False)
        assert eventually(lambda: manager.docker("network", "rm", "ovx", check=False).returncode == 0, 20)
    assert eventually(lambda: "ovx" not in worker.out("network", "ls", "--format", "{{.Name}}").split(), 15)
    assert eventually(lambda: worker.run_in("ip", "link", "show", vxlan, check=False).returncode != 0, 15)


def test_service_tasks_on_both_nodes_reach_each_other(bed2: Bed) -> None:
    manager, worker = bed2.nodes
    manager.out("network", "create", "-d", "overlay", "mesh")
    manager.out("service", "create", "--detach", "--name", "pair", "--replicas", "2", "--network", "mesh",
                "--placement-pref", "spread=node.id", "busybox", "sh", "-c",
                "hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
    try:
        def task(node: Node) -> str:
            names = [n for n in node.out("ps", "--format", "{{.Names}}").split() if n.startswith("pair.")]
            return names[0] if len(names) == 1 else ""

        assert eventually(lambda: bool(task(manager)) and bool(task(worker)), 60)
        on_m, on_w = task(manager), task(worker)
        ip_m, ip_w = address(manager, on_m, "mesh"), address(worker, on_w, "mesh")
        assert eventually(lambda: reaches(manager, on_m, ip_w), 20)
        assert reaches(worker, on_w, ip_m)
        # the embedded DNS of each node answers for the other node's task too (its names are in etcd)
        answer = manager.out("exec", on_m, "nslookup", "tasks.pair", "127.0.0.11")
        assert ip_m in answer and ip_w in answer
        assert ip_w in manager.out("exec", on_m, "nslookup", on_w, "127.0.0.11")
        assert reaches(worker, on_w, "pair")
        # the service VIP from a task on the manager reaches the tasks on both nodes
        hostnames = {json.loads(node.out("inspect", name))[0]["Config"]["Hostname"]
                     for node, name in ((manager, on_m), (worker, on_w))}
        seen: set[str] = set()

        def both() -> bool:
            got = manager.docker("exec", on_m, "timeout", "3", "wget", "-q", "-O", "-", "http://pair:8080/",
                                 check=False)
            seen.update(got.stdout.split())
            return seen == hostnames

        assert eventually(both, 30), (seen, hostnames)
    finally:
        manager.docker("service", "rm", "pair", check=False)
        assert eventually(lambda: manager.docker("network", "rm", "mesh", check=False).returncode == 0, 60)
