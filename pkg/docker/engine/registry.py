"""The engine's in-memory index of Docker containers: records by ID, unique names, per-container locks.

Lookups follow Docker: a full ID, then an exact name (with or without "/"),
then a unique ID prefix.  Every record change is persisted before it becomes
visible.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator

from pkg import errors
from pkg.docker.engine.model import EngineRecord, EngineState
from pkg.docker.engine.records import RecordStore
from pkg.model.state import ContainerState, DockerState, docker_extra


class Registry:
    def __init__(self, store: RecordStore, core_state: Callable[[str], ContainerState] | None = None) -> None:
        self.store = store
        # The core container's state, which with the record's extra makes the Docker state (None: CREATED,
        # for registries of tests that have no core).
        self._core_state = core_state or (lambda _id: ContainerState.CREATED)
        self._records: dict[str, EngineRecord] = {}
        self._names: dict[str, str] = {}  # name (no "/") -> id; reserved before the record exists
        self._locks: dict[str, asyncio.Lock] = {}
        # Record writes, one at a time per container (a restart timer and a remove may update at once):
        # separate from ``lock()``, which lifecycle verbs hold while they update.
        self._write_locks: dict[str, asyncio.Lock] = {}

    # ---- names ----
    def reserve_name(self, name: str, container_id: str) -> None:
        owner = self._names.get(name)
        if owner is not None and owner != container_id:
            raise errors.Conflict(
                f'Conflict. The container name "/{name}" is already in use by container "{owner}". '
                "You have to remove (or rename) that container to be able to reuse that name.")
        self._names[name] = container_id

    def release_name(self, name: str, container_id: str) -> None:
        if self._names.get(name) == container_id:
            del self._names[name]

    def name_taken(self, name: str) -> bool:
        return name in self._names

    # ---- records ----
    def add(self, record: EngineRecord) -> None:
        self._records[record.id] = record
        self._names[record.name] = record.id
        self._locks.setdefault(record.id, asyncio.Lock())

    def drop(self, container_id: str) -> None:
        record = self._records.pop(container_id, None)
        if record is not None:
            self.release_name(record.name, container_id)
        self._locks.pop(container_id, None)
        self._write_locks.pop(container_id, None)

    def resolve(self, ref: str) -> str:
        """The full ID of ``ref``; NotFound with Docker's message."""
        if ref in self._records:
            return ref
        name = ref.removeprefix("/")
        owner = self._names.get(name)
        if owner is not None and owner in self._records:
            return owner
        if ref:
            matches = [i for i in self._records if i.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise errors.InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise errors.NotFound(f"No such container: {ref}")

    def get(self, ref: str) -> EngineRecord:
        return self._records[self.resolve(ref)]

    def find(self, container_id: str) -> EngineRecord | None:
        return self._records.get(container_id)

    def lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def __iter__(self) -> Iterator[EngineRecord]:
        return iter(list(self._records.values()))

    async def update(self, container_id: str, fn: Callable[[EngineRecord], EngineRecord]) -> EngineRecord:
        """Persist ``fn(record)`` then make it current (on a persist error the old one stays); a record ``fn``
        leaves equal is neither written nor replaced.

        Serialised per container, so concurrent updates neither lose each other's changes nor race on
        the record file."""
        async with self._write_locks.setdefault(container_id, asyncio.Lock()):
            old = self._records.get(container_id)
            if old is None:
                raise errors.NotFound(f"No such container: {container_id}")
            new = fn(old)
            if new == old:
                return old  # nothing changed: no write (a first start's "not manually stopped" is one per run)
            await self.store.write(new)
            if container_id in self._records:
                self._records[container_id] = new
            return new

    async def update_state(self, container_id: str, **facts: object) -> EngineRecord:
        """Change facts of the record's state (restart count, manual stop, error, health); never its extra."""
        return await self.transition(container_id, None, keep=True, **facts)

    async def transition(self, container_id: str, to: DockerState | None, *, keep: bool = False,
                         **facts: object) -> EngineRecord:
        """Move the container to Docker state ``to`` (None: to what its core state says, dropping a paused or
        restarting made moot; ``keep``: stay) and change ``facts``, under the record's write lock; an illegal
        move (pkg.model.state.TRANSITIONS) raises IllegalTransition."""
        if "extra" in facts:
            raise TypeError("the Docker-only state changes only by transition(to=...)")

        def change(record: EngineRecord) -> EngineRecord:
            extra = record.state.extra
            if not keep:
                extra = docker_extra(self._core_state(container_id), extra, to, f"container {container_id[:12]}")
            return dataclasses.replace(record, state=dataclasses.replace(
                record.state, extra=extra, **facts))  # type: ignore[arg-type]

        return await self.update(container_id, change)


__all__ = ["EngineState", "Registry"]
