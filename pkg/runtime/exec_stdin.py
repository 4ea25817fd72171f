"""An exec process's stdin fifo, written only once the shim holds its reader.

The runc v2 shim opens the exec's stdin fifo in goroutines (containerd/fifo strips ``O_NONBLOCK`` and opens in
the background): a reader that copies into the process's stdin, and a writer of its own that keeps the fifo
open until ``CloseIO``.  A blocking open of a fifo waits for the other side, so the shim's reader opens only
while some writer holds the fifo.  Were our writer opened early (against a reader of our own, so the open
does not block) and closed at the client's EOF before the shim's reader goroutine ran, and the shim's own
writer closed by ``CloseIO``, the shim's reader would open onto a fifo with no writer left and wait there
forever: the process never sees its input or its EOF (`docker exec -i c cat` hung now and then with input
under the fifo's 64 KiB, once ``Start`` and ``CloseIO`` went straight to the shim and answered sooner).

So, as containerd's own client (cio opens the stdin fifo for writing in the background too), our writer is
opened only once a reader holds the fifo, and the only reader is the shim's: a non-blocking open when its
reader is already there, else a blocking open in a thread that returns when it comes.  Our input is
therefore never written, nor our end closed, before the shim reads; and no writer of ours is ever open
without a reader (asyncio would close it: "pipe closed by peer").  A shim that never opens its reader (it
died) leaves the open pending until ``release``, which opens a reader of ours for the time the pending open
needs to return.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os

UNBLOCK_TIMEOUT = 5.0  # an open blocked on a fifo whose name is gone stays blocked: do not wait for it


class ExecStdin:
    """Our write end of one exec's stdin fifo (``path``), from ``Start`` to the exec's deletion."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: asyncio.Task[asyncio.StreamWriter] | None = None
        self._transport: asyncio.BaseTransport | None = None

    def start(self) -> None:
        """The process started (the shim is opening its reader): open our end as soon as it can be."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._open(), name="exec-stdin-open")

    async def _open(self) -> asyncio.StreamWriter:
        loop = asyncio.get_running_loop()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            opening = loop.run_in_executor(None, os.open, self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                fd = await asyncio.shield(opening)
            except asyncio.CancelledError:
                await _unblock(self.path, opening)
                raise
        transport, flow = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(fd, "wb", buffering=0))
        self._transport = transport
        return asyncio.StreamWriter(transport, flow, None, loop)

    async def _stream(self) -> asyncio.StreamWriter | None:
        """Our writer once the shim's reader is there (None: never started, or the open failed)."""
        if self._writer is None:
            return None
        with contextlib.suppress(OSError):
            return await asyncio.shield(self._writer)
        return None

    async def write(self, data: bytes) -> None:
        writer = await self._stream()
        if writer is None or writer.is_closing():
            return
        writer.write(data)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the process closed its stdin or exited
            await writer.drain()

    async def close(self) -> None:
        """Close our end, after the shim's reader opened (it then reads what we wrote, and EOF once the shim's
        own writer is closed too)."""
        writer = await self._stream()
        if writer is not None and not writer.is_closing():
            writer.close()

    async def release(self) -> None:
        """The exec is being deleted: end a pending open, close our end whatever happened."""
        if self._writer is not None:
            if not self._writer.done():
                self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        if self._transport is not None:
            self._transport.close()


async def _unblock(path: str, opening: asyncio.Future[int]) -> None:
    """End a blocking open for writing: a reader of ours while it returns, then close both."""
    try:
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        reader = -1  # the fifo is gone: the open in the thread failed or fails too
    try:
        with contextlib.suppress(OSError, TimeoutError):
            os.close(await asyncio.wait_for(asyncio.shield(opening), UNBLOCK_TIMEOUT))
    finally:
        if reader >= 0:
            os.close(reader)
