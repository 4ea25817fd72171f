"""The cluster's objects in etcd: versioned JSON records, unique names, watches.

Layout under ``<prefix>`` (``/narwhal/swarm`` by default):

    cluster                  the one Cluster object (its spec, tokens, CA digest)
    objects/<kind>/<id>      nodes, services, tasks, secrets, configs (moby's swarm JSON, without Version)
    names/<kind>/<name>      -> id: one name per kind (services, secrets, configs), kept in the same txn
    leader                   the manager running the reconcilers, on an etcd lease

``Version.Index`` of an object is its key's etcd mod revision: an update carries the version it was
read at and the txn compares it, so a stale write fails as swarmkit's does ("update out of
sequence").  Every write is one etcd transaction, so a name and its object never disagree.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import aetcd
import aetcd.exceptions

from pkg import errors

log = logging.getLogger(__name__)

Obj = dict[str, Any]

KINDS = ("nodes", "services", "tasks", "secrets", "configs")
DEFAULT_PREFIX = "/narwhal/swarm"
OUT_OF_SEQUENCE = "update out of sequence"


P = ParamSpec("P")
R = TypeVar("R")


def etcd_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """etcd client failures -> 503 (the control plane is unreachable), at the client edge."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except aetcd.exceptions.ClientError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # grpc turns our own cancellation into a CANCELLED RPC error: keep it a cancellation
                raise asyncio.CancelledError from None
            raise errors.Unavailable(f"the swarm's etcd is unavailable: {exc}") from None

    return wrapper


class Store:
    """Typed-enough access to the swarm keys of one etcd cluster."""

    def __init__(self, endpoints: list[tuple[str, int]], prefix: str = DEFAULT_PREFIX) -> None:
        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/")
        self.client: aetcd.Client | None = None

    # ---- connection ----
    async def connect(self, timeout: float = 30.0) -> None:
        """Connect to the first endpoint that answers, waiting up to ``timeout`` for a starting member."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while True:
            for host, port in self.endpoints:
                client = aetcd.Client(host=host, port=port, timeout=5)
                try:
                    await client.connect()
                    await client.get(self._key("cluster"))
                except (TimeoutError, aetcd.exceptions.ClientError, OSError) as exc:
                    last = f"{host}:{port}: {exc}"
                    await client.close()
                    continue
                self.client = client
                return
            if loop.time() > deadline:
                raise errors.Unavailable(f"etcd is not reachable ({last})")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    @property
    def c(self) -> aetcd.Client:
        if self.client is None:
            raise errors.Unavailable("not connected to etcd")
        return self.client

    def _key(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    def obj_key(self, kind: str, obj_id: str) -> bytes:
        return self._key("objects", kind, obj_id)

    def name_key(self, kind: str, name: str) -> bytes:
        return self._key("names", kind, name)

    @property
    def objects_prefix(self) -> bytes:
        return self._key("objects") + b"/"

    # ---- reads ----
    @staticmethod
    def _decode(value: bytes, mod_revision: int) -> Obj:
        obj: Obj = json.loads(value)
        obj["Version"] = {"Index": mod_revision}
        return obj

    @etcd_errors
    async def get_cluster(self) -> Obj | None:
        kv = await self.c.get(self._key("cluster"))
        return None if kv is None else self._decode(kv.value, kv.mod_revision)

    @etcd_errors
    async def get(self, kind: str, obj_id: str) -> Obj | None:
        kv = await self.c.get(self.obj_key(kind, obj_id))
        return None if kv is None else self._decode(kv.value, kv.mod_revision)

    @etcd_errors
    async def list(self, kind: str) -> list[Obj]:
        result = await self.c.get_prefix(self.obj_key(kind, ""))
        return [self._decode(kv.value, kv.mod_revision) for kv in result]

    @etcd_errors
    async def id_by_name(self, kind: str, name: str) -> str | None:
        kv = await self.c.get(self.name_key(kind, name))
        return None if kv is None else kv.value.decode()

    # ---- writes ----
    @staticmethod
    def _encode(obj: Obj) -> bytes:
        return json.dumps({k: v for k, v in obj.items() if k != "Version"}, sort_keys=True).encode()

    @etcd_errors
    async def put_cluster(self, obj: Obj, version: int | None) -> None:
        """Write the cluster object; ``version`` None creates it (refused if one exists)."""
        tx = self.c.transactions
        key = self._key("cluster")
        compare = [tx.create(key) == 0] if version is None else [tx.mod(key) == version]
        ok, _ = await self.c.transaction(compare=compare, success=[tx.put(key, self._encode(obj))], failure=[])
        if not ok:
            raise errors.Internal(OUT_OF_SEQUENCE)

    @etcd_errors
    async def create(self, kind: str, obj: Obj, name: str | None = None) -> Obj:
        """Create ``obj`` (its ``ID`` is the key); with ``name``, also claim the name (409 when taken)."""
        tx = self.c.transactions
        key = self.obj_key(kind, obj["ID"])
        compare = [tx.create(key) == 0]
        success = [tx.put(key, self._encode(obj))]
        if name is not None:
            compare.append(tx.create(self.name_key(kind, name)) == 0)
            success.append(tx.put(self.name_key(kind, name), obj["ID"].encode()))
        ok, responses = await self.c.transaction(compare=compare, success=success, failure=[])
        if not ok:
            raise errors.AlreadyExists("rpc error: code = AlreadyExists desc = name conflicts with an existing object")
        return self._decode(self._encode(obj), int(responses[0].response_put.header.revision))

    @etcd_errors
    async def update(self, kind: str, obj: Obj, version: int | None = None,
                     rename: tuple[str, str] | None = None) -> Obj:
        """Replace ``obj``; ``version`` (default: the one it carries) must be its current mod revision."""
        if version is None:
            version = int(obj.get("Version", {}).get("Index", 0))
        tx = self.c.transactions
        key = self.obj_key(kind, obj["ID"])
        compare = [tx.mod(key) == version]
        success = [tx.put(key, self._encode(obj))]
        if rename is not None and rename[0] != rename[1]:
            old, new = rename
            compare.append(tx.create(self.name_key(kind, new)) == 0)
            success += [tx.delete(self.name_key(kind, old)), tx.put(self.name_key(kind, new), obj["ID"].encode())]
        ok, responses = await self.c.transaction(compare=compare, success=success, failure=[])
        if not ok:
            current = await self.get(kind, obj["ID"])
            if current is None:
                raise errors.NotFound(f"{kind[:-1]} {obj['ID']} not found")
            if current["Version"]["Index"] != version:
                raise errors.Internal(f"rpc error: code = Unknown desc = {OUT_OF_SEQUENCE}")
            raise errors.AlreadyExists("rpc error: code = AlreadyExists desc = name conflicts with an existing object")
        return self._decode(self._encode(obj), int(responses[0].response_put.header.revision))

    @etcd_errors
    async def delete(self, kind: str, obj_id: str, name: str | None = None, version: int | None = None) -> bool:
        """Delete an object (and its name); with ``version``, only if unchanged since. False if it was gone."""
        tx = self.c.transactions
        key = self.obj_key(kind, obj_id)
        compare = [tx.create(key) != 0] if version is None else [tx.mod(key) == version]
        success = [tx.delete(key)]
        if name is not None:
            success.append(tx.delete(self.name_key(kind, name)))
        ok, _ = await self.c.transaction(compare=compare, success=success, failure=[])
        return bool(ok)

    @etcd_errors
    async def delete_all(self) -> None:
        """Every key of this swarm (the last manager leaving, or an external cluster's prefix)."""
        await self.c.delete_prefix(self._key(""))

    # ---- watches ----
    async def changes(self) -> AsyncIterator[str]:
        """Yield the kind of each object that changes (for reconcilers to wake on)."""
        watch = await self.c.watch_prefix(self._key(""))
        try:
            async for event in watch:
                rest = event.kv.key.decode()[len(self.prefix) + 1:]
                parts = rest.split("/")
                yield parts[1] if parts[0] == "objects" and len(parts) > 1 else parts[0]
        finally:
            await watch.cancel()

    # ---- leases (leader election, node liveness) ----
    @etcd_errors
    async def campaign(self, node_id: str, ttl: int) -> aetcd.Lease | None:
        """Take the leader key on a fresh lease if nobody holds it; the lease, or None when another leads."""
        lease = await self.c.lease(ttl)
        tx = self.c.transactions
        key = self._key("leader")
        ok, _ = await self.c.transaction(compare=[tx.create(key) == 0],
                                         success=[tx.put(key, node_id.encode(), lease=lease)], failure=[])
        if ok:
            return lease
        await lease.revoke()
        return None

    @etcd_errors
    async def leader(self) -> str:
        kv = await self.c.get(self._key("leader"))
        return "" if kv is None else kv.value.decode()
