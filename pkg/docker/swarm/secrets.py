"""Secrets and configs (one code path, ``kind`` = "secrets" or "configs"), as swarmkit's controlapi.

Both are immutable but for their labels; a secret's data is never returned, a config's is; a
referenced one cannot be removed.  A config's data lives base64-encoded in its record in etcd; a
secret's is sealed with the swarm's data-encryption key, itself wrapped by the unlock key with
autolock (keys.py).
"""
from __future__ import annotations

import base64
import binascii
import copy
import re
from typing import Any

from pkg import errors
from pkg.docker.swarm import keys, objects
from pkg.docker.swarm.lookup import find, labels_match
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]

_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")
MAX_SIZE = {"secrets": 500 * 1024, "configs": 1000 * 1024}
_REF_KEY = {"secrets": ("Secrets", "SecretID"), "configs": ("Configs", "ConfigID")}


def _invalid(desc: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"rpc error: code = InvalidArgument desc = {desc}")


def _validate(kind: str, spec: Obj) -> bytes:
    name = spec.get("Name") or ""
    if not name or len(name) > 64 or not _NAME.match(name):
        raise _invalid("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character "
                       "must be [a-zA-Z0-9]")
    try:
        data = base64.b64decode(spec.get("Data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidArgument(f"{kind[:-1]} data must be base64-encoded") from None
    driver = (spec.get("Driver") or {}).get("Name")
    if kind == "secrets" and driver:
        raise _invalid(f"secret driver {driver!r} is not supported")
    if not driver and not 0 < len(data) <= MAX_SIZE[kind]:
        raise _invalid(f"{kind[:-1]} data must be larger than 0 and less than {MAX_SIZE[kind] // 1024}KB")
    return data


async def create(store: Store, kind: str, spec: Obj, dek: bytes | None = None) -> Obj:
    """A secret's data is stored sealed with the swarm's DEK (keys.py); a config's as given."""
    _validate(kind, spec)
    spec = copy.deepcopy(spec)
    if kind == "secrets" and spec.get("Data"):
        if dek is None:
            raise errors.Unavailable("the swarm's data-encryption key is not available on this node")
        spec["Data"] = keys.seal_data(dek, spec["Data"])
    spec.setdefault("Labels", {})
    stamp = objects.now()
    obj = {"ID": objects.new_id(), "CreatedAt": stamp, "UpdatedAt": stamp, "Spec": spec}
    try:
        return await store.create(kind, obj, name=spec["Name"])
    except errors.AlreadyExists:
        raise errors.AlreadyExists(
            f"rpc error: code = AlreadyExists desc = {kind[:-1]} {spec['Name']} already exists") from None


def view(kind: str, obj: Obj) -> Obj:
    """What inspect and list show: a secret without its data."""
    out = copy.deepcopy(obj)
    if kind == "secrets":
        out["Spec"].pop("Data", None)
    return out


async def inspect(store: Store, kind: str, ref: str) -> Obj:
    return view(kind, await find(store, kind, ref))


async def list_objects(store: Store, kind: str, filters: dict[str, list[str]]) -> list[Obj]:
    out = []
    for obj in await store.list(kind):
        spec = obj["Spec"]
        if "id" in filters and not any(obj["ID"].startswith(v) for v in filters["id"]):
            continue
        if "names" in filters and spec["Name"] not in filters["names"]:
            continue
        if "name" in filters and not any(spec["Name"].startswith(v) for v in filters["name"]):
            continue
        if "label" in filters and not labels_match(spec.get("Labels") or {}, filters["label"]):
            continue
        out.append(view(kind, obj))
    out.sort(key=lambda o: o["Spec"]["Name"])
    return out


async def update(store: Store, kind: str, ref: str, version: int, spec: Obj) -> Obj:
    obj = await find(store, kind, ref)
    if obj["Version"]["Index"] != version:
        raise errors.Internal("rpc error: code = Unknown desc = update out of sequence")
    current = obj["Spec"]
    given = copy.deepcopy(spec)
    if "Data" not in given and kind == "secrets":
        given["Data"] = current.get("Data")
    for key in set(current) | set(given):
        if key == "Labels":
            continue
        if (given.get(key) or None) != (current.get(key) or None):
            raise _invalid("only updates to Labels are allowed")
    obj["Spec"]["Labels"] = given.get("Labels") or {}
    obj["UpdatedAt"] = objects.now()
    return await store.update(kind, obj, version)


async def remove(store: Store, kind: str, ref: str) -> Obj:
    obj = await find(store, kind, ref)
    key, id_key = _REF_KEY[kind]
    users = sorted(s["Spec"]["Name"] for s in await store.list("services")
                   if any(r.get(id_key) == obj["ID"] for r in
                          ((s["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}).get(key) or []))
    if users:
        noun = "service" if len(users) == 1 else "services"
        raise _invalid(f"{kind[:-1]} '{obj['Spec']['Name']}' is in use by the following {noun}: {', '.join(users)}")
    await store.delete(kind, obj["ID"], name=obj["Spec"]["Name"])
    return obj
