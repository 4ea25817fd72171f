"""What swarmkit's allocator hands out on overlay networks, kept in the etcd IPAM (ipam.py):

- a **VIP per service and network** (owner ``vip:<service id>``): one on each network of the service's
  ``TaskTemplate.Networks`` in ``vip`` endpoint mode, and one on ``ingress`` when the service publishes a
  port in ingress mode (swarmkit's ``IsIngressNetworkNeeded``).  The leader claims the missing ones and
  gives back those no service wants on every overlay pass; a service create/update through any manager
  claims its own at once, so inspect shows ``Endpoint.VirtualIPs`` right away (``virtual_ips``, read from
  the IPAM records: the service record itself is never rewritten behind a client holding its version);
- a **node endpoint on ingress** (owner ``ingress-sbox:<node id>``, swarmkit's ``Node.Attachment``, moby's
  ``ingress-sbox``): the address the node's routing mesh source-NATs to, so that a task on another node
  answers over the overlay.  Claimed by the node itself while some service publishes an ingress port
  (mesh.py), given back when none does and when the node leaves.

The ingress VIP is reserved and shown (as swarmkit's); the balancing itself is the mesh's DNAT on
the node that took the connection, not IPVS behind that VIP.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from pkg.docker.swarm import ipam, networks, vip
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]

NODE_PREFIX = "ingress-sbox:"


def node_owner(node_id: str) -> str:
    return NODE_PREFIX + node_id


def is_node_endpoint(owner: str) -> bool:
    return owner.startswith(NODE_PREFIX)


def ingress_network(records: list[Obj]) -> Obj | None:
    """The swarm's ingress network (at most one: a second is refused at create)."""
    return next((r for r in records if r["Spec"].get("Ingress")), None)


def wanted_vips(service: Obj, ingress_id: str) -> list[tuple[str, tuple[str, ...]]]:
    """(network ID, DNS names of the VIP) of every VIP the service should hold, ingress first, as swarmkit
    orders ``Endpoint.VirtualIPs``.  The ingress VIP has no name: ingress has no service discovery."""
    spec = service["Spec"]
    if (spec.get("EndpointSpec") or {}).get("Mode", "vip") == "dnsrr":
        return []
    out: list[tuple[str, tuple[str, ...]]] = []
    if ingress_id and networks.ingress_needed(spec):
        out.append((ingress_id, ()))
    for attachment in (spec.get("TaskTemplate") or {}).get("Networks") or []:
        target = str(attachment.get("Target") or "")
        if target and target != ingress_id and target not in [n for n, _ in out]:
            out.append((target, (spec["Name"],)))
    return out


async def allocate_vips(store: Store, service: Obj) -> None:
    """Claim the service's VIPs now (idempotent: an owner that holds one gets it again)."""
    records = {r["ID"]: r for r in await networks.all_networks(store)}
    ingress = ingress_network(list(records.values()))
    for network_id, names in wanted_vips(service, ingress["ID"] if ingress else ""):
        record = records.get(network_id)
        if record is not None:
            subnet, gateway = networks.pool(record)
            await ipam.claim(store, network_id, subnet, gateway, vip.OWNER_PREFIX + service["ID"], "", names=names)


async def sync_vips(store: Store, records: list[Obj]) -> None:
    """The leader's pass: every wanted VIP held, none held that no service wants."""
    ingress = ingress_network(records)

    async def wanted_now() -> dict[tuple[str, str], tuple[str, ...]]:
        wanted: dict[tuple[str, str], tuple[str, ...]] = {}  # (network ID, owner) -> names
        for service in await store.list("services"):
            for network_id, names in wanted_vips(service, ingress["ID"] if ingress else ""):
                wanted[(network_id, vip.OWNER_PREFIX + service["ID"])] = names
        return wanted

    wanted = await wanted_now()
    unwanted: list[tuple[str, str]] = []
    for record in records:
        held = await ipam.addresses(store, record["ID"])
        owners = {str(r.get("owner", "")) for r in held.values()}
        unwanted += [(record["ID"], o) for o in owners if o.startswith(vip.OWNER_PREFIX) and (record["ID"], o)
                     not in wanted]
        subnet, gateway = networks.pool(record)
        for (network_id, owner), names in wanted.items():
            if network_id == record["ID"] and owner not in owners:
                await ipam.claim(store, network_id, subnet, gateway, owner, "", names=names)
    if unwanted:
        wanted = await wanted_now()  # a service created since the first read claimed its own: keep them
        for network_id, owner in unwanted:
            if (network_id, owner) not in wanted:
                await ipam.release(store, network_id, owner)


async def virtual_ips(store: Store, services: list[Obj]) -> dict[str, list[Obj]]:
    """service ID -> its ``Endpoint.VirtualIPs`` (``[{"NetworkID", "Addr": "10.0.0.2/24"}]``), from the
    addresses the IPAM holds for it, in ``wanted_vips`` order."""
    records = {r["ID"]: r for r in await networks.all_networks(store)}
    ingress = ingress_network(list(records.values()))
    held: dict[str, dict[str, str]] = {}  # network ID -> owner -> address
    out: dict[str, list[Obj]] = {}
    for service in services:
        vips: list[Obj] = []
        for network_id, _ in wanted_vips(service, ingress["ID"] if ingress else ""):
            record = records.get(network_id)
            if record is None:
                continue
            if network_id not in held:
                held[network_id] = {str(r.get("owner", "")): ip
                                    for ip, r in (await ipam.addresses(store, network_id)).items()}
            address = held[network_id].get(vip.OWNER_PREFIX + service["ID"])
            if address:
                prefix = ipaddress.ip_network(networks.pool(record)[0]).prefixlen
                vips.append({"NetworkID": network_id, "Addr": f"{address}/{prefix}"})
        out[service["ID"]] = vips
    return out


async def claim_node_endpoint(store: Store, record: Obj, node_id: str) -> str:
    """This node's address on ingress (the one it holds, else a new one)."""
    subnet, gateway = networks.pool(record)
    return await ipam.claim(store, record["ID"], subnet, gateway, node_owner(node_id), node_id)


async def release_node_endpoint(store: Store, node_id: str) -> None:
    """Give back this node's ingress address (no more published ports, or the node leaves)."""
    ingress = ingress_network(await networks.all_networks(store))
    if ingress is not None:
        await ipam.release(store, ingress["ID"], node_owner(node_id))


async def sweep_node_endpoints(store: Store, records: list[Obj], node_ids: set[str]) -> None:
    """The leader's pass: node endpoints of nodes no longer in the swarm (``node rm``) are given back."""
    ingress = ingress_network(records)
    if ingress is None:
        return
    for rec in (await ipam.addresses(store, ingress["ID"])).values():
        owner = str(rec.get("owner", ""))
        if is_node_endpoint(owner) and owner[len(NODE_PREFIX):] not in node_ids:
            await ipam.release(store, ingress["ID"], owner)


def task_attachments(task: Obj, records: list[Obj], addresses: dict[str, str]) -> list[Obj]:
    """The task's ``NetworksAttachments`` as swarmkit shows them (``[{"Network": <the network object>,
    "Addresses": ["10.0.0.3/24"]}]``), ingress first, then ``Spec.Networks`` in order; ``addresses`` are its
    container's (network name -> CIDR).  The task is on ingress when its container is."""
    by_id = {r["ID"]: r for r in records}
    ingress = ingress_network(records)
    ids = [ingress["ID"]] if ingress is not None and ingress["Spec"]["Name"] in addresses else []
    ids += [str(n.get("Target")) for n in task["Spec"].get("Networks") or () if n.get("Target") in by_id]
    out: list[Obj] = []
    for network_id in dict.fromkeys(ids):
        record = by_id[network_id]
        attachment: Obj = {"Network": record}
        address = addresses.get(record["Spec"]["Name"])
        if address:
            attachment["Addresses"] = [address]
        out.append(attachment)
    return out
