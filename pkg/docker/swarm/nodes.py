"""Nodes: list/inspect/update/remove as swarmkit's controlapi/node.go."""
from __future__ import annotations

from typing import Any

from pkg import errors
from pkg.docker.swarm import objects
from pkg.docker.swarm.lookup import find, labels_match
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]

ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")


async def get(store: Store, ref: str, self_id: str) -> Obj:
    return await find(store, "nodes", self_id if ref == "self" else ref)


async def list_nodes(store: Store, filters: dict[str, list[str]], self_id: str) -> list[Obj]:
    out = []
    for node in await store.list("nodes"):
        spec = node["Spec"]
        if "id" in filters and not any(node["ID"].startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(node["Description"].get("Hostname", "").startswith(v)
                                         for v in filters["name"]):
            continue
        if "role" in filters and spec.get("Role") not in filters["role"]:
            continue
        if "membership" in filters and "accepted" not in filters["membership"]:
            continue
        if "label" in filters and not labels_match(node["Description"].get("Engine", {}).get("Labels") or {},
                                                   filters["label"]):
            continue
        if "node.label" in filters and not labels_match(spec.get("Labels") or {}, filters["node.label"]):
            continue
        out.append(node)
    return out


def with_leader(found: list[Obj], leader: str) -> list[Obj]:
    """ManagerStatus.Leader as the leader key says (only the manager holding it is the leader)."""
    for node in found:
        if "ManagerStatus" in node:
            node["ManagerStatus"]["Leader"] = node["ID"] == leader
    return found


async def update(store: Store, ref: str, version: int, spec: Obj, self_id: str) -> None:
    node = await get(store, ref, self_id)
    if node["Version"]["Index"] != version:
        raise errors.Internal("rpc error: code = Unknown desc = update out of sequence")
    role = spec.get("Role") or node["Spec"].get("Role")
    availability = spec.get("Availability") or node["Spec"].get("Availability")
    if role not in ROLES:
        raise errors.InvalidArgument(f"invalid Role: {role!r}")
    if availability not in AVAILABILITIES:
        raise errors.InvalidArgument(f"invalid Availability: {availability!r}")
    if role == "worker" and node["Spec"].get("Role") == "manager":
        managers = [n for n in await store.list("nodes") if n["Spec"].get("Role") == "manager"]
        if len(managers) <= 1:
            raise errors.FailedPrecondition(
                "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm")
        reachable = [m for m in managers if (m.get("ManagerStatus") or {}).get("Reachability") == "reachable"]
        if len(reachable) - 1 < (len(managers) - 1) // 2 + 1:  # the managers left must still have a quorum
            raise errors.FailedPrecondition(
                "rpc error: code = FailedPrecondition desc = raft: member cannot be removed, because removing it "
                "may result in loss of quorum")
        node.pop("ManagerStatus", None)  # the node removes its etcd member itself (roles.py)
    if role == "manager" and node["Spec"].get("Role") == "worker":
        node["ManagerStatus"] = {"Leader": False, "Reachability": "unknown",
                                 "Addr": f"{node['Status'].get('Addr', '')}:2377"}  # it adds its member (roles.py)
    node["Spec"] = {**node["Spec"], "Role": role, "Availability": availability, "Labels": spec.get("Labels") or {}}
    if "Name" in spec:
        node["Spec"]["Name"] = spec["Name"]
    node["UpdatedAt"] = objects.now()
    await store.update("nodes", node, version)


async def remove(store: Store, ref: str, force: bool, self_id: str) -> None:
    node = await get(store, ref, self_id)
    if node["Spec"].get("Role") == "manager" and not (force and node["Status"].get("State") == "down"):
        raise errors.FailedPrecondition(
            f"rpc error: code = FailedPrecondition desc = node {node['ID']} is a cluster manager and is a member of "
            "the raft cluster. It must be demoted to worker before removal")
    if node["Status"].get("State") != "down" and not force:
        raise errors.FailedPrecondition(
            f"rpc error: code = FailedPrecondition desc = node {node['ID']} is not down and can't be removed")
    if node["Spec"].get("Role") == "manager":
        await store.remove_member(node["ID"])  # a manager gone for good: its member must not count for quorum
    await store.delete("nodes", node["ID"])
