"""A minimal asyncio client of containerd's ttrpc, the protocol containerd speaks to its shims.

Why narwhald speaks it at all: an exec process lives only in the pod's runc v2 shim; containerd's task service
passes ``Exec``, ``Start``, ``Wait`` and ``Delete`` of an exec through to the shim, after asking the shim for the
process's state, so every exec call through containerd costs a gRPC hop and an extra shim round trip
(pkg.containerd.shims; issue 21, docs/benchmarks.md "Exec processes straight to the shim").

The wire format, as github.com/containerd/ttrpc (channel.go, types.go, client.go) has it: every message is a
10-byte header (length and stream id as big-endian uint32, a type byte: 1 request, 2 response, and a flags
byte) and a protobuf body of at most 4 MiB.  A request is ``Request{service, method, payload, timeout_nano,
metadata}``, its answer ``Response{status: google.rpc.Status, payload}`` on the same stream id; a client
numbers its streams 1, 3, 5, ... and may have many in flight on one connection.  The two envelopes have five
fields between them, so they are encoded here by hand rather than generated from a .proto of our own.
"""
from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence
from typing import TypeVar

from pkg.containerd.content_wire import varint

T = TypeVar("T", int, bytes)
HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 << 20  # ttrpc's messageLengthMax
TYPE_REQUEST = 1
TYPE_RESPONSE = 2


class TtrpcError(Exception):
    """The server's answer was an error status (a gRPC code, as ttrpc carries them)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ttrpc status {code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(Exception):
    """The connection closed (or broke) before the call's answer came."""


# ---- protobuf wire encoding of the envelopes ----
def _bytes_field(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def encode_request(service: str, method: str, payload: bytes, timeout_ns: int = 0,
                   metadata: Sequence[tuple[str, str]] = ()) -> bytes:
    """``ttrpc.Request`` (fields 1-5)."""
    parts = [_bytes_field(1, service.encode()), _bytes_field(2, method.encode()), _bytes_field(3, payload)]
    if timeout_ns > 0:
        parts.append(varint(4 << 3) + varint(timeout_ns))
    for key, value in metadata:
        parts.append(_bytes_field(5, _bytes_field(1, key.encode()) + _bytes_field(2, value.encode())))
    return b"".join(parts)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes) -> dict[int, list[int | bytes]]:
    """The fields of a protobuf message, by number (varints and length-delimited only: all ttrpc uses)."""
    out: dict[int, list[int | bytes]] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, i = _read_varint(data, i)
        elif wire_type == 2:
            length, i = _read_varint(data, i)
            if i + length > len(data):
                raise ValueError("truncated field")
            value, i = data[i:i + length], i + length
        elif wire_type == 5:
            value, i = 0, i + 4
        elif wire_type == 1:
            value, i = 0, i + 8
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        out.setdefault(number, []).append(value)
    return out


def _last(fields: dict[int, list[int | bytes]], number: int, kind: type[T], default: T) -> T:
    """The field's last value (protobuf's rule for a repeated scalar), of the wire type the message declares."""
    values = fields.get(number)
    if not values:
        return default
    if not isinstance(values[-1], kind):
        raise ValueError(f"field {number} has the wrong wire type")
    return values[-1]


def decode_response(body: bytes) -> bytes:
    """``ttrpc.Response``'s payload, or :class:`TtrpcError` for a status with a non-zero code (ValueError for a
    body that is not a Response)."""
    fields = _fields(body)
    status = _last(fields, 1, bytes, b"")
    if status:
        sfields = _fields(status)
        code = _last(sfields, 1, int, 0)
        if code:
            raise TtrpcError(code, _last(sfields, 2, bytes, b"").decode(errors="replace"))
    payload = _last(fields, 2, bytes, b"")
    return payload


# ---- the connection ----
class Connection:
    """One client connection to a ttrpc server on a unix socket: calls multiplexed by stream id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_stream = 1
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._closed = False
        self._receiver = asyncio.create_task(self._receive(), name="ttrpc-receive")

    @classmethod
    async def open(cls, path: str) -> Connection:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_MESSAGE + HEADER.size)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(self, service: str, method: str, payload: bytes, *, timeout: float | None = None,
                   metadata: Sequence[tuple[str, str]] = ()) -> bytes:
        """One unary call: the answer's payload.  Raises TtrpcError, ConnectionLost or TimeoutError."""
        if self._closed:
            raise ConnectionLost("connection closed")
        timeout_ns = int(timeout * 1e9) if timeout else 0
        body = encode_request(service, method, payload, timeout_ns, metadata)
        if len(body) > MAX_MESSAGE:
            raise ValueError(f"ttrpc request of {len(body)} bytes is over the {MAX_MESSAGE}-byte limit")
        stream = self._next_stream
        self._next_stream += 2
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[stream] = future
        try:
            self._writer.write(HEADER.pack(len(body), stream, TYPE_REQUEST, 0) + body)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                answer = await future
        except TimeoutError:
            raise  # an OSError too, but the connection is fine: only this call gave up
        except (ConnectionError, OSError) as err:
            self._shut(ConnectionLost(str(err)))
            raise ConnectionLost(str(err)) from err
        finally:
            self._pending.pop(stream, None)  # answered, cancelled or timed out: a late answer is dropped
        return decode_response(answer)

    async def _receive(self) -> None:
        reason: Exception = ConnectionLost("the server closed the connection")
        try:
            while True:
                length, stream, kind, _flags = HEADER.unpack(await self._reader.readexactly(HEADER.size))
                if length > MAX_MESSAGE:
                    reason = ConnectionLost(f"message of {length} bytes is over the limit")
                    return
                body = await self._reader.readexactly(length)
                future = self._pending.pop(stream, None)
                if kind == TYPE_RESPONSE and future is not None and not future.done():
                    future.set_result(body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as err:
            if not isinstance(err, asyncio.IncompleteReadError):
                reason = ConnectionLost(str(err))
        finally:
            self._shut(reason)

    def _shut(self, reason: Exception) -> None:
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._writer.close()

    async def close(self) -> None:
        self._shut(ConnectionLost("connection closed"))
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._receiver
