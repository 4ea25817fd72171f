"""The overlay data plane (pkg/docker/swarm/vxlan.py) between two "nodes": two network namespaces this
test creates, joined by a veth underlay, each with the overlay's bridge and vxlan device, and one
"container" namespace per node on that bridge.  Traffic crosses only with the static FDB/neighbour
entries written for the remote endpoint (learning is off), stops when they are withdrawn, and
nothing is left after delete.
"""
from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pkg.docker.swarm.vxlan import DataPlane, Peer, Segment, mac_for

UNDERLAY = ("192.168.251.1", "192.168.251.2")
OVERLAY = ("10.0.77.2", "10.0.77.3")
PORT = 47890  # not 4789: a real overlay on the host may own that one


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Bed:
    nodes: tuple[str, str]
    containers: tuple[str, str]
    segments: tuple[Segment, Segment]
    planes: tuple[DataPlane, DataPlane]


@pytest.fixture
def bed() -> Iterator[Bed]:
    tag = secrets.token_hex(3)
    nodes = (f"ovn-a-{tag}", f"ovn-b-{tag}")
    containers = (f"ovc-a-{tag}", f"ovc-b-{tag}")
    made: list[str] = []
    try:
        for ns in (*nodes, *containers):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "-n", nodes[0], "link", "add", "und0", "type", "veth", "peer", "name", "und0", "netns", nodes[1])
        for ns, addr in zip(nodes, UNDERLAY, strict=True):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "und0")
            sh("ip", "-n", ns, "link", "set", "und0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        segments = tuple(Segment(bridge="ovbr0", vxlan="ovvx0", vni=4097, port=PORT, local=addr,
                                 gateway="10.0.77.1/24") for addr in UNDERLAY)
        for node, ctr, ip in zip(nodes, containers, OVERLAY, strict=True):
            sh("ip", "-n", node, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", ctr)
            sh("ip", "-n", ctr, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ctr, "link", "set", "eth0", "address", mac_for(ip), "mtu", "1450", "up")
            sh("ip", "-n", ctr, "link", "set", "lo", "up")
        yield Bed(nodes, containers, (segments[0], segments[1]), (DataPlane(nodes[0]), DataPlane(nodes[1])))
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def reaches(ctr: str, ip: str) -> bool:
    return sh("ip", "netns", "exec", ctr, "busybox", "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


async def eventually(pred: object, timeout: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await asyncio.to_thread(pred):  # type: ignore[arg-type]
            return True
        await asyncio.sleep(0.2)
    return False


async def _up(bed: Bed) -> None:
    for plane, seg, node in zip(bed.planes, bed.segments, bed.nodes, strict=True):
        await plane.ensure(seg)
        await plane.ensure(seg)  # idempotent: a restart finds everything made
        sh("ip", "-n", node, "link", "set", "veth0", "master", seg.bridge, "up")


async def test_two_nodes_talk_over_vxlan_only_with_static_entries(bed: Bed) -> None:
    await _up(bed)
    a, b = bed.planes
    seg_a, seg_b = bed.segments
    # no entries yet: learning is off and nothing floods, so A cannot find B
    assert not reaches(bed.containers[0], OVERLAY[1])
    peer_b = Peer(OVERLAY[1], mac_for(OVERLAY[1]), UNDERLAY[1])
    peer_a = Peer(OVERLAY[0], mac_for(OVERLAY[0]), UNDERLAY[0])
    await a.set_peers(seg_a, [peer_b])
    await b.set_peers(seg_b, [peer_a])
    assert await a.peers(seg_a) == {peer_b}
    assert await eventually(lambda: reaches(bed.containers[0], OVERLAY[1]))
    assert reaches(bed.containers[1], OVERLAY[0])
    info = sh("ip", "-n", bed.nodes[0], "-d", "link", "show", "ovvx0").stdout
    assert "vxlan id 4097" in info and f"dstport {PORT}" in info and "nolearning" in info and "proxy" in info
    # withdrawn entries: the traffic stops (the entries, not learning, carry it)
    await a.set_peers(seg_a, [])
    assert await a.peers(seg_a) == set()
    sh("ip", "-n", bed.containers[0], "neigh", "flush", "all")
    assert not reaches(bed.containers[0], OVERLAY[1])
    for plane, seg in zip(bed.planes, bed.segments, strict=True):
        await plane.delete(seg)
        await plane.delete(seg)  # twice: a missing link is fine
        assert not await plane.exists(seg.bridge) and not await plane.exists(seg.vxlan)


async def test_another_vni_does_not_reach(bed: Bed) -> None:
    await _up(bed)
    a, b = bed.planes
    other = Segment(bridge="ovbr1", vxlan="ovvx1", vni=4098, port=PORT, local=UNDERLAY[1], gateway="10.0.77.1/24")
    sh("ip", "-n", bed.nodes[1], "link", "set", "veth0", "nomaster")
    await b.delete(bed.segments[1])
    await b.ensure(other)
    sh("ip", "-n", bed.nodes[1], "link", "set", "veth0", "master", "ovbr1", "up")
    await a.set_peers(bed.segments[0], [Peer(OVERLAY[1], mac_for(OVERLAY[1]), UNDERLAY[1])])
    await b.set_peers(other, [Peer(OVERLAY[0], mac_for(OVERLAY[0]), UNDERLAY[0])])
    assert not await eventually(lambda: reaches(bed.containers[0], OVERLAY[1]), timeout=3)
    # a vxlan id and port taken by another device on the node: a clear 409, not a traceback
    clash = Segment(bridge="ovbr2", vxlan="ovvx2", vni=4098, port=PORT, local=UNDERLAY[1])
    from pkg import errors
    with pytest.raises(errors.AlreadyExists):
        await b.ensure(clash)
    assert not await b.exists("ovbr2")


async def test_a_node_endpoint_on_the_bridge_answers_over_vxlan(bed: Bed) -> None:
    """The routing mesh's source address (a node's own ingress endpoint) sits on the node's bridge, whose MAC is
    the one peers derive from it: a container on the other node reaches it over the VXLAN, and the node reaches
    that container from it; given back, it leaves the bridge."""
    await _up(bed)
    a, b = bed.planes
    endpoint = "10.0.77.10"
    seg_a = dataclasses.replace(bed.segments[0], address=f"{endpoint}/24", mac=mac_for(endpoint))
    await a.ensure(seg_a)
    await a.set_peers(seg_a, [Peer(OVERLAY[1], mac_for(OVERLAY[1]), UNDERLAY[1])])
    await b.set_peers(bed.segments[1], [Peer(endpoint, mac_for(endpoint), UNDERLAY[0])])
    assert mac_for(endpoint) in sh("ip", "-n", bed.nodes[0], "link", "show", "ovbr0").stdout
    assert await eventually(lambda: reaches(bed.containers[1], endpoint))
    from_node = sh("ip", "netns", "exec", bed.nodes[0], "busybox", "ping", "-c", "1", "-W", "1", "-I", endpoint,
                   OVERLAY[1], check=False)
    assert from_node.returncode == 0, from_node.stdout + from_node.stderr
    await a.ensure(bed.segments[0])  # the endpoint given back: only the gateway stays
    addrs = sh("ip", "-n", bed.nodes[0], "-4", "-o", "addr", "show", "dev", "ovbr0").stdout
    assert "10.0.77.1/24" in addrs and endpoint not in addrs
    for plane, seg in zip(bed.planes, bed.segments, strict=True):
        await plane.delete(seg)
