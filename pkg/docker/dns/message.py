"""The little of the DNS wire format (RFC 1035) the embedded server needs.

It reads the header and the first question of a query and builds answers
with A, AAAA and PTR records; everything else is forwarded untouched, so a
full parser is not needed.  Malformed packets raise ``MalformedMessage``.
"""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

TYPE_A, TYPE_PTR, TYPE_AAAA = 1, 12, 28
CLASS_IN = 1
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 1, 2, 3, 5
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD, FLAG_RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800
HEADER = struct.Struct("!HHHHHH")
MAX_UDP = 512
TTL = 600
_MAX_POINTERS = 32


class MalformedMessage(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    name: str  # lower case, no trailing dot ("" for the root)
    qtype: int
    qclass: int
    raw: bytes  # the question section as it came (echoed in answers)


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    question: Question | None


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``offset``; the offset after it in the original position."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if offset >= len(data):
            raise MalformedMessage("name runs past the end")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise MalformedMessage("truncated pointer")
            jumps += 1
            if jumps > _MAX_POINTERS:
                raise MalformedMessage("pointer loop")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise MalformedMessage("unsupported label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise MalformedMessage("label runs past the end")
        labels.append(data[offset:offset + length].decode("ascii", errors="replace"))
        offset += length
    return ".".join(labels).lower(), (end if end >= 0 else offset)


def parse_query(data: bytes) -> Query:
    if len(data) < HEADER.size:
        raise MalformedMessage("shorter than a header")
    qid, flags, qdcount, _, _, _ = HEADER.unpack_from(data)
    if qdcount == 0:
        return Query(qid, flags, None)
    name, end = _read_name(data, HEADER.size)
    if end + 4 > len(data):
        raise MalformedMessage("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, end)
    return Query(qid, flags, Question(name, qtype, qclass, data[HEADER.size:end + 4]))


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.strip(".").split(".") if name.strip(".") else []:
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def response(query: Query, rcode: int = RCODE_NOERROR, answers: Sequence[tuple[int, bytes]] = (),
             authoritative: bool = True, max_size: int = 0) -> bytes:
    """An answer to ``query``: records are (type, rdata) for the question's name.  With ``max_size``
    (UDP) records that do not fit are dropped and TC set, so the client retries over TCP."""
    flags = FLAG_QR | (query.flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | rcode
    if authoritative:
        flags |= FLAG_AA
    question = query.question.raw if query.question is not None else b""
    body = bytearray()
    count = 0
    for rtype, rdata in answers:
        record = struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(rdata)) + rdata
        if max_size and HEADER.size + len(question) + len(body) + len(record) > max_size:
            flags |= FLAG_TC
            break
        body += record
        count += 1
    header = HEADER.pack(query.id, flags, 1 if question else 0, count, 0, 0)
    return header + question + bytes(body)


def address_record(ip: str) -> tuple[int, bytes]:
    addr = ipaddress.ip_address(ip)
    return (TYPE_A if addr.version == 4 else TYPE_AAAA), addr.packed


def ptr_record(name: str) -> tuple[int, bytes]:
    return TYPE_PTR, encode_name(name)


def reverse_pointer_ip(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` → ``1.2.3.4`` (and ip6.arpa); None for other names."""
    if name.endswith(".in-addr.arpa"):
        parts = name.removesuffix(".in-addr.arpa").split(".")
        if len(parts) == 4:
            try:
                return str(ipaddress.IPv4Address(".".join(reversed(parts))))
            except ValueError:
                return None
    if name.endswith(".ip6.arpa"):
        nibbles = name.removesuffix(".ip6.arpa").split(".")
        if len(nibbles) == 32 and all(len(n) == 1 for n in nibbles):
            hexed = "".join(reversed(nibbles))
            try:
                return str(ipaddress.IPv6Address(int(hexed, 16)))
            except ValueError:
                return None
    return None
