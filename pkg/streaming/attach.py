"""Attach: relay a container's own stdio to one client, and fan its output out to many.

``relay_attach`` is the whole attach session over a ``ContainerStdio``: output
to the client (everything on stdout for a TTY), client stdin to the
container, resizes to the console.  When the client closes its stdin, a
``stdin_once`` container without a TTY has its stdin closed and the output is
relayed until it exits; otherwise the client detaches and the session ends
(containerd's cio attach, i.e. Docker's behaviour).  The session also ends
when the container's output ends (it exited) or the client goes away.

``OutputBroadcaster`` is for the runtime: feed it what the container's stdout
and stderr fifos produce, and every attached client gets a copy.  Publishing
never blocks the container; a client that falls too far behind is cut off
rather than buffered without bound.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from pkg.streaming.backend import ContainerStdio, ExecStreams

SUBSCRIBER_BUFFER = 4 << 20


class _Subscription:
    def __init__(self, owner: OutputBroadcaster, limit: int) -> None:
        self._owner = owner
        self._limit = limit
        self._chunks: deque[tuple[str, bytes]] = deque()
        self._size = 0
        self._ended = False
        self._event = asyncio.Event()

    def _push(self, stream: str, data: bytes) -> None:
        if self._ended:
            return
        if self._size + len(data) > self._limit:
            self._end()  # too slow: cut off rather than grow without bound
            return
        self._chunks.append((stream, data))
        self._size += len(data)
        self._event.set()

    def _end(self) -> None:
        self._ended = True
        self._event.set()

    async def read(self) -> tuple[str, bytes] | None:
        while not self._chunks:
            if self._ended:
                return None
            self._event.clear()
            await self._event.wait()
        stream, data = self._chunks.popleft()
        self._size -= len(data)
        return stream, data

    def close(self) -> None:
        self._end()
        self._chunks.clear()
        self._owner._subscribers.discard(self)


class OutputBroadcaster:
    """Fan-out of one container's output to every attached client."""

    def __init__(self, subscriber_buffer: int = SUBSCRIBER_BUFFER) -> None:
        self._subscribers: set[_Subscription] = set()
        self._limit = subscriber_buffer
        self.ended = False

    def publish(self, stream: str, data: bytes) -> None:
        for sub in list(self._subscribers):
            sub._push(stream, data)

    def end(self) -> None:
        """The container's output is over (it exited): every subscription ends."""
        self.ended = True
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()

    def subscribe(self) -> _Subscription:
        sub = _Subscription(self, self._limit)
        if self.ended:
            sub._end()
        else:
            self._subscribers.add(sub)
        return sub


async def relay_attach(stdio: ContainerStdio, streams: ExecStreams) -> None:
    sub = stdio.subscribe()

    async def output() -> None:
        while (item := await sub.read()) is not None:
            name, data = item
            target = streams.stderr if name == "stderr" and not stdio.tty else streams.stdout
            if target is not None:
                await target.write(data)

    async def stdin() -> None:
        """Relay the client's stdin; its EOF either closes the container's stdin or ends the session."""
        assert streams.stdin is not None
        while data := await streams.stdin.read():
            await stdio.write_stdin(data)
        if stdio.stdin_once and not stdio.tty:
            await stdio.close_stdin()  # the container sees EOF; its output is relayed until it exits
        else:
            sub.close()  # detach: the container's stdin stays open for the next client

    async def resize() -> None:
        assert streams.resize is not None
        while (size := await streams.resize.next()) is not None:
            await stdio.resize(size)

    # As containerd's cio attach: without stdin_once (or with a TTY) a client closing its stdin detaches.
    helpers: list[asyncio.Task[None]] = []
    if streams.stdin is not None and stdio.stdin:
        helpers.append(asyncio.create_task(stdin(), name="attach-stdin"))
    if streams.resize is not None and stdio.tty:
        helpers.append(asyncio.create_task(resize(), name="attach-resize"))
    try:
        with contextlib.suppress(ConnectionError):
            await output()
    finally:
        sub.close()
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
