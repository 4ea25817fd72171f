"""The embedded DNS server: one per sandbox on a user-defined network, at 127.0.0.11:53 in its netns.

Docker answers container names, short IDs and aliases on 127.0.0.11 and
forwards everything else to the host's resolvers.  Here the UDP and TCP
sockets are created *inside* the sandbox's network namespace (on a thread
that joined it, see pkg.cni.netns.run_in_netns), on random ports that a NAT
rule there maps 127.0.0.11:53 to (redirect.py), and then served by
narwhald's event loop; forwarded queries leave from narwhald's own
namespace, so host resolvers on loopback (systemd-resolved) work too.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.cni.netns import run_in_netns
from pkg.docker.dns import message, redirect

log = logging.getLogger(__name__)

ADDRESS = "127.0.0.11"
PORT = 53
FORWARD_TIMEOUT = 3.0
TCP_IDLE_TIMEOUT = 10.0
MAX_INFLIGHT = 256  # per sandbox: a flood is dropped, not queued without bound
MAX_TCP_CLIENTS = 64  # per sandbox
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


class Records(Protocol):
    def lookup(self, sandbox_id: str, name: str) -> list[str] | None:
        """The addresses ``name`` has for this sandbox (possibly none), or None when it is not a
        container name: the query is then forwarded."""

    def reverse(self, sandbox_id: str, ip: str) -> str | None:
        """The container name an address of this sandbox's networks belongs to, if any."""

    def forwards(self, sandbox_id: str) -> bool:
        """False when the sandbox has no way out (internal networks only): nothing is forwarded."""

    def upstreams(self, sandbox_id: str) -> tuple[str, ...]:
        """The resolvers the container asked for (docker run --dns); empty: the host's."""


def host_nameservers(path: Path = HOST_RESOLV_CONF) -> list[str]:
    """The host's resolvers (blocking read); Google's as Docker's last resort when none are usable."""
    servers: list[str] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                ipaddress.ip_address(fields[1].split("%", 1)[0])
            except ValueError:
                continue
            servers.append(fields[1])
    return servers or ["8.8.8.8", "8.8.4.4"]


def _bind(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ADDRESS, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_both(port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on ``port`` (0: each its own random port), on the calling thread's netns."""
    udp = _bind(socket.SOCK_DGRAM, port)
    try:
        return udp, _bind(socket.SOCK_STREAM, port)
    except BaseException:
        udp.close()
        raise


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: SandboxDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = await self.server.answer(data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class SandboxDNS:
    """The server of one sandbox: its sockets, in-flight queries and what it answers."""

    def __init__(self, sandbox_id: str, records: Records, upstream: Callable[[], list[str]],
                 upstream_port: int = PORT) -> None:
        self.sandbox_id = sandbox_id
        self.records = records
        self.upstream = upstream
        self.upstream_port = upstream_port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._tcp_clients = 0

    async def start(self, netns_path: Path) -> None:
        """Listen in the sandbox's netns: on random ports that a NAT rule there maps 127.0.0.11:53 to (so
        port 53 stays free for the container), or on port 53 itself where iptables is missing."""
        udp_sock, tcp_sock = await run_in_netns(netns_path, lambda: _bind_both(0))
        try:
            if redirect.available():
                await redirect.install(netns_path, ADDRESS, udp_sock.getsockname()[1], tcp_sock.getsockname()[1])
            else:
                udp_sock.close()
                tcp_sock.close()
                udp_sock, tcp_sock = await run_in_netns(netns_path, lambda: _bind_both(PORT))
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=udp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise
        self._udp = transport
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        except BaseException:
            tcp_sock.close()
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def spawn(self, coro: Any) -> None:
        if len(self._inflight) >= MAX_INFLIGHT:
            coro.close()
            return
        task = create_guarded_task(lambda: coro, f"dns-{self.sandbox_id[:12]}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= MAX_TCP_CLIENTS:  # a container opening connections without end
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                reply = await self.answer(data, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._tcp_clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query (None: drop it, as for garbage that is not even a header)."""
        try:
            query = message.parse_query(data)
        except message.MalformedMessage:
            if len(data) < message.HEADER.size:
                return None
            return message.response(message.Query(struct.unpack_from("!H", data)[0], 0, None),
                                    message.RCODE_FORMERR)
        q = query.question
        limit = 0 if tcp else message.MAX_UDP
        if q is None or query.flags & message.FLAG_QR:
            return message.response(query, message.RCODE_FORMERR)
        if q.qclass == message.CLASS_IN and q.qtype in (message.TYPE_A, message.TYPE_AAAA):
            found = self.records.lookup(self.sandbox_id, q.name)
            if found is not None:
                want = 4 if q.qtype == message.TYPE_A else 6
                answers = [message.address_record(ip) for ip in found if ipaddress.ip_address(ip).version == want]
                return message.response(query, answers=answers, max_size=limit)
        if q.qclass == message.CLASS_IN and q.qtype == message.TYPE_PTR:
            ip = message.reverse_pointer_ip(q.name)
            owner = self.records.reverse(self.sandbox_id, ip) if ip else None
            if owner:
                return message.response(query, answers=[message.ptr_record(owner)], max_size=limit)
        if not self.records.forwards(self.sandbox_id):
            return message.response(query, message.RCODE_SERVFAIL, authoritative=False)
        reply = await self._forward(data, tcp)
        if reply is None:
            return message.response(query, message.RCODE_SERVFAIL, authoritative=False)
        return reply

    async def _forward(self, data: bytes, tcp: bool) -> bytes | None:
        servers = [s for s in self.records.upstreams(self.sandbox_id) if s != ADDRESS]
        if not servers:
            servers = await asyncio.to_thread(self.upstream)
        for server in servers:
            try:
                if tcp:
                    return await asyncio.wait_for(_forward_tcp(server, self.upstream_port, data), FORWARD_TIMEOUT)
                return await asyncio.wait_for(_forward_udp(server, self.upstream_port, data), FORWARD_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("DNS forward to %s failed: %s", server, exc)
        return None


async def _forward_udp(server: str, port: int, data: bytes) -> bytes:
    family = socket.AF_INET6 if ipaddress.ip_address(server.split("%", 1)[0]).version == 6 else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (server, port))
        await loop.sock_sendall(sock, data)
        while True:
            reply = await loop.sock_recv(sock, 65535)
            if len(reply) >= 2 and reply[:2] == data[:2]:  # same ID: not a stray or spoofed answer
                return reply


async def _forward_tcp(server: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        head = await reader.readexactly(2)
        return await reader.readexactly(struct.unpack("!H", head)[0])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class DNSServers:
    """Every sandbox's server; started when a sandbox joins its first user-defined network."""

    def __init__(self, records: Records, upstream: Callable[[], list[str]] = host_nameservers) -> None:
        self.records = records
        self.upstream = upstream
        self._servers: dict[str, SandboxDNS] = {}
        self._lock = asyncio.Lock()

    def running(self, sandbox_id: str) -> bool:
        return sandbox_id in self._servers

    async def ensure(self, sandbox_id: str, netns_path: Path) -> None:
        async with self._lock:
            if sandbox_id in self._servers:
                return
            server = SandboxDNS(sandbox_id, self.records, self.upstream)
            try:
                await server.start(netns_path)
            except OSError as exc:
                raise errors.Internal(f"embedded DNS server for {sandbox_id[:12]}: {exc.strerror or exc}") from None
            self._servers[sandbox_id] = server
            log.info("embedded DNS for sandbox %s on %s:%d", sandbox_id[:12], ADDRESS, PORT)

    async def stop(self, sandbox_id: str) -> None:
        async with self._lock:
            server = self._servers.pop(sandbox_id, None)
        if server is not None:
            await server.stop()

    async def stop_all(self) -> None:
        for sandbox_id in list(self._servers):
            await self.stop(sandbox_id)
