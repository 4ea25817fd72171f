"""A running container's own stdio for Attach: output from its CRI log, stdin through a fifo.

Output: the shim sends stdout/stderr to narwhal-logger, so attached clients
follow the container's log file from its current end (this also works after
a narwhald restart).  An interactive container created without a log path
logs to a private file instead (``output_log``); any other one
has no output to attach to.  Stdin: a fifo the shim reads (and holds a writer on, until
Tasks.CloseIO); narwhald opens it O_RDWR before the task starts, so the shim
never blocks on it, and writes attached clients' input through that fd.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from pkg import errors
from pkg.containerd import tasks as ctr_tasks
from pkg.logs.reader import ReadOptions, read_log
from pkg.model.container import ContainerMetadata
from pkg.runtime.context import RuntimeContext
from pkg.runtime.stdin import StdinKeeper
from pkg.streaming.model import TerminalSize


def stdin_fifo(ctx: RuntimeContext, container_id: str) -> Path:
    return ctx.container_state(container_id) / "stdin"


def output_log(ctx: RuntimeContext, metadata: ContainerMetadata) -> str:
    """Where the container's output goes: its CRI log, or, for an interactive container (stdin or TTY) created
    without one, a private log in its root dir (removed with it) that Attach follows, as containerd's attach
    works without a log path.  Never stdin without stdout: the shim wedges on that stdio."""
    if metadata.log_path:
        return metadata.log_path
    if metadata.config.stdin or metadata.config.tty:
        return str(ctx.container_root(metadata.id) / "attach.log")
    return ""


class _LogSubscription:
    """The container's output from now on, until it exits or the client closes."""

    def __init__(self, log_path: str, exited: asyncio.Event) -> None:
        self._stop = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(1024)
        # "From now on" by timestamp, fixed here: the pump task may open the file a little later.
        self._task = asyncio.ensure_future(self._pump(log_path, exited, time.time_ns()))

    async def _pump(self, log_path: str, exited: asyncio.Event, since_ns: int) -> None:
        watcher = asyncio.ensure_future(exited.wait())
        watcher.add_done_callback(lambda _: self._stop.set())
        try:
            options = ReadOptions(follow=True, since_ns=since_ns, join_partial=False)
            async for entry in read_log(log_path, options, stop=self._stop):
                await self._queue.put((entry.stream, entry.content))
        finally:
            watcher.cancel()
            await self._queue.put(None)

    async def read(self) -> tuple[str, bytes] | None:
        return await self._queue.get()

    def close(self) -> None:
        self._stop.set()
        self._task.cancel()


class _NoOutput:
    def __init__(self, exited: asyncio.Event) -> None:
        self._exited = exited

    async def read(self) -> tuple[str, bytes] | None:
        await self._exited.wait()
        return None

    def close(self) -> None:
        pass


class ContainerAttach:
    """``pkg.streaming.backend.ContainerStdio`` for one running container."""

    def __init__(self, ctx: RuntimeContext, metadata: ContainerMetadata, keeper: StdinKeeper,
                 exited: asyncio.Event) -> None:
        self._ctx = ctx
        self._metadata = metadata
        self._keeper = keeper
        self._exited = exited

    @property
    def tty(self) -> bool:
        return self._metadata.config.tty

    @property
    def stdin(self) -> bool:
        return self._metadata.config.stdin

    @property
    def stdin_once(self) -> bool:
        return self._metadata.config.stdin_once

    def subscribe(self) -> _LogSubscription | _NoOutput:
        log_path = output_log(self._ctx, self._metadata)
        if not log_path:
            return _NoOutput(self._exited)
        return _LogSubscription(log_path, self._exited)

    async def write_stdin(self, data: bytes) -> None:
        await self._keeper.write(self._metadata.id, data)

    async def close_stdin(self) -> None:
        self._keeper.close(self._metadata.id)
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
            await ctr_tasks.close_stdin(self._ctx.client, self._metadata.id)

    async def resize(self, size: TerminalSize) -> None:
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
            await ctr_tasks.resize_pty(self._ctx.client, self._metadata.id, size.width, size.height)
