"""Overlay IPAM in etcd (pkg/docker/swarm/ipam.py) against a real etcd member: subnets from 10.0.0.0/8 in
/24s, VNIs from 4097, addresses claimed with compare-and-swap so that many claimers racing (two
"nodes", two store clients) never get one address twice, and everything given back on free; and what the
allocator (allocation.py) claims there: service VIPs and the nodes' ingress endpoints.
"""
from __future__ import annotations

import asyncio
import ipaddress
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pkg import errors
from pkg.docker.swarm import allocation, ipam, networks, services
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


async def test_service_vips_node_endpoints_and_ingress_rules(stores: tuple[Store, Store]) -> None:
    """What swarmkit's allocator hands out (allocation.py): a VIP per network of a service, ingress first and
    nameless when it publishes a port; one ingress address per node (the mesh's source), swept once the node
    is gone; ingress kept while a service needs it, and needed for publishing."""
    one, two = stores
    ingress = await networks.create(one, networks.OverlayRequest("ingress", ingress=True))
    front = await networks.create(one, networks.OverlayRequest("front"))
    spec = {"Name": "web", "EndpointSpec": {"Mode": "vip", "Ports": [{"TargetPort": 80, "PublishedPort": 8080}]},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": front["ID"]}]}}
    await networks.check_ingress(one, spec)
    service = await services.create(one, spec)
    await allocation.allocate_vips(two, service)
    await allocation.allocate_vips(one, service)  # again: the same addresses, not new ones
    vips = (await allocation.virtual_ips(two, [service]))[service["ID"]]
    assert [v["NetworkID"] for v in vips] == [ingress["ID"], front["ID"]], vips
    assert [v["Addr"].split(".")[:3] for v in vips] == [networks.pool(n)[0].split(".")[:3] for n in (ingress, front)]
    assert all(v["Addr"].endswith("/24") for v in vips)
    names = {tuple(r.get("names") or ()) for r in (await ipam.addresses(one, ingress["ID"])).values()}
    assert names == {()}  # no service discovery on ingress
    assert [r.get("names") for r in (await ipam.addresses(one, front["ID"])).values()] == [["web"]]
    # node endpoints: one per node, claimed again idempotently, swept when the node is no longer in the swarm
    a = await allocation.claim_node_endpoint(one, ingress, "node-a")
    b = await allocation.claim_node_endpoint(two, ingress, "node-b")
    assert a != b and await allocation.claim_node_endpoint(two, ingress, "node-a") == a
    await allocation.sweep_node_endpoints(one, await networks.all_networks(one), {"node-a"})
    owners = {r["owner"]: ip for ip, r in (await ipam.addresses(one, ingress["ID"])).items()}
    assert owners.get("ingress-sbox:node-a") == a and "ingress-sbox:node-b" not in owners
    with pytest.raises(errors.InvalidArgument, match="ingress network cannot be removed because service "
                       f"{service['ID']} depends on it"):
        await networks.remove(one, "ingress")
    # the service gone, the leader's pass gives its VIPs back (the node's endpoint stays: it is not a VIP)
    await services.remove(one, "web")
    await allocation.sync_vips(one, await networks.all_networks(one))
    assert await ipam.addresses(one, front["ID"]) == {}
    assert [r["owner"] for r in (await ipam.addresses(one, ingress["ID"])).values()] == ["ingress-sbox:node-a"]
    await networks.remove(two, "ingress")  # a node's endpoint does not keep it (swarmkit checks services only)
    assert await ipam.addresses(one, ingress["ID"]) == {}
    with pytest.raises(errors.InvalidArgument, match="service needs ingress network, but no ingress network is "
                       "present"):
        await networks.check_ingress(one, spec)
    await networks.check_ingress(one, {**spec, "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishMode": "host"}]}})
