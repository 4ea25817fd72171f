"""Which nodes a task may run on: placement constraints and resource reservations (swarmkit's
scheduler filters), with swarmkit's "no suitable node (...)" explanations."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pkg import errors

Obj = dict[str, Any]

_EXPR = re.compile(r"^\s*([\w.\-]+)\s*(==|!=)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool
    value: str


def parse(expressions: list[str]) -> list[Constraint]:
    out = []
    for expr in expressions:
        match = _EXPR.match(expr)
        if match is None:
            raise errors.InvalidArgument(
                f"rpc error: code = InvalidArgument desc = invalid constraint {expr!r}: constraint expected one "
                "operator from ==, !=")
        key, op, value = match.groups()
        if not (key in ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
                or key.startswith(("node.labels.", "engine.labels.", "node.ip"))):
            raise errors.InvalidArgument(f"rpc error: code = InvalidArgument desc = constraint key {key!r} is not "
                                         "supported")
        out.append(Constraint(key, op == "==", value))
    return out


def _node_value(node: Obj, key: str) -> str | None:
    desc = node.get("Description") or {}
    if key == "node.id":
        return str(node["ID"])
    if key == "node.hostname":
        return str(desc.get("Hostname", ""))
    if key == "node.role":
        return str(node["Spec"].get("Role", ""))
    if key == "node.platform.os":
        return str((desc.get("Platform") or {}).get("OS", ""))
    if key == "node.platform.arch":
        return str((desc.get("Platform") or {}).get("Architecture", ""))
    if key == "node.ip":
        return str(node["Status"].get("Addr", ""))
    if key.startswith("node.labels."):
        return (node["Spec"].get("Labels") or {}).get(key.removeprefix("node.labels."))
    labels = ((desc.get("Engine") or {}).get("Labels") or {})
    return labels.get(key.removeprefix("engine.labels."))


def satisfies(node: Obj, constraints: list[Constraint]) -> bool:
    for c in constraints:
        actual = _node_value(node, c.key)
        if c.key.startswith(("node.labels.", "engine.labels.")):
            same = actual is not None and actual == c.value
        else:
            same = actual is not None and actual.lower() == c.value.lower()
        if same != c.equal:
            return False
    return True


def reservations(task: Obj) -> tuple[int, int]:
    res = ((task["Spec"].get("Resources") or {}).get("Reservations") or {})
    return int(res.get("NanoCPUs", 0) or 0), int(res.get("MemoryBytes", 0) or 0)


def fits(node: Obj, task: Obj, used: tuple[int, int]) -> bool:
    cpus, memory = reservations(task)
    if not cpus and not memory:
        return True
    have = (node.get("Description") or {}).get("Resources") or {}
    return (used[0] + cpus <= int(have.get("NanoCPUs", 0)) and used[1] + memory <= int(have.get("MemoryBytes", 0)))


def constraints_of(task_spec: Obj) -> list[Constraint]:
    return parse(list((task_spec.get("Placement") or {}).get("Constraints") or []))


def no_node_reason(nodes: list[Obj], task: Obj) -> str:
    """swarmkit's explanation for a task no node takes."""
    if not nodes:
        return "no suitable node"
    constraints = constraints_of(task["Spec"])
    unmatched = sum(1 for n in nodes if not satisfies(n, constraints))
    if unmatched:
        plural = "s" if unmatched > 1 else ""
        return f"no suitable node (scheduling constraints not satisfied on {unmatched} node{plural})"
    n = len(nodes)
    return f"no suitable node (insufficient resources on {n} node{'s' if n > 1 else ''})"
