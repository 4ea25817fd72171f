"""Stages as a graph: which stages the target needs (its base stage and every ``COPY --from`` stage, and
theirs), and the output of stages that run in parallel serialised in stage order, so the stream reads like
moby's sequential classic builder while the work overlaps."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pkg import errors
from pkg.docker.build.dockerfile.instructions import Stage, find_stage
from pkg.docker.build.dockerfile.lexer import process_word
from pkg.docker.build.model import Emit


def dependencies(stages: list[Stage], stage: Stage, meta: Mapping[str, str], escape: str) -> set[int]:
    deps: set[int] = set()
    base = process_word(stage.base, meta, escape)
    found = find_stage(stages[:stage.index], base) if not base.isdigit() else None
    if found is not None:
        deps.add(found.index)
    for inst in stage.instructions:
        ref = inst.flags.get("from", "") if inst.kind == "copy" else ""
        if not ref:
            continue
        ref = process_word(ref, meta, escape)
        other = find_stage(stages, ref)
        if other is None:
            continue  # an image
        if other.index >= stage.index:
            raise errors.InvalidArgument(f"invalid from flag value {ref}: refers to current or later build stage")
        deps.add(other.index)
    return deps


def needed(stages: list[Stage], target: Stage, meta: Mapping[str, str], escape: str) -> list[int]:
    todo, seen = [target.index], set()
    while todo:
        index = todo.pop()
        if index in seen:
            continue
        seen.add(index)
        todo += dependencies(stages, stages[index], meta, escape)
    return sorted(seen)


class Sequencer:
    """Each stage writes through ``writer(i)``: the earliest unfinished stage goes straight out, later ones are
    buffered until every stage before them has finished."""

    def __init__(self, order: list[int], emit: Emit) -> None:
        self._order = order
        self._emit = emit
        self._pos = 0
        self._buffers: dict[int, list[dict[str, Any]]] = {i: [] for i in order}
        self._done: set[int] = set()
        self._lock = asyncio.Lock()

    def writer(self, index: int) -> Emit:
        async def write(message: dict[str, Any]) -> None:
            async with self._lock:
                if self._pos < len(self._order) and self._order[self._pos] == index:
                    await self._emit(message)
                else:
                    self._buffers[index].append(message)
        return write

    async def finish(self, index: int) -> None:
        async with self._lock:
            self._done.add(index)
            while self._pos < len(self._order) and self._order[self._pos] in self._done:
                self._pos += 1
                if self._pos < len(self._order):
                    await self._drain(self._order[self._pos])

    async def flush(self) -> None:
        """After a failure: everything buffered, in stage order."""
        async with self._lock:
            for index in self._order[self._pos:]:
                await self._drain(index)
            self._pos = len(self._order)

    async def _drain(self, index: int) -> None:
        pending, self._buffers[index] = self._buffers[index], []
        for message in pending:
            await self._emit(message)
