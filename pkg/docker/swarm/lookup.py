"""Finding an object by ID, name or ID prefix, as moby's daemon/cluster/helpers.go does."""
from __future__ import annotations

from typing import Any

from pkg import errors
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]


def name_of(kind: str, obj: Obj) -> str:
    if kind == "nodes":
        return str(obj.get("Description", {}).get("Hostname", ""))
    if kind == "tasks":
        return ""
    return str(obj.get("Spec", {}).get("Name", ""))


async def find(store: Store, kind: str, ref: str) -> Obj:
    """Exact ID, then exact name, then a unique ID prefix; 404 "<kind> <ref> not found"."""
    what = kind[:-1]
    if not ref:
        raise errors.NotFound(f"{what} {ref} not found")
    obj = await store.get(kind, ref)
    if obj is not None:
        return obj
    everything = await store.list(kind)
    named = [o for o in everything if name_of(kind, o) == ref]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise errors.InvalidArgument(f"{what} {ref} is ambiguous ({len(named)} matches found)")
    prefixed = [o for o in everything if o["ID"].startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise errors.InvalidArgument(f"{what} {ref} is ambiguous ({len(prefixed)} matches found)")
    raise errors.NotFound(f"{what} {ref} not found")


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """``label`` filters: "key" (present) or "key=value"; all must hold."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True
