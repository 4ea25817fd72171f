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
import builtins
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import aetcd
import aetcd.exceptions
import grpc

from pkg import errors
from pkg.docker.swarm.tls import TLSClient, TLSFiles

log = logging.getLogger(__name__)

Obj = dict[str, Any]

KINDS = ("nodes", "services", "tasks", "secrets", "configs")
DEFAULT_PREFIX = "/narwhal/swarm"
OUT_OF_SEQUENCE = "update out of sequence"
NO_LEADER = ("rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few "
             "managers are online. Make sure more than half of the managers are online.")


P = ParamSpec("P")
R = TypeVar("R")


def etcd_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """etcd client failures -> 503 (the control plane is unreachable), at the client edge."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # grpc turns our own cancellation into a CANCELLED RPC error: keep it a cancellation
                raise asyncio.CancelledError from None
            store = args[0] if args and isinstance(args[0], Store) else None
            if store is not None and store.clustered:
                # A member without quorum times out; a worker's manager may be gone: try the next one.
                store.failover()
                raise errors.Unavailable(NO_LEADER) from None
            raise errors.Unavailable(f"the swarm's etcd is unavailable: {exc}") from None

    return wrapper


class Store:
    """Typed-enough access to the swarm keys of one etcd cluster."""

    def __init__(self, endpoints: list[tuple[str, int]], prefix: str = DEFAULT_PREFIX,
                 tls: TLSFiles | None = None) -> None:
        self.endpoints = endpoints
        self.tls = tls  # https with this node's certificate (tls.py); None: plain HTTP
        self.prefix = prefix.rstrip("/")
        self.client: aetcd.Client | None = None
        self.clustered = False  # more than one manager: failures read as "no leader", as swarmkit's
        self._current = 0
        self._failover: asyncio.Task[None] | None = None

    # ---- connection ----
    async def connect(self, timeout: float = 30.0) -> None:
        """Connect to the first endpoint that answers, waiting up to ``timeout`` for a starting member."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while True:
            order = self.endpoints[self._current:] + self.endpoints[:self._current]
            for host, port in order:
                client = (aetcd.Client(host=host, port=port, timeout=5) if self.tls is None
                          else TLSClient(host, port, self.tls, timeout=5))
                try:
                    await client.connect()
                    await client.get(self._key("cluster"))
                except (TimeoutError, aetcd.exceptions.ClientError, grpc.aio.AioRpcError, OSError) as exc:
                    last = f"{host}:{port}: {exc}"
                    await client.close()
                    continue
                self.client = client
                self._current = self.endpoints.index((host, port))
                return
            if loop.time() > deadline:
                raise errors.Unavailable(f"etcd is not reachable ({last})")
            await asyncio.sleep(0.2)

    def failover(self) -> None:
        """After a failed call: a worker (several endpoints) reconnects to the next manager that answers, in
        the background; calls meanwhile keep failing with 503 and the reconcilers retry."""
        if len(self.endpoints) < 2 or (self._failover is not None and not self._failover.done()):
            return
        self._failover = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        old = self.client
        try:
            assert old is not None
            await asyncio.wait_for(old.get(self._key("cluster")), 3)
            return  # the current endpoint answers again: it was the quorum, not the connection
        except Exception:  # noqa: BLE001 - any failure means: try the others
            pass
        self._current = (self._current + 1) % len(self.endpoints)
        try:
            await self.connect(timeout=3.0)
        except errors.Unavailable:
            return
        if old is not None and old is not self.client:
            log.warning("swarm: etcd endpoint failed over to %s:%d", *self.endpoints[self._current])
            await old.close()

    async def close(self) -> None:
        if self._failover is not None:
            self._failover.cancel()
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

    # ---- heartbeats (membership.py) ----
    @etcd_errors
    async def alive(self, node_id: str, ttl: int) -> aetcd.Lease:
        """``alive/<node id>`` on a fresh lease of ``ttl`` seconds."""
        lease = await self.c.lease(ttl)
        await self.c.put(self._key("alive", node_id), b"1", lease=lease)
        return lease

    @etcd_errors
    async def refresh(self, lease: aetcd.Lease) -> int | None:
        """Keep a lease alive; None once etcd has expired it."""
        reply = await lease.refresh()
        ttl = int(getattr(reply, "TTL", 0) or 0)
        return ttl if ttl > 0 else None

    @etcd_errors
    async def not_alive(self, node_id: str) -> None:
        """A node leaving says so at once rather than when its lease runs out."""
        await self.c.delete(self._key("alive", node_id))

    @etcd_errors
    async def alive_nodes(self) -> set[str]:
        prefix = self._key("alive") + b"/"
        return {bytes(kv.key)[len(prefix):].decode() for kv in await self.c.get_prefix(prefix)}

    # ---- raw keys (the CA) and etcd membership ----
    @etcd_errors
    async def get_raw(self, name: str) -> bytes | None:
        kv = await self.c.get(self._key(name))
        return None if kv is None else bytes(kv.value)

    @etcd_errors
    async def put_raw(self, name: str, value: bytes) -> None:
        await self.c.put(self._key(name), value)

    @etcd_errors
    async def members(self) -> builtins.list[Obj]:
        return [{"id": m.id, "name": m.name, "peer_urls": list(m.peer_urls), "client_urls": list(m.client_urls)}
                async for m in self.c.members()]

    @etcd_errors
    async def add_member(self, peer_url: str) -> None:
        await self.c.add_member([peer_url])

    @etcd_errors
    async def remove_member(self, name: str) -> bool:
        """Remove the member named ``name`` (a node ID); False when it is not a member."""
        for member in await self.members():
            if member["name"] == name:
                await self.c.remove_member(member["id"])
                return True
        return False

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
