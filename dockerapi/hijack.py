"""Hijacked connections of the Docker API (attach, exec start): the upgrade, raw bytes both ways, stdcopy framing.

moby hijacks the net.Conn after validation (``postContainersAttach``); we do
the same late: the handler checks everything, then ``hijack()`` writes the
response head (``101 UPGRADED`` when the client sent ``Upgrade: tcp``, as the
docker CLI and docker-py do, else ``200 OK``) and takes the connection from
aiohttp with pkg.streaming.hijack (CRI streaming's hijacker too), which keeps
the write side open after the client's half-close: Docker clients shut their
write side when their stdin ends and keep reading output until the process exits.

Without a TTY, output is multiplexed: an 8-byte header (stream type, three
zero bytes, big-endian length) before each chunk; with a TTY it is raw.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from dockerapi import versions
from pkg import errors
from pkg.streaming.hijack import HijackedConnection as HijackedConnection  # re-exported: the handlers type it
from pkg.streaming.hijack import take_over

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


class ByteSource(Protocol):
    """What InputStream reads: the hijacked connection (or, in tests, any source of chunks)."""

    async def read(self) -> bytes: ...


class InputStream:
    """``pkg.streaming.backend.InputStream`` of the client's bytes; with detach keys, the sequence ends it.

    As moby's term.EscapeProxy: bytes that could start the sequence are held
    back until it is clear they do not; ``detached`` tells a detach from EOF.
    """

    def __init__(self, conn: ByteSource, detach_keys: bytes = b"") -> None:
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
    """Send the response head and take over the connection (pkg.streaming.hijack).

    The handler must keep running while the connection is used, then
    ``close()`` it and return the response (aiohttp finishes nothing more).
    """
    headers = {"Content-Type": content_type(request, tty)}
    if wants_upgrade(request):
        response: web.StreamResponse = _HeadResponse(status=101, reason="UPGRADED", headers={
            **headers, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        response = _HeadResponse(status=200, headers=headers)
    conn = await take_over(request, response)
    return response, conn


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
