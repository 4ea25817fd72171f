"""IPAM of overlay networks, kept in etcd so two nodes never hand out one subnet, VNI or address.

Layout under the swarm prefix:

    ipam/pools               {"subnets": {subnet: network id}, "vnis": {vni: network id}}: one record,
                             written with a compare on its mod revision, so overlapping subnets and a
                             VNI taken twice are impossible even when two managers create at once
    ipam/addrs/<net id>/<ip> {"owner": ..., "node": ...}: one key per address, created with
                             ``create_revision == 0``, so the first writer wins and the loser takes the
                             next free one

Defaults as swarmkit's: subnets of ``SubnetSize`` (24) bits from the cluster's ``DefaultAddrPool``
(10.0.0.0/8), the first host address as gateway, VNIs from 4097 (libnetwork's overlay range
starts above 4096).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from pkg import errors
from pkg.docker.swarm.store import Store, etcd_errors

DEFAULT_POOL = "10.0.0.0/8"
DEFAULT_SUBNET_SIZE = 24
FIRST_VNI = 4097
LAST_VNI = (1 << 24) - 1
CAS_ATTEMPTS = 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Lease:
    """What an overlay network holds: its subnet, gateway and VNI."""

    subnet: str
    gateway: str
    vni: int


def _key(store: Store, *parts: str) -> bytes:
    return "/".join((store.prefix, "ipam", *parts)).encode()


def _addr_key(store: Store, network_id: str, ip: str = "") -> bytes:
    return _key(store, "addrs", network_id, ip)


@etcd_errors
async def _pools(store: Store) -> tuple[dict[str, Any], int]:
    kv = await store.c.get(_key(store, "pools"))
    if kv is None:
        return {"subnets": {}, "vnis": {}}, 0
    return json.loads(kv.value), int(kv.mod_revision)


@etcd_errors
async def _write_pools(store: Store, data: dict[str, Any], revision: int) -> bool:
    tx = store.c.transactions
    key = _key(store, "pools")
    compare = [tx.create(key) == 0] if revision == 0 else [tx.mod(key) == revision]
    ok, _ = await store.c.transaction(compare=compare, success=[tx.put(key, json.dumps(data).encode())],
                                      failure=[])
    return bool(ok)


def _pick(pools: list[str], size: int, taken: list[Network]) -> Network:
    for pool in pools:
        base = ipaddress.ip_network(pool)
        if size < base.prefixlen:
            continue
        for candidate in base.subnets(new_prefix=size):
            if not any(candidate.overlaps(t) for t in taken):
                return candidate
    raise errors.ResourceExhausted("could not find an available, non-overlapping IPv4 address pool among the "
                                   "defaults to assign to the network")


async def allocate(store: Store, network_id: str, subnet: str = "", gateway: str = "", *,
                   pools: tuple[str, ...] = (), size: int = 0, avoid: tuple[str, ...] = ()) -> Lease:
    """Claim a subnet (the requested one, else the first free ``size`` block of ``pools``, skipping the
    ``avoid`` networks, e.g. this node's routes) and a VNI for a new overlay network."""
    for _ in range(CAS_ATTEMPTS):
        data, revision = await _pools(store)
        taken = [ipaddress.ip_network(s) for s in data["subnets"]]
        if subnet:
            chosen = ipaddress.ip_network(subnet, strict=False)
            if any(chosen.overlaps(t) for t in taken):
                raise errors.PermissionDenied("invalid pool request: Pool overlaps with other one on this address "
                                              "space")
        else:
            chosen = _pick(list(pools or (DEFAULT_POOL,)), size or DEFAULT_SUBNET_SIZE,
                           [*taken, *(ipaddress.ip_network(a) for a in avoid)])
        used = {int(v) for v in data["vnis"]}
        vni = next((v for v in range(FIRST_VNI, LAST_VNI + 1) if v not in used), 0)
        if not vni:
            raise errors.ResourceExhausted("no free VXLAN network identifier")
        gw = gateway or str(next(chosen.hosts()))
        data["subnets"][str(chosen)] = network_id
        data["vnis"][str(vni)] = network_id
        if await _write_pools(store, data, revision):
            return Lease(str(chosen), gw, vni)
    raise errors.Unavailable("overlay IPAM: too many concurrent changes, try again")


async def free(store: Store, network_id: str) -> None:
    """Give back a removed network's subnet, VNI and every address it still holds."""
    for _ in range(CAS_ATTEMPTS):
        data, revision = await _pools(store)
        data["subnets"] = {k: v for k, v in data["subnets"].items() if v != network_id}
        data["vnis"] = {k: v for k, v in data["vnis"].items() if v != network_id}
        if await _write_pools(store, data, revision):
            break
    await _delete_prefix(store, _addr_key(store, network_id))


@etcd_errors
async def _delete_prefix(store: Store, prefix: bytes) -> None:
    await store.c.delete_prefix(prefix)


@etcd_errors
async def claim(store: Store, network_id: str, subnet: str, gateway: str, owner: str, node: str,
                ip: str = "", names: tuple[str, ...] = ()) -> str:
    """An address of the network for ``owner`` (a task or a container's sandbox) on ``node``: ``ip`` if
    given (409 if held by another owner), else the lowest free host address but the gateway.  An owner
    that already holds one gets it again (a retried call does not leak)."""
    held = await addresses(store, network_id)
    for address, rec in held.items():
        if rec.get("owner") == owner and (not ip or address == ip):
            return address
    net = ipaddress.ip_network(subnet)
    # names: what the embedded DNS of other nodes answers with this address (aliases, the task's name)
    record = json.dumps({"owner": owner, "node": node, **({"names": list(names)} if names else {})}).encode()
    tx = store.c.transactions
    if ip:
        if ipaddress.ip_address(ip) not in net:
            raise errors.InvalidArgument(f"no configured subnet contains IP address {ip}")
        candidates: list[str] = [ip]
    else:
        candidates = [str(h) for h in net.hosts() if str(h) != gateway and str(h) not in held]
    for candidate in candidates:
        key = _addr_key(store, network_id, candidate)
        ok, _ = await store.c.transaction(compare=[tx.create(key) == 0], success=[tx.put(key, record)], failure=[])
        if ok:
            return candidate
        if ip:
            raise errors.Conflict(f"Address already in use: {ip} on network {network_id[:12]}")
    raise errors.ResourceExhausted(f"no available IPv4 addresses on network {network_id[:12]}")


@etcd_errors
async def release(store: Store, network_id: str, owner: str) -> None:
    """Every address ``owner`` holds on the network (none is fine)."""
    for address, rec in (await addresses(store, network_id)).items():
        if rec.get("owner") == owner:
            await store.c.delete(_addr_key(store, network_id, address))


@etcd_errors
async def addresses(store: Store, network_id: str) -> dict[str, dict[str, Any]]:
    """address -> {"owner", "node"[, "names"]} of every address held on the network."""
    prefix = _addr_key(store, network_id)
    out = {}
    for kv in await store.c.get_prefix(prefix):
        out[kv.key[len(prefix):].decode()] = json.loads(kv.value)
    return out
