"""The swarm object as the API reads and changes it, and this node's swarm state as /info and /_ping show it.

Separate from pkg.docker.swarm.cluster (which runs this node's part: its store, loops, init, leave, unlock)
because this is moby's wire view of the cluster record: inspect without the private keys, spec updates with
join-token and unlock-key rotation, /info's Swarm section, /_ping's Swarm header.  Each call takes the node's
``Cluster``; a call only a manager serves goes through ``Cluster.manager_store`` (503 otherwise).
"""
from __future__ import annotations

from typing import Any

from pkg import errors
from pkg.docker.swarm import keys, objects
from pkg.docker.swarm.cluster import NOT_MANAGER, SWARM_LOCKED, Cluster

Obj = dict[str, Any]


def public_cluster(cluster: Obj) -> Obj:
    """The cluster record as the API shows it: without the sealed DEK and the other private keys."""
    return {k: v for k, v in cluster.items() if k not in objects.PRIVATE_CLUSTER_KEYS}


async def inspect(cl: Cluster) -> Obj:
    store = cl.manager_store()
    cluster = await store.get_cluster()
    if cluster is None:
        raise errors.Unavailable(NOT_MANAGER)
    return public_cluster(cluster)


async def update(cl: Cluster, version: int, spec: Obj, *, rotate_worker: bool, rotate_manager: bool,
                 rotate_unlock: bool) -> None:
    """``docker swarm update``: a new spec at ``version``, join tokens and the unlock key rotated on demand."""
    store = cl.manager_store()
    cluster = await store.get_cluster()
    if cluster is None:
        raise errors.Unavailable(NOT_MANAGER)
    if cluster["Version"]["Index"] != version:
        raise errors.Internal("rpc error: code = Unknown desc = update out of sequence")
    cluster["Spec"] = objects.merge_spec(objects.default_cluster_spec(), spec)
    digest = cluster["CADigest"]
    if rotate_worker:
        cluster["JoinTokens"]["Worker"] = objects.join_token(digest)
    if rotate_manager:
        cluster["JoinTokens"]["Manager"] = objects.join_token(digest)
    autolock = bool(cluster["Spec"].get("EncryptionConfig", {}).get("AutoLockManagers"))
    unlock_key = ""
    if autolock:
        unlock_key = keys.new_unlock_key() if rotate_unlock or not cl._unlock_key else cl._unlock_key
    if cl.dek is None:
        raise errors.Unavailable(SWARM_LOCKED)
    cluster["DEK"] = keys.dek_record(cl.dek, unlock_key)
    cluster["UpdatedAt"] = objects.now()
    await store.put_cluster(cluster, version)
    cl._unlock_key = unlock_key  # the new key counts once the wrapped DEK is stored


async def unlock_key(cl: Cluster) -> str:
    """The current unlock key ("" without autolock): known only to an unlocked manager."""
    cl.manager_store()
    return cl._unlock_key


async def info(cl: Cluster) -> Obj:
    """/info's Swarm section."""
    node = cl.node
    if node is None:
        return {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                "Error": "", "RemoteManagers": None}
    if cl.locked:
        return {"NodeID": "", "NodeAddr": node.advertise_addr.rpartition(":")[0], "LocalNodeState": "locked",
                "ControlAvailable": False, "Error": SWARM_LOCKED, "RemoteManagers": None}
    section: Obj = {"NodeID": node.node_id, "NodeAddr": node.advertise_addr.rpartition(":")[0],
                    "LocalNodeState": "active", "ControlAvailable": node.role == "manager", "Error": ""}
    if cl.store is None:
        return {**section, "LocalNodeState": "error", "ControlAvailable": False, "Error": cl.error,
                "RemoteManagers": None}
    try:
        nodes = await cl.store.list("nodes")
        managers = [n for n in nodes if n["Spec"].get("Role") == "manager"]
        section["RemoteManagers"] = [{"NodeID": n["ID"], "Addr": n.get("ManagerStatus", {}).get("Addr", "")}
                                     for n in managers]
        section["Nodes"], section["Managers"] = len(nodes), len(managers)
        if node.role == "manager":
            cluster = await cl.store.get_cluster()
            if cluster is not None:
                section["Cluster"] = {k: v for k, v in public_cluster(cluster).items() if k != "JoinTokens"}
    except errors.NarwhalError as exc:
        section["Error"] = str(exc)
    return section


def ping_state(cl: Cluster) -> str:
    """The Swarm header of /_ping: inactive, locked, active/manager or active/worker."""
    if cl.node is None:
        return "inactive"
    if cl.locked:
        return "locked"
    return f"active/{cl.node.role}"
