"""Take over an aiohttp connection once the response head is out: the one hijacker of both front ends.

aiohttp has no public hijacker.  After the head (CRI streaming's ``101 Switching Protocols`` to SPDY/3.1,
the Docker API's ``101 UPGRADED``/``200 OK`` before attach and exec output) this module takes the transport
away from aiohttp with ``transport.set_protocol``, so the rest of the code sees a plain connection
(read/write/write_eof/close, ``lost``).  Taking the protocol (rather than plugging a payload parser into
aiohttp's) matters for the half-close: aiohttp's protocol lets the transport close when the client shuts
its write side, but Docker clients do exactly that when their stdin ends and keep reading output until the
process exits.  The handler that hijacked must keep running for as long as the connection is used: aiohttp
closes the socket when it returns.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pkg import errors

READ_LIMIT = 1 << 20  # pause the socket when this much is buffered and unread


class ReadBuffer:
    """What a hijacked connection received and nobody read yet, with backpressure: past READ_LIMIT
    unread bytes the socket is paused, below half of it resumed."""

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._readable = asyncio.Event()
        self.eof = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(bytes(data))
        self._buffered += len(data)
        self._readable.set()
        if self._buffered >= READ_LIMIT and not self._paused:
            self._paused = True
            self._pause()

    def feed_eof(self) -> None:
        self.eof = True
        self._readable.set()

    async def read(self) -> bytes:
        """The next chunk; b"" once EOF was fed and everything before it was read."""
        while not self._chunks:
            if self.eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < READ_LIMIT // 2:
            self._paused = False
            self._resume()
        return chunk


class _Protocol(asyncio.Protocol):
    """The connection's protocol once hijacked: buffers input, keeps writing after the client's half-close."""

    def __init__(self, transport: asyncio.Transport, previous: asyncio.BaseProtocol | None) -> None:
        self._previous = previous
        self.transport = transport
        self.input = ReadBuffer(transport.pause_reading, transport.resume_reading)
        self.lost = asyncio.Event()
        self._write_resumed: asyncio.Event = asyncio.Event()
        self._write_resumed.set()

    def data_received(self, data: bytes) -> None:
        self.input.feed(data)

    def eof_received(self) -> bool:
        self.input.feed_eof()
        return True  # keep the write side open: output flows until the session ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.input.feed_eof()
        self.lost.set()
        self._write_resumed.set()
        if self._previous is not None:
            # aiohttp's protocol still tracks this connection (server shutdown waits for it).
            previous, self._previous = self._previous, None
            previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_resumed.clear()

    def resume_writing(self) -> None:
        self._write_resumed.set()

    async def drain(self) -> None:
        await self._write_resumed.wait()


class HijackedConnection:
    """The raw connection after the response head: ``read``/``write`` bytes, ``write_eof``, ``close``."""

    def __init__(self, response: web.StreamResponse, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self.response = response  # already sent: the handler returns it, aiohttp only closes the connection
        self._transport = transport
        self._protocol = protocol

    @property
    def lost(self) -> asyncio.Event:
        """Set when the connection is gone (not on a mere half-close)."""
        return self._protocol.lost

    @property
    def input(self) -> ReadBuffer:
        return self._protocol.input

    async def read(self) -> bytes:
        """The next chunk from the client; b"" once it closed its write side (or went away)."""
        return await self._protocol.input.read()

    async def write(self, data: bytes) -> None:
        """Raises ConnectionResetError once the client is gone."""
        if self._protocol.lost.is_set() or self._transport.is_closing():
            raise ConnectionResetError("connection lost")
        self._transport.write(data)
        await self._protocol.drain()
        if self._protocol.lost.is_set():
            raise ConnectionResetError("connection lost")

    def write_eof(self) -> None:
        if self._transport.can_write_eof() and not self._transport.is_closing():
            self._transport.write_eof()

    def close(self) -> None:
        self._protocol.input.feed_eof()
        self._transport.close()


async def take_over(request: web.BaseRequest, response: web.StreamResponse) -> HijackedConnection:
    """Send ``response``'s head and take the connection from aiohttp (Cancelled if the client is gone)."""
    response.force_close()
    await response.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        raise errors.Cancelled("the client went away")
    assert isinstance(transport, asyncio.Transport)
    handler: Any = request.protocol
    handler.keep_alive(False)
    protocol = _Protocol(transport, transport.get_protocol())
    # Bytes aiohttp read past the request (a client that did not wait for the head) come first.
    tail = getattr(handler, "_message_tail", b"")
    if tail:
        protocol.data_received(tail)
        with contextlib.suppress(AttributeError):
            handler._message_tail = b""
    transport.set_protocol(protocol)
    return HijackedConnection(response, transport, protocol)


async def hijack(request: web.Request, headers: dict[str, str]) -> HijackedConnection:
    """Answer 101 with ``headers`` (CRI streaming's upgrade to SPDY/3.1) and return the raw connection."""
    return await take_over(request, web.StreamResponse(status=101, headers=headers))
