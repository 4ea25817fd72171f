"""SPDY/3.1 framing, sans I/O: frame types, a frame parser and an encoder.

Kubernetes streams exec/attach/port-forward over SPDY/3.1 (moby/spdystream on
the client side), and no Python library speaks it, so this is a small,
strict implementation of draft 3.1: control frames (SYN_STREAM, SYN_REPLY,
RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE), data frames, and
header blocks compressed with one zlib stream per direction primed with the
SPDY/3 dictionary.  Flow-control accounting lives in ``spdy_conn``.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# RST_STREAM status codes
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 65536
MAX_WINDOW = 0x7FFFFFFF
MAX_FRAME_PAYLOAD = (1 << 24) - 1
MAX_STREAM_ID = 0x7FFFFFFF

_HEADER = struct.Struct("!IBBH")  # first word, flags, 24-bit length as (hi byte, lo short)


def _dictionary() -> bytes:
    """The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1): length-prefixed words, then text."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date etag "
        "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
        "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
        "method get status 200|OK version HTTP/1.1 url public set-cookie keep-alive origin"
    ).split()
    out = bytearray()
    for word in words:
        raw = word.replace("|", " ").encode()
        out += struct.pack("!I", len(raw)) + raw
    out += (
        b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        b"401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        b"503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        b"Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        b"application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        b"gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return bytes(out)


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer broke SPDY framing; the session must end (GOAWAY with PROTOCOL_ERROR)."""


# ---- frames ----
@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes = b""
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0
    associated_id: int = 0
    priority: int = 0
    slot: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: dict[int, int] = field(default_factory=dict)  # id -> value (per-entry flags are ignored)
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate


# ---- header blocks ----
def encode_header_block(headers: Headers) -> bytes:
    """Uncompressed name/value block; names lower-cased, multiple values joined by NUL."""
    out = bytearray(struct.pack("!I", len(headers)))
    for name, values in headers.items():
        raw_name = name.lower().encode()
        raw_value = b"\0".join(v.encode() for v in values)
        if not raw_name:
            raise ValueError("empty header name")
        out += struct.pack("!I", len(raw_name)) + raw_name + struct.pack("!I", len(raw_value)) + raw_value
    return bytes(out)


def decode_header_block(block: bytes) -> Headers:
    view = memoryview(block)

    def take_u32(pos: int) -> tuple[int, int]:
        if pos + 4 > len(view):
            raise ProtocolError("truncated header block")
        return struct.unpack_from("!I", view, pos)[0], pos + 4

    count, pos = take_u32(0)
    headers: Headers = {}
    for _ in range(count):
        name_len, pos = take_u32(pos)
        if name_len == 0 or pos + name_len > len(view):
            raise ProtocolError("bad header name length")
        name = bytes(view[pos:pos + name_len]).decode("latin-1")
        pos += name_len
        value_len, pos = take_u32(pos)
        if pos + value_len > len(view):
            raise ProtocolError("bad header value length")
        value = bytes(view[pos:pos + value_len]).decode("latin-1")
        pos += value_len
        if name != name.lower():
            raise ProtocolError(f"header name {name!r} is not lower-case")
        if name in headers:
            raise ProtocolError(f"duplicate header {name!r}")
        headers[name] = value.split("\0")
    if pos != len(view):
        raise ProtocolError("trailing bytes after header block")
    return headers


# ---- codec ----
class Encoder:
    """Serialises frames; owns this direction's header compression context."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                      zdict=DICTIONARY)

    def _headers(self, headers: Headers) -> bytes:
        raw = encode_header_block(headers)
        return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(kind: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_FRAME_PAYLOAD:
            raise ValueError("control frame too large")
        first = 0x80000000 | (VERSION << 16) | kind
        return struct.pack("!IB", first, flags) + len(payload).to_bytes(3, "big") + payload

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_FRAME_PAYLOAD:
                raise ValueError("data frame too large")
            return (struct.pack("!IB", frame.stream_id & MAX_STREAM_ID, frame.flags)
                    + len(frame.data).to_bytes(3, "big") + frame.data)
        if isinstance(frame, SynStream):
            body = struct.pack("!IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, frame.slot)
            return self._control(SYN_STREAM, frame.flags, body + self._headers(frame.headers))
        if isinstance(frame, SynReply):
            return self._control(SYN_REPLY, frame.flags, struct.pack("!I", frame.stream_id)
                                 + self._headers(frame.headers))
        if isinstance(frame, HeadersFrame):
            return self._control(HEADERS, frame.flags, struct.pack("!I", frame.stream_id)
                                 + self._headers(frame.headers))
        if isinstance(frame, RstStream):
            return self._control(RST_STREAM, 0, struct.pack("!II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = struct.pack("!I", len(frame.entries))
            for key, value in frame.entries.items():
                body += struct.pack("!II", key & 0xFFFFFF, value)
            return self._control(SETTINGS, frame.flags, body)
        if isinstance(frame, Ping):
            return self._control(PING, 0, struct.pack("!I", frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(GOAWAY, 0, struct.pack("!II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return self._control(WINDOW_UPDATE, 0, struct.pack("!II", frame.stream_id, frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class Parser:
    """Incremental frame parser: ``feed(bytes)`` returns the complete frames seen so far.

    ``max_payload`` bounds what a peer can make us buffer; a bigger frame is a
    protocol error, not an allocation.  Unknown control frame types are skipped
    as the spec requires.
    """

    def __init__(self, max_payload: int = MAX_FRAME_PAYLOAD, max_header_block: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._zlib = zlib.decompressobj(zdict=DICTIONARY)
        self._max_payload = max_payload
        self._max_header_block = max_header_block

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            first, flags = struct.unpack_from("!IB", self._buf, 0)
            length = int.from_bytes(self._buf[5:8], "big")
            if length > self._max_payload:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max_payload}")
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            if first & 0x80000000:
                frame = self._control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                stream_id = first & MAX_STREAM_ID
                if stream_id == 0:
                    raise ProtocolError("data frame on stream 0")
                frames.append(DataFrame(stream_id, payload, flags))
        return frames

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._zlib.decompress(block, self._max_header_block + 1)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from None
        if len(raw) > self._max_header_block or self._zlib.unconsumed_tail:
            raise ProtocolError("header block too large")
        return decode_header_block(raw)

    def _control(self, version: int, kind: int, flags: int, payload: bytes) -> Frame | None:
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")

        def need(n: int) -> None:
            if len(payload) < n:
                raise ProtocolError(f"control frame type {kind} too short")

        if kind == SYN_STREAM:
            need(10)
            stream_id, assoc, prio, slot = struct.unpack_from("!IIBB", payload)
            sid = stream_id & MAX_STREAM_ID
            if sid == 0:
                raise ProtocolError("SYN_STREAM with stream id 0")
            return SynStream(sid, self._headers(payload[10:]), flags, assoc & MAX_STREAM_ID, prio >> 5, slot)
        if kind == SYN_REPLY:
            need(4)
            return SynReply(struct.unpack_from("!I", payload)[0] & MAX_STREAM_ID, self._headers(payload[4:]), flags)
        if kind == HEADERS:
            need(4)
            return HeadersFrame(struct.unpack_from("!I", payload)[0] & MAX_STREAM_ID,
                                self._headers(payload[4:]), flags)
        if kind == RST_STREAM:
            need(8)
            sid, status = struct.unpack_from("!II", payload)
            return RstStream(sid & MAX_STREAM_ID, status)
        if kind == SETTINGS:
            need(4)
            (count,) = struct.unpack_from("!I", payload)
            if len(payload) != 4 + 8 * count:
                raise ProtocolError("SETTINGS length does not match its entry count")
            entries = {}
            for i in range(count):
                key, value = struct.unpack_from("!II", payload, 4 + 8 * i)
                entries[key & 0xFFFFFF] = value
            return Settings(entries, flags)
        if kind == PING:
            need(4)
            return Ping(struct.unpack_from("!I", payload)[0])
        if kind == GOAWAY:
            need(4)
            last = struct.unpack_from("!I", payload)[0] & MAX_STREAM_ID
            status = struct.unpack_from("!I", payload, 4)[0] if len(payload) >= 8 else GOAWAY_OK
            return GoAway(last, status)
        if kind == WINDOW_UPDATE:
            need(8)
            sid, delta = struct.unpack_from("!II", payload)
            delta &= MAX_WINDOW
            if delta == 0:
                raise ProtocolError("WINDOW_UPDATE with a zero delta")
            return WindowUpdate(sid & MAX_STREAM_ID, delta)
        return None  # unknown control frames are ignored (draft 3, 2.2.1)
