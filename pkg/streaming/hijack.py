"""Take over an aiohttp connection after a ``101 Switching Protocols`` (for SPDY/3.1).

aiohttp has no public hijacker; after an accepted upgrade it feeds the bytes
that follow into the request protocol's payload parser, which is what
WebSocketResponse plugs into.  This module is the one place that does the
same for raw bytes, so the rest of the streaming code sees a plain
``ByteTransport`` (read/write/close).  The handler that hijacked must keep
running for as long as the connection is used: aiohttp closes the socket
when it returns.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from aiohttp import web

READ_LIMIT = 1 << 20  # pause the socket when this much is buffered and unread


class ReadBuffer:
    """What a hijacked connection received and nobody read yet, with backpressure: past READ_LIMIT
    unread bytes the socket is paused, below half of it resumed.  Shared by CRI streaming (SPDY) and
    the Docker API's hijacked attach/exec, which take the connection from aiohttp in different ways."""

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


class _Feed:
    """The payload-parser interface aiohttp calls with the raw bytes of an upgraded connection."""

    def __init__(self, buffer: ReadBuffer) -> None:
        self._buffer = buffer

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buffer.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self._buffer.feed_eof()


class HijackedConnection:
    def __init__(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        self._request = request
        self.response = response
        self.input = ReadBuffer(request.protocol.pause_reading, request.protocol.resume_reading)

    async def read(self) -> bytes:
        return await self.input.read()

    async def write(self, data: bytes) -> None:
        if self.input.eof and self._request.transport is None:
            raise ConnectionResetError("connection lost")
        await self.response.write(data)

    def write_eof(self) -> None:
        transport = self._request.transport
        if transport is not None and transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()

    def close(self) -> None:
        self.input.feed_eof()
        transport = self._request.transport
        if transport is not None:
            transport.close()


async def hijack(request: web.Request, headers: dict[str, str]) -> HijackedConnection:
    """Answer 101 with ``headers`` and return the raw connection."""
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    conn = HijackedConnection(request, response)
    request.protocol.keep_alive(False)
    request.protocol.set_parser(_Feed(conn.input))  # type: ignore[arg-type]  # duck-typed payload parser
    return conn
