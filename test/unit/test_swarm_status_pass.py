"""The leader's node-status pass (pkg.docker.swarm.membership): which alive keys bring a node back to ready."""
from __future__ import annotations

import asyncio
from typing import Any

from pkg.docker.swarm import membership, objects


class _Store:
    """The three calls the pass makes, on dicts (the etcd store's own behaviour is tested with etcd)."""

    def __init__(self, nodes: list[dict[str, Any]], alive: set[str]) -> None:
        self.nodes = {n["ID"]: n for n in nodes}
        self.alive = alive
        self.writes: list[str] = []

    async def alive_nodes(self) -> set[str]:
        return set(self.alive)

    async def list(self, kind: str) -> list[dict[str, Any]]:
        assert kind == "nodes"
        return [{**n, "Status": dict(n["Status"])} for n in self.nodes.values()]

    async def update(self, kind: str, obj: dict[str, Any]) -> None:
        self.nodes[obj["ID"]] = obj
        self.writes.append(obj["ID"])


def _node(node_id: str, state: str, message: str = "") -> dict[str, Any]:
    return {"ID": node_id, "CreatedAt": objects.now(), "UpdatedAt": objects.now(),
            "Status": {"State": state, "Message": message}}


def test_a_node_that_left_stays_down_while_its_alive_key_lingers() -> None:
    store = _Store([_node("left", "down", membership.LEFT)], alive={"left"})
    assert asyncio.run(membership.node_status_pass(store)) is False  # type: ignore[arg-type]
    assert store.nodes["left"]["Status"] == {"State": "down", "Message": membership.LEFT}


def test_a_node_down_by_heartbeat_failure_comes_back_with_its_key() -> None:
    store = _Store([_node("back", "down", "heartbeat failure")], alive={"back"})
    assert asyncio.run(membership.node_status_pass(store)) is True  # type: ignore[arg-type]
    assert store.nodes["back"]["Status"]["State"] == "ready" and store.writes == ["back"]
