"""Overlay IPAM in etcd (pkg/docker/swarm/ipam.py) against a real etcd member: subnets from 10.0.0.0/8 in
/24s, VNIs from 4097, addresses claimed with compare-and-swap so that many claimers racing (two
"nodes", two store clients) never get one address twice, and everything given back on free.
"""
from __future__ import annotations

import asyncio
import ipaddress
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pkg import errors
from pkg.docker.swarm import ipam
from pkg.docker.swarm.etcd import EtcdMember
from pkg.docker.swarm.store import Store


@pytest.fixture
async def stores() -> AsyncIterator[tuple[Store, Store]]:
    with tempfile.TemporaryDirectory(prefix="narwhal-ipam-") as tmp:
        member = EtcdMember(Path(tmp) / "root", Path(tmp) / "state")
        config = member.create("ipam-test", "127.0.0.1")
        member.ensure_started(config)
        one, two = Store([("127.0.0.1", config.client_port)]), Store([("127.0.0.1", config.client_port)])
        try:
            await one.connect()
            await two.connect()
            yield one, two
        finally:
            await one.close()
            await two.close()
            await member.destroy()


async def test_subnets_vnis_and_overlap(stores: tuple[Store, Store]) -> None:
    one, two = stores
    first = await ipam.allocate(one, "n1")
    assert (first.subnet, first.gateway, first.vni) == ("10.0.0.0/24", "10.0.0.1", 4097)
    second = await ipam.allocate(two, "n2", avoid=("10.0.1.0/24",))  # e.g. a route of this node
    assert (second.subnet, second.vni) == ("10.0.2.0/24", 4098)
    with pytest.raises(errors.PermissionDenied, match="Pool overlaps"):
        await ipam.allocate(one, "n3", "10.0.0.0/16")
    third = await ipam.allocate(one, "n3", "192.168.99.0/24", "192.168.99.254")
    assert (third.gateway, third.vni) == ("192.168.99.254", 4099)
    await ipam.free(one, "n1")
    again = await ipam.allocate(two, "n4")
    assert (again.subnet, again.vni) == ("10.0.0.0/24", 4097)  # given back, handed out again


async def test_racing_subnet_allocations_never_overlap(stores: tuple[Store, Store]) -> None:
    one, two = stores
    leases = await asyncio.gather(*(ipam.allocate(one if i % 2 else two, f"net{i}") for i in range(12)))
    subnets = [ipaddress.ip_network(lease.subnet) for lease in leases]
    assert len(set(subnets)) == 12 and len({lease.vni for lease in leases}) == 12


async def test_racing_address_claims_are_unique(stores: tuple[Store, Store]) -> None:
    one, two = stores
    lease = await ipam.allocate(one, "net")
    got = await asyncio.gather(*(ipam.claim(one if i % 2 else two, "net", lease.subnet, lease.gateway,
                                            f"task{i}", "node-a" if i % 2 else "node-b") for i in range(40)))
    assert len(set(got)) == 40 and lease.gateway not in got
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(lease.subnet) for ip in got)
    # a retried claim by the same owner gets its address back, not a second one
    assert await ipam.claim(two, "net", lease.subnet, lease.gateway, "task3", "node-a") == got[3]
    held = await ipam.addresses(one, "net")
    assert len(held) == 40 and held[got[0]] == {"owner": "task0", "node": "node-b"}
    with pytest.raises(errors.Conflict, match="Address already in use"):
        await ipam.claim(one, "net", lease.subnet, lease.gateway, "other", "node-a", got[5])
    with pytest.raises(errors.InvalidArgument):
        await ipam.claim(one, "net", lease.subnet, lease.gateway, "other", "node-a", "10.9.9.9")
    await ipam.release(one, "net", "task0")
    assert got[0] not in await ipam.addresses(two, "net")
    await ipam.free(one, "net")
    assert await ipam.addresses(one, "net") == {}


async def test_a_full_subnet_is_refused(stores: tuple[Store, Store]) -> None:
    one, _ = stores
    lease = await ipam.allocate(one, "tiny", "10.9.0.0/30")
    assert await ipam.claim(one, "tiny", lease.subnet, lease.gateway, "a", "n") == "10.9.0.2"
    with pytest.raises(errors.ResourceExhausted):
        await ipam.claim(one, "tiny", lease.subnet, lease.gateway, "b", "n")
