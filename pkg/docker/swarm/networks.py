"""Overlay networks (scope swarm) as cluster objects in etcd, and their Docker API shape.

A record under ``objects/networks/<id>`` is swarmkit's api.Network (Spec with DriverConfiguration,
IPAMOptions, Attachable/Internal; DriverState with the VNI; the allocated IPAMOptions), its name
claimed in the same transaction as the object.  ``resource()`` turns it into the Docker
NetworkResource that ``GET /networks`` shows (Scope "swarm", Driver "overlay").

Only a manager creates and removes them (moby's messages for a worker and for a node in no swarm);
removal is refused while a service refers to the network or any address of it is held (a task or
an attachable container still on it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pkg import errors
from pkg.docker.swarm import ipam, objects, vip
from pkg.docker.swarm.lookup import find
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]

KIND = "networks"
DRIVER = "overlay"
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
ENCRYPTED_OPTION = "encrypted"
WORKER_REFUSED = ("Cannot create a multi-host network from a worker node. Please create the network from a "
                  "manager node.")


@dataclass(frozen=True)
class OverlayRequest:
    """POST /networks/create with Driver overlay, typed."""

    name: str
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    subnet: str = ""
    gateway: str = ""
    ingress: bool = False  # the routing mesh's network (moby makes one, "ingress", at swarm init)


async def create(store: Store, req: OverlayRequest, avoid: tuple[str, ...] = ()) -> Obj:
    """Allocate the subnet and VNI (etcd CAS), then write the network; the allocation is given back if the
    name turns out taken."""
    if not req.name.strip():
        raise errors.InvalidArgument("network name must not be empty")
    if ENCRYPTED_OPTION in req.options:
        # IPsec between VTEPs needs xfrm states keyed per node pair and key rotation through the store;
        # not built yet, and silently sending clear text where encryption was asked is worse than a refusal.
        raise errors.InvalidArgument("encrypted overlay networks (--opt encrypted) are not supported by this "
                                     "engine: traffic would not be encrypted")
    if req.ingress and any(n["Spec"].get("Ingress") for n in await store.list(KIND)):
        raise errors.Conflict("rpc error: code = AlreadyExists desc = ingress network already present")
    cluster = await store.get_cluster() or {}
    network_id = objects.new_id()
    lease = await ipam.allocate(store, network_id, req.subnet, req.gateway,
                                pools=tuple(cluster.get("DefaultAddrPool") or ()),
                                size=int(cluster.get("SubnetSize") or 0), avoid=avoid)
    stamp = objects.now()
    options = {**req.options, VNI_OPTION: str(lease.vni)}
    ipam_config = {"Driver": {"Name": "default"}, "Configs": [{"Subnet": lease.subnet, "Gateway": lease.gateway}]}
    record: Obj = {
        "ID": network_id,
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Spec": {
            "Name": req.name,
            "Labels": dict(req.labels),
            "DriverConfiguration": {"Name": DRIVER, "Options": dict(req.options)},
            "IPAMOptions": {"Driver": {"Name": "default"},
                            "Configs": [{"Subnet": req.subnet, "Gateway": req.gateway}] if req.subnet else []},
            "Scope": "swarm",
            "Internal": req.internal,
            "Attachable": req.attachable,
            "Ingress": req.ingress,
        },
        "DriverState": {"Name": DRIVER, "Options": options},
        "IPAMOptions": ipam_config,
    }
    try:
        return await store.create(KIND, record, name=req.name)
    except errors.AlreadyExists:
        await ipam.free(store, network_id)
        raise errors.Conflict(f"network with name {req.name} already exists") from None
    except BaseException:
        await ipam.free(store, network_id)
        raise


async def all_networks(store: Store) -> list[Obj]:
    return sorted(await store.list(KIND), key=lambda n: (n.get("CreatedAt", ""), n["Spec"]["Name"]))


async def get(store: Store, ref: str) -> Obj:
    return await find(store, KIND, ref)


def ingress_needed(spec: Obj) -> bool:
    """swarmkit's IsIngressNetworkNeeded: a port published in ingress mode (the default) puts the service's
    tasks on the ingress network."""
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return any((p.get("PublishMode") or "ingress") == "ingress" for p in ports)


async def check_ingress(store: Store, spec: Obj) -> None:
    """A service that needs the routing mesh cannot be created or updated without an ingress network."""
    if ingress_needed(spec) and not any(n["Spec"].get("Ingress") for n in await store.list(KIND)):
        raise errors.InvalidArgument("rpc error: code = FailedPrecondition desc = service needs ingress network, "
                                     "but no ingress network is present")


async def remove(store: Store, ref: str) -> Obj:
    network = await get(store, ref)
    if network["Spec"].get("Ingress"):
        # swarmkit's removeIngressNetwork: only the services that need it keep it (tasks still leaving and
        # the nodes' own endpoints go with it)
        for service in await store.list("services"):
            if ingress_needed(service["Spec"]):
                raise errors.InvalidArgument(f"rpc error: code = FailedPrecondition desc = ingress network cannot "
                                             f"be removed because service {service['ID']} depends on it")
        await store.delete(KIND, network["ID"], name=network["Spec"]["Name"])
        await ipam.free(store, network["ID"])
        return network
    for service in await store.list("services"):
        targets = [n.get("Target") for n in (service["Spec"].get("TaskTemplate") or {}).get("Networks") or []]
        if network["ID"] in targets or network["Spec"]["Name"] in targets:
            raise errors.FailedPrecondition(f"rpc error: code = FailedPrecondition desc = network {network['ID']} is "
                                            f"in use by service {service['ID']}")
    if await _active_endpoints(store, network["ID"]):
        raise errors.PermissionDenied(f"error while removing network: network {network['Spec']['Name']} id "
                                      f"{network['ID']} has active endpoints")
    await store.delete(KIND, network["ID"], name=network["Spec"]["Name"])
    await ipam.free(store, network["ID"])
    return network


async def _active_endpoints(store: Store, network_id: str) -> list[str]:
    """The addresses that keep a network from removal, as swarmkit decides: a task's only while the task is
    meant to run and its service exists (a removed service's task containers are still leaving: their
    addresses go with them), a service VIP only while its service exists (checked above), any other
    container's always."""
    tasks = {t["ID"]: t for t in await store.list("tasks")}
    services = {sv["ID"] for sv in await store.list("services")}
    active = []
    for address, record in (await ipam.addresses(store, network_id)).items():
        owner = str(record.get("owner", ""))
        if owner.startswith(vip.OWNER_PREFIX):
            continue
        task_ids = [name.rsplit(".", 1)[1] for name in record.get("names") or () if _TASK_NAME.match(str(name))]
        if task_ids:
            task = tasks.get(task_ids[0])
            if task is None or task.get("DesiredState") not in _RUNNABLE or task.get("ServiceID") not in services:
                continue  # being shut down (its service removed: the orchestrator is about to say so)
        active.append(address)
    return active


_TASK_NAME = re.compile(r"^[^.]+\.[^.]+\.[0-9a-z]{25}$")  # <service>.<slot or node>.<task ID> (objects.task_name)
_RUNNABLE = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")


async def resolve_targets(store: Store, spec: Obj) -> Obj:
    """A service spec whose TaskTemplate.Networks name their networks by ID, as moby stores them (the
    API takes names, IDs or ID prefixes); an unknown network is moby's 404.  The deprecated top-level
    ``Networks`` moves into the TaskTemplate, as moby does."""
    template = dict(spec.get("TaskTemplate") or {})
    attachments = list(template.get("Networks") or spec.get("Networks") or [])
    if not attachments:
        return spec
    resolved = []
    for attachment in attachments:
        if not isinstance(attachment, dict) or not isinstance(attachment.get("Target"), str):
            raise errors.InvalidArgument("TaskTemplate.Networks entries must be objects with a Target")
        try:
            network = await get(store, attachment["Target"])
        except errors.NotFound:
            raise errors.NotFound(f"network {attachment['Target']} not found") from None
        if network["Spec"].get("Ingress"):
            raise errors.InvalidArgument(f"service cannot be explicitly attached to the ingress network "
                                         f"\"{network['Spec']['Name']}\"")
        resolved.append({**attachment, "Target": network["ID"]})
    template["Networks"] = resolved
    return {**{k: v for k, v in spec.items() if k != "Networks"}, "TaskTemplate": template}


def vni(network: Obj) -> int:
    return int((network.get("DriverState") or {}).get("Options", {}).get(VNI_OPTION, "0"))


def pool(network: Obj) -> tuple[str, str]:
    """(subnet, gateway) the network was given."""
    config = ((network.get("IPAMOptions") or {}).get("Configs") or [{}])[0]
    return str(config.get("Subnet", "")), str(config.get("Gateway", ""))


def resource(network: Obj, containers: dict[str, Any] | None = None, peers: list[Obj] | None = None) -> Obj:
    """Docker's NetworkResource for an overlay network (GET /networks, /networks/{id})."""
    spec = network["Spec"]
    subnet, gateway = pool(network)
    body: Obj = {
        "Name": spec["Name"],
        "Id": network["ID"],
        "Created": network.get("CreatedAt", ""),
        "Scope": "swarm",
        "Driver": DRIVER,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": subnet, "Gateway": gateway}]},
        "Internal": bool(spec.get("Internal")),
        "Attachable": bool(spec.get("Attachable")),
        "Ingress": bool(spec.get("Ingress")),
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers if containers is not None else {},
        "Options": dict((network.get("DriverState") or {}).get("Options") or {}),
        "Labels": dict(spec.get("Labels") or {}),
    }
    if peers:
        body["Peers"] = peers
    return body
