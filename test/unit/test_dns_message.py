"""The embedded DNS server's wire format and its answers (no root: the server logic without sockets)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest

from pkg.docker.dns import message
from pkg.docker.dns.server import SandboxDNS, host_nameservers


def query(name: str, qtype: int = message.TYPE_A, qid: int = 0x1234, flags: int = message.FLAG_RD) -> bytes:
    return message.HEADER.pack(qid, flags, 1, 0, 0, 0) + message.encode_name(name) + struct.pack("!HH", qtype, 1)


def answers(reply: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """(flags, rcode, [(type, rdata)]) of a reply to a single-question query."""
    _, flags, qd, an, _, _ = message.HEADER.unpack_from(reply)
    offset = message.HEADER.size
    for _ in range(qd):
        _, offset = message._read_name(reply, offset)  # noqa: SLF001
        offset += 4
    records = []
    for _ in range(an):
        _, offset = message._read_name(reply, offset)  # noqa: SLF001
        rtype, _, _, length = struct.unpack_from("!HHIH", reply, offset)
        offset += 10
        records.append((rtype, reply[offset:offset + length]))
        offset += length
    return flags, flags & 0xF, records


def test_parse_query_and_names() -> None:
    q = message.parse_query(query("Web.MyNet."))
    assert q.id == 0x1234 and q.question is not None
    assert q.question.name == "web.mynet" and q.question.qtype == message.TYPE_A and q.question.qclass == 1
    # A compressed name pointing back at the question is followed.
    data = query("a.b") + b"\xc0\x0c"
    assert message._read_name(data, len(data) - 2) == ("a.b", len(data))  # noqa: SLF001


@pytest.mark.parametrize("data", [
    b"\x00\x01",  # shorter than a header
    message.HEADER.pack(1, 0, 1, 0, 0, 0) + b"\x05ab",  # label runs past the end
    message.HEADER.pack(1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
    message.HEADER.pack(1, 0, 1, 0, 0, 0) + b"\x01a\x00\x00",  # truncated question
])
def test_malformed_queries_are_refused(data: bytes) -> None:
    with pytest.raises(message.MalformedMessage):
        message.parse_query(data)


def test_response_shape_and_truncation() -> None:
    q = message.parse_query(query("a"))
    reply = message.response(q, answers=[message.address_record("10.0.0.2"), message.address_record("10.0.0.3")])
    flags, rcode, records = answers(reply)
    assert rcode == message.RCODE_NOERROR and flags & message.FLAG_QR and flags & message.FLAG_AA
    assert flags & message.FLAG_RD and not flags & message.FLAG_TC
    assert records == [(message.TYPE_A, bytes([10, 0, 0, 2])), (message.TYPE_A, bytes([10, 0, 0, 3]))]
    many = [message.address_record(f"10.0.{i // 250}.{i % 250 + 1}") for i in range(100)]
    flags, _, records = answers(message.response(q, answers=many, max_size=message.MAX_UDP))
    assert flags & message.FLAG_TC and 0 < len(records) < 100


def test_reverse_pointer_names() -> None:
    assert message.reverse_pointer_ip("2.5.200.10.in-addr.arpa") == "10.200.5.2"
    assert message.reverse_pointer_ip(ipaddress.ip_address("fd00::1").reverse_pointer) == "fd00::1"
    assert message.reverse_pointer_ip("x.5.200.10.in-addr.arpa") is None
    assert message.reverse_pointer_ip("example.com") is None


class Records:
    """A fixed table: web -> 10.0.0.2 and fd00::2, db -> (no addresses), others unknown."""

    def __init__(self, forward: bool = True) -> None:
        self.forward = forward

    def lookup(self, sandbox_id: str, name: str) -> list[str] | None:
        return {"web": ["10.0.0.2", "fd00::2"], "db": []}.get(name)

    def reverse(self, sandbox_id: str, ip: str) -> str | None:
        return "web.mynet" if ip == "10.0.0.2" else None

    def forwards(self, sandbox_id: str) -> bool:
        return self.forward

    def upstreams(self, sandbox_id: str) -> tuple[str, ...]:
        return ("127.0.0.11", "127.0.0.1") if sandbox_id == "custom" else ()


@pytest.fixture
def upstream() -> Iterator[tuple[int, list[bytes]]]:
    """A UDP "resolver" on loopback answering every query with 192.0.2.7; records what it got."""
    seen: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = False

    def serve() -> None:
        while not stop:
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            seen.append(data)
            q = message.parse_query(data)
            sock.sendto(message.response(q, answers=[message.address_record("192.0.2.7")], authoritative=False), addr)

    import threading
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], seen
    stop = True
    thread.join()
    sock.close()


async def test_answers_names_and_forwards_the_rest(upstream: tuple[int, list[bytes]]) -> None:
    port, seen = upstream
    server = SandboxDNS("sb", Records(), lambda: ["127.0.0.1"], upstream_port=port)
    _, rcode, records = answers(await server.answer(query("web"), tcp=False) or b"")
    assert rcode == 0 and records == [(message.TYPE_A, bytes([10, 0, 0, 2]))]
    _, _, records = answers(await server.answer(query("WEB", message.TYPE_AAAA), tcp=False) or b"")
    assert [r[0] for r in records] == [message.TYPE_AAAA]
    _, rcode, records = answers(await server.answer(query("db"), tcp=False) or b"")
    assert rcode == 0 and records == []  # known name without addresses: NOERROR, no data (not forwarded)
    _, _, records = answers(await server.answer(query("2.0.0.10.in-addr.arpa", message.TYPE_PTR), tcp=False) or b"")
    assert records == [(message.TYPE_PTR, message.encode_name("web.mynet"))]
    assert seen == []
    reply = await server.answer(query("example.com", qid=77), tcp=False) or b""
    assert struct.unpack_from("!H", reply)[0] == 77 and answers(reply)[2] == [(1, bytes([192, 0, 2, 7]))]
    assert len(seen) == 1 and message.parse_query(seen[0]).question.name == "example.com"  # type: ignore[union-attr]


async def test_internal_only_sandbox_forwards_nothing(upstream: tuple[int, list[bytes]]) -> None:
    port, seen = upstream
    server = SandboxDNS("sb", Records(forward=False), lambda: ["127.0.0.1"], upstream_port=port)
    _, rcode, _ = answers(await server.answer(query("example.com"), tcp=False) or b"")
    assert rcode == message.RCODE_SERVFAIL and seen == []
    _, rcode, records = answers(await server.answer(query("web"), tcp=False) or b"")
    assert rcode == 0 and records


async def test_garbage_and_unreachable_upstream() -> None:
    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nobody answers there: ICMP port unreachable, or a timeout
    server = SandboxDNS("sb", Records(), lambda: ["127.0.0.1"], upstream_port=port)
    assert await server.answer(b"\x01", tcp=False) is None
    _, rcode, _ = answers(await server.answer(message.HEADER.pack(9, 0, 1, 0, 0, 0) + b"\x05ab", tcp=False) or b"")
    assert rcode == message.RCODE_FORMERR
    _, rcode, _ = answers(await asyncio.wait_for(server.answer(query("example.com"), tcp=True), 10) or b"")
    assert rcode == message.RCODE_SERVFAIL


def test_host_nameservers(tmp_path: object) -> None:
    from pathlib import Path
    path = Path(str(tmp_path)) / "resolv.conf"
    path.write_text("search example.com\nnameserver 10.1.1.1\nnameserver bogus\nnameserver fe80::1%eth0\n")
    assert host_nameservers(path) == ["10.1.1.1", "fe80::1%eth0"]
    path.write_text("")
    assert host_nameservers(path) == ["8.8.8.8", "8.8.4.4"]


async def test_a_sandbox_forwards_to_its_own_servers(upstream: tuple[int, list[bytes]]) -> None:
    """docker run --dns X on a user-defined network: resolv.conf names 127.0.0.11, which forwards to X."""
    port, seen = upstream
    server = SandboxDNS("custom", Records(), lambda: ["192.0.2.99"], upstream_port=port)  # host's: unreachable
    _, rcode, records = answers(await server.answer(query("example.org"), tcp=False) or b"")
    assert rcode == 0 and records == [(1, bytes([192, 0, 2, 7]))] and len(seen) == 1
