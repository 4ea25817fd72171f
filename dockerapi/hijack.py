"""Hijacked connections of the Docker API (attach, exec start): the upgrade, raw bytes both ways, stdcopy framing.

moby hijacks the net.Conn after validation (``postContainersAttach``); we do
the same late: the handler checks everything, then ``hijack()`` writes the
response head (``101 UPGRADED`` when the client sent ``Upgrade: tcp``, as the
docker CLI and docker-py do, else ``200 OK``) and takes the transport away
from aiohttp with ``transport.set_protocol``.  Taking the protocol (rather
than plugging a payload parser into aiohttp's) matters for the half-close:
aiohttp's protocol lets the transport close when the client shuts its write
side, but Docker clients do exactly that when their stdin ends and keep
reading output until the process exits.

Without a TTY, output is multiplexed: an 8-byte header (stream type, three
zero bytes, big-endian length) before each chunk; with a TTY it is raw.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dockerapi import versions
from pkg import errors
from pkg.streaming.hijack import ReadBuffer

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR = 0, 1, 2
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_MAX_FRAME = 1 << 20


def frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame (moby pkg/stdcopy)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a complete multiplexed stream into (stream, payload) frames (for tests and clients)."""
    out: list[tuple[int, bytes]] = []
    while data:
        if len(data) < 8:
            raise ValueError("truncated frame header")
        stream, length = struct.unpack(">BxxxL", data[:8])
        if len(data) < 8 + length:
            raise ValueError("truncated frame")
        out.append((stream, data[8:8 + length]))
        data = data[8 + length:]
    return out


def parse_detach_keys(spec: str) -> bytes:
    """``ctrl-p,ctrl-q`` → b"\\x10\\x11" (moby term.ToBytes); empty means the default."""
    spec = spec or DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
            continue
        lower = key.lower()
        if lower.startswith("ctrl-") and len(lower) == 6:
            char = lower[5]
            if "a" <= char <= "z":
                out.append(ord(char) - ord("a") + 1)
                continue
            if char in "@[\\]^_":
                out.append("@[\\]^_".index(char) + (0 if char == "@" else 26))
                continue
        raise errors.InvalidArgument(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class _Protocol(asyncio.Protocol):
    """The connection's protocol once hijacked: buffers input, keeps writing after the client's half-close."""

    def __init__(self, previous: asyncio.BaseProtocol | None) -> None:
        self._previous = previous
        self.transport: asyncio.Transport | None = None
        self.input = ReadBuffer(self._pause_reading, self._resume_reading)
        self.lost = asyncio.Event()
        self._write_resumed: asyncio.Event = asyncio.Event()
        self._write_resumed.set()

    def _pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.input.feed(data)

    def eof_received(self) -> bool:
        self.input.feed_eof()
        return True  # keep the write side open: output flows until the process exits

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
    """The raw connection after the response head: ``read``/``write`` bytes, ``close``."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @property
    def lost(self) -> asyncio.Event:
        """Set when the connection is gone (not on a mere half-close)."""
        return self._protocol.lost

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

    def close(self) -> None:
        self._transport.close()


class OutputStream:
    """``pkg.streaming.backend.OutputStream`` for one of stdout/stderr: framed unless TTY."""

    def __init__(self, conn: HijackedConnection, stream: int, raw: bool) -> None:
        self._conn = conn
        self._stream = stream
        self._raw = raw

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._raw:
            await self._conn.write(data)
            return
        for start in range(0, len(data), _MAX_FRAME):
            await self._conn.write(frame(self._stream, data[start:start + _MAX_FRAME]))


class InputStream:
    """``pkg.streaming.backend.InputStream`` of the client's bytes; with detach keys, the sequence ends it.

    As moby's term.EscapeProxy: bytes that could start the sequence are held
    back until it is clear they do not; ``detached`` tells a detach from EOF.
    """

    def __init__(self, conn: HijackedConnection, detach_keys: bytes = b"") -> None:
        self._conn = conn
        self._keys = detach_keys
        self._matched = 0
        self.detach = asyncio.Event()

    @property
    def detached(self) -> bool:
        return self.detach.is_set()

    async def read(self) -> bytes:
        if self.detached:
            return b""
        while True:
            data = await self._conn.read()
            if not data:
                held = self._keys[:self._matched]
                self._matched = 0
                return held
            if not self._keys:
                return data
            out = bytearray()
            for byte in data:
                if byte == self._keys[self._matched]:
                    self._matched += 1
                    if self._matched == len(self._keys):
                        self.detach.set()
                        return bytes(out)  # what came before the sequence, then EOF
                    continue
                if self._matched:
                    out += self._keys[:self._matched]
                    self._matched = 0
                    if byte == self._keys[0]:
                        self._matched = 1
                        continue
                out.append(byte)
            if out:
                return bytes(out)


def wants_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "tcp"


def content_type(request: web.Request, tty: bool) -> str:
    """Multiplexed output gets its own media type from API 1.42 on."""
    if not tty and versions.at_least(request, "1.42"):
        return MULTIPLEXED_STREAM
    return RAW_STREAM


class _HeadResponse(web.StreamResponse):
    """A response whose body is whatever follows on the raw connection: no length, no chunking."""

    _length_check = False


async def hijack(request: web.Request, *, tty: bool) -> tuple[web.StreamResponse, HijackedConnection]:
    """Send the response head and take over the connection.

    The handler must keep running while the connection is used, then
    ``close()`` it and return the response (aiohttp finishes nothing more).
    """
    headers = {"Content-Type": content_type(request, tty)}
    if wants_upgrade(request):
        response: web.StreamResponse = _HeadResponse(status=101, reason="UPGRADED", headers={
            **headers, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        response = _HeadResponse(status=200, headers=headers)
    response.force_close()
    await response.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        raise errors.Cancelled("the client went away")
    assert isinstance(transport, asyncio.Transport)
    handler: Any = request.protocol
    handler.keep_alive(False)
    protocol = _Protocol(transport.get_protocol())
    protocol.transport = transport
    # Bytes aiohttp read past the request (a client that did not wait for the head) come first.
    tail = getattr(handler, "_message_tail", b"")
    if tail:
        protocol.data_received(tail)
        with contextlib.suppress(AttributeError):
            handler._message_tail = b""
    transport.set_protocol(protocol)
    return response, HijackedConnection(transport, protocol)


async def serve(request: web.Request, *, tty: bool,
                session: Callable[[HijackedConnection], Awaitable[None]]) -> web.StreamResponse:
    """Hijack, run ``session`` on the connection, close it.

    Once the head is out, an error can no longer become an HTTP status: as
    moby, it is written on the stream (stdout) for the client to show.
    """
    response, conn = await hijack(request, tty=tty)
    try:
        await session(conn)
    except errors.NarwhalError as err:
        with contextlib.suppress(ConnectionError):
            await OutputStream(conn, STDOUT, tty).write(f"{err.message}\r\n".encode())
    except Exception:  # noqa: BLE001 - a bug: the middleware must not write a response onto the raw stream
        log.exception("%s %s failed after the connection was hijacked", request.method, request.path)
    finally:
        conn.close()
    return response
