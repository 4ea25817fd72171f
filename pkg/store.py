"""In-memory indexed stores: the cache in front of containerd (the truth).

``Store`` holds objects by full ID with short-ID prefix lookup (truncindex)
and name reservation (registrar).  Status changes go through
``store.update(id, fn)`` under the object's status lock, so ``fn`` always sees
the status the previous update left (no lost update when an exit and a
reconcile write at once); if ``fn`` or the persist hook raises, the old status
stays (containerd's ``StatusStorage.Update``).  The status lock is not
``lock(id)``, the operation lock verbs hold across their containerd calls
while they update.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from pkg import errors

S = TypeVar("S")
M = TypeVar("M")


class NameRegistrar:
    """Names reserved by exactly one ID (CRI: AlreadyExists on a duplicate name)."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def reserve(self, name: str, id_: str) -> None:
        owner = self._names.get(name)
        if owner is not None and owner != id_:
            raise errors.AlreadyExists(f"name {name!r} is reserved for {owner}")
        self._names[name] = id_

    def release(self, name: str) -> None:
        self._names.pop(name, None)

    def owner(self, name: str) -> str | None:
        return self._names.get(name)


class Store(Generic[M, S]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[M, S, asyncio.Lock]] = {}
        self._status_locks: dict[str, asyncio.Lock] = {}
        self.names = NameRegistrar()

    def add(self, id_: str, metadata: M, status: S) -> None:
        if id_ in self._items:
            raise errors.AlreadyExists(f"{self.kind} {id_} already exists")
        self._items[id_] = (metadata, status, asyncio.Lock())

    def resolve(self, ref: str) -> str:
        """Full ID from a full or unique prefix ID (NotFound / InvalidArgument when ambiguous)."""
        if not ref:
            raise errors.InvalidArgument(f"{self.kind} ID must not be empty")
        if ref in self._items:
            return ref
        matches = [i for i in self._items if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise errors.NotFound(f"{self.kind} {ref!r} not found")
        raise errors.InvalidArgument(f"{self.kind} ID prefix {ref!r} is ambiguous")

    def get(self, ref: str) -> tuple[M, S]:
        metadata, status, _ = self._items[self.resolve(ref)]
        return metadata, status

    def find(self, ref: str) -> tuple[M, S] | None:
        try:
            return self.get(ref)
        except errors.NotFound:
            return None

    def lock(self, id_: str) -> asyncio.Lock:
        return self._items[self.resolve(id_)][2]

    async def update(self, id_: str, fn: Callable[[S], S], persist: Callable[[S], Awaitable[None]] | None = None) -> S:
        """Replace the status with ``fn(old)`` under the status lock; persist first; on any error keep the old
        one. NotFound when the object was deleted before the lock was ours."""
        full = self.resolve(id_)
        async with self._status_locks.setdefault(full, asyncio.Lock()):
            if full not in self._items:
                raise errors.NotFound(f"{self.kind} {id_!r} not found")
            metadata, old, lock = self._items[full]
            new = fn(old)
            if persist is not None:
                await persist(new)
            # Re-read: the entry may have been deleted while we awaited.
            if full in self._items:
                self._items[full] = (metadata, new, lock)
            return new

    def delete(self, id_: str) -> None:
        self._items.pop(id_, None)
        self._status_locks.pop(id_, None)

    def __iter__(self) -> Iterator[tuple[str, M, S]]:
        for id_, (metadata, status, _) in list(self._items.items()):
            yield id_, metadata, status

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> set[str]:
        return set(self._items)
