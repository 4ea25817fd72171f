"""Who follows a container's runs: clients waiting for its next start, and readers of its output.

An attach may subscribe before the start (a ``run`` that attaches, then
starts) and must see that run even when it is over in a millisecond and
``--rm`` removes the container right after: so a start hands its exit event
to every waiter at once (no polling that a short run slips between), and a
removal waits until every attached reader holds the log open (an open file
outlives its unlink) before the container's files go.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import NamedTuple

log = logging.getLogger(__name__)

READERS_WAIT = 10.0  # how long a removal waits for attached readers to open the log


class Reader:
    """One attached reader's hold on a container's files; ``release()`` once the log is open (or never will be)."""

    def __init__(self, owner: RunTracker, container_id: str) -> None:
        self._owner = owner
        self._container_id = container_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner._release(self._container_id)


class Run(NamedTuple):
    """A run handed to a follower: its exit event and the follower's hold on the container's files."""

    exited: asyncio.Event
    hold: Reader


class RunTracker:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[Run | None]]] = {}
        self._holds: dict[str, int] = {}
        self._released: dict[str, asyncio.Event] = {}

    # ---- the next start ----
    def next_run(self, container_id: str) -> asyncio.Future[Run | None]:
        """Resolves with the container's next run (holding its files for the caller, who releases the hold),
        or None when it is removed first."""
        future: asyncio.Future[Run | None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(container_id, set())
        waiters.add(future)
        future.add_done_callback(lambda f: waiters.discard(f))
        return future

    def started(self, container_id: str, exited: asyncio.Event) -> None:
        """A run began (called before its exit can be handled): every waiter gets it, with a hold."""
        for future in self._waiters.pop(container_id, set()):
            if not future.done():
                future.set_result(Run(exited, self.reader(container_id)))

    def forget(self, container_id: str) -> None:
        """The container is gone: waiters are told (None)."""
        for future in self._waiters.pop(container_id, set()):
            if not future.done():
                future.set_result(None)

    # ---- readers holding the files ----
    def reader(self, container_id: str) -> Reader:
        """A hold on the container's files: a removal waits (bounded) until it is released."""
        self._holds[container_id] = self._holds.get(container_id, 0) + 1
        self._released.setdefault(container_id, asyncio.Event()).clear()
        return Reader(self, container_id)

    @contextlib.contextmanager
    def reading(self, container_id: str) -> Iterator[Reader]:
        """A hold released at the latest when the block ends."""
        hold = self.reader(container_id)
        try:
            yield hold
        finally:
            hold.release()

    def _release(self, container_id: str) -> None:
        left = self._holds.get(container_id, 0) - 1
        if left > 0:
            self._holds[container_id] = left
            return
        self._holds.pop(container_id, None)
        released = self._released.pop(container_id, None)
        if released is not None:
            released.set()

    async def readers_done(self, container_id: str, timeout: float = READERS_WAIT) -> None:
        """Wait (bounded) until no attached reader still needs the container's files."""
        released = self._released.get(container_id)
        if released is None or released.is_set():
            return
        try:
            await asyncio.wait_for(released.wait(), timeout)
        except TimeoutError:
            log.warning("container %s: removing it although %d attached reader(s) never opened its log",
                        container_id[:12], self._holds.get(container_id, 0))
