"""Who is in the swarm and alive: node heartbeats, the leader's node-status pass, manager reachability.

swarmkit's dispatcher expects a heartbeat from every node each ``Dispatcher.HeartbeatPeriod`` and
marks a silent node down.  Here each node holds a key ``alive/<node id>`` on an etcd lease whose TTL
is that period (5 s by default), refreshed every third of it; a node that dies (kill -9, its cable
cut) stops refreshing and etcd drops the key when the lease runs out.  The leader looks every second
and writes the differences: a node without its key goes ``down`` ("heartbeat failure"), its managers'
``Reachability`` ``unreachable``; a node whose key is back goes ``ready`` again.  The orchestrator then
replaces the tasks of down nodes on the others (orchestrator.py).  Worst case from the death of a node
to its state ``down``: the TTL plus one pass (≈ 6 s by default).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pkg import errors
from pkg.docker.swarm import objects
from pkg.docker.swarm.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DEFAULT_PERIOD = 5.0
LEFT = "node left the swarm"  # the status of a node that left: its ID never comes back (a rejoin gets a new one)
PASS = 1.0


def heartbeat_period(cluster: Obj | None) -> float:
    """The cluster's heartbeat period in seconds (at least 2: etcd's smallest useful lease)."""
    ns = int(((cluster or {}).get("Spec", {}).get("Dispatcher") or {}).get("HeartbeatPeriod") or 0)
    return max(2.0, ns / 1e9) if ns else DEFAULT_PERIOD


async def heartbeat(store: Store, node_id: str) -> None:
    """Keep this node's ``alive`` key on a lease; a failed refresh takes a new lease (etcd may have expired
    the old one while we could not reach it)."""
    while True:
        ttl = heartbeat_period(await store.get_cluster())
        lease = await store.alive(node_id, int(round(ttl)))
        started = time.monotonic()
        try:
            while True:
                await asyncio.sleep(ttl / 3)
                reply = await store.refresh(lease)
                if reply is None or time.monotonic() - started > 60:
                    break  # expired meanwhile (or a minute passed: re-read the period)
        except errors.Unavailable as exc:
            log.warning("swarm: heartbeat of %s failed: %s", node_id, exc.message)
            await asyncio.sleep(1.0)


async def node_status_pass(store: Store) -> bool:
    """One pass of the leader: node State and manager Reachability from the alive keys; True if it wrote."""
    alive = await store.alive_nodes()
    wrote = False
    for node in await store.list("nodes"):
        is_alive = node["ID"] in alive
        status = node["Status"]
        changed = False
        if is_alive and status.get("State") != "ready" and status.get("Message") != LEFT:  # a left node never returns
            status.update({"State": "ready", "Message": ""})
            changed = True
        elif not is_alive and (status.get("State") == "ready" and _older_than(node, 3.0)
                               or status.get("State") == "unknown" and _older_than(node, 30.0)):  # a join cut short
            status.update({"State": "down", "Message": "heartbeat failure"})
            changed = True
        manager = node.get("ManagerStatus")
        if manager is not None:
            reach = "reachable" if is_alive else "unreachable"
            if manager.get("Reachability") != reach:
                manager["Reachability"] = reach
                changed = True
        if changed:
            node["UpdatedAt"] = objects.now()
            try:
                await store.update("nodes", node)
                wrote = True
                log.info("swarm: node %s is %s", node["ID"], status["State"])
            except (errors.Internal, errors.NotFound):
                pass  # changed under us: the next pass sees it
    return wrote


def _older_than(node: Obj, seconds: float) -> bool:
    """A node just admitted has not sent its first heartbeat yet."""
    return time.time() - objects.parse_time(node.get("UpdatedAt") or node["CreatedAt"]) > seconds
