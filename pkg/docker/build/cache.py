"""The build cache: step keys to result images, kept across restarts.

A key is a digest of what decides a step's result: the parent image, the instruction as it runs (expanded),
the build args in scope and, for COPY/ADD, checksums of the files read (never their times).  The result image
of each key is held by a containerd lease of its own (no expiry), so unnamed results survive GC and restarts;
``prune`` deletes leases and lets containerd collect what no image still uses.  The index is one JSON file,
rewritten atomically.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from pkg.containerd.api.services.leases.v1 import leases_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import from_grpc, translate
from pkg.images.model import Descriptor

log = logging.getLogger(__name__)

LEASE_PREFIX = "narwhal-buildcache-"
INDEX = "cache.json"


def step_key(*parts: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class Entry:
    image_id: str
    manifest: dict[str, Any]  # media_type, digest, size
    parent: str
    created_ns: int
    used_ns: int
    size: int  # bytes of the layer the step made (0: metadata only)
    description: str = ""
    shared: bool = False

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.manifest["media_type"], self.manifest["digest"], int(self.manifest["size"]))


class BuildCache:
    def __init__(self, client: Client, root: Path) -> None:
        self._client = client
        self._root = root
        self._keys: dict[str, str] = {}
        self._images: dict[str, Entry] = {}
        self._lock = asyncio.Lock()
        self._loaded = False

    async def _load(self) -> None:
        if self._loaded:
            return
        path = self._root / INDEX

        def read() -> dict[str, Any]:
            try:
                return json.loads(path.read_text())  # type: ignore[no-any-return]
            except FileNotFoundError:
                return {}
            except ValueError as exc:
                log.warning("build cache index %s is unreadable, starting empty: %s", path, exc)
                return {}
        data = await asyncio.to_thread(read)
        self._keys = dict(data.get("keys") or {})
        self._images = {k: Entry(**v) for k, v in (data.get("images") or {}).items()}
        self._loaded = True

    async def _save(self) -> None:
        data = {"keys": self._keys, "images": {k: asdict(v) for k, v in self._images.items()}}
        path = self._root / INDEX

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        await asyncio.to_thread(write)

    async def lookup(self, key: str) -> Entry | None:
        async with self._lock:
            await self._load()
            image_id = self._keys.get(key)
            entry = self._images.get(image_id) if image_id else None
            if entry is None:
                return None
            entry.used_ns = time.time_ns()
            return entry

    async def parent_of(self, image_id: str) -> str:
        async with self._lock:
            await self._load()
            entry = self._images.get(image_id)
            return entry.parent if entry is not None else ""

    async def record(self, key: str, image_id: str, manifest: Descriptor, parent: str, size: int,
                     description: str) -> None:
        async with self._lock:
            await self._load()
            if image_id not in self._images:
                await self._hold(image_id, manifest.digest)
                now = time.time_ns()
                self._images[image_id] = Entry(image_id, {"media_type": manifest.media_type, "digest": manifest.digest,
                                                          "size": manifest.size}, parent, now, now, size, description)
            self._keys[key] = image_id
            await self._save()

    async def _hold(self, image_id: str, manifest_digest: str) -> None:
        lease_id = LEASE_PREFIX + image_id.removeprefix("sha256:")
        try:
            await self._client.leases.Create(leases_pb2.CreateRequest(id=lease_id), timeout=30)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise from_grpc(err, "create build cache lease") from err
        with translate("hold build cache result"):
            await self._client.leases.AddResource(leases_pb2.AddResourceRequest(
                id=lease_id, resource=leases_pb2.Resource(id=manifest_digest, type="content")), timeout=30)

    async def save(self) -> None:
        async with self._lock:
            await self._save()

    async def entries(self) -> list[Entry]:
        async with self._lock:
            await self._load()
            return list(self._images.values())

    async def prune(self, *, keep: Any = None, keep_storage: int = 0) -> tuple[list[Entry], int]:
        """Remove entries (all, or those ``keep`` does not keep), oldest use first, down to ``keep_storage``
        bytes; returns the removed entries and the bytes they accounted for."""
        async with self._lock:
            await self._load()
            candidates = sorted(self._images.values(), key=lambda e: e.used_ns)
            total = sum(e.size for e in self._images.values())
            removed: list[Entry] = []
            for entry in candidates:
                if keep_storage and total <= keep_storage:
                    break
                if keep is not None and keep(entry):
                    continue
                lease_id = LEASE_PREFIX + entry.image_id.removeprefix("sha256:")
                try:
                    await self._client.leases.Delete(leases_pb2.DeleteRequest(id=lease_id, sync=True), timeout=120)
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise from_grpc(err, "delete build cache lease") from err
                del self._images[entry.image_id]
                total -= entry.size
                removed.append(entry)
            gone = {e.image_id for e in removed}
            self._keys = {k: v for k, v in self._keys.items() if v not in gone}
            await self._save()
            return removed, sum(e.size for e in removed)
