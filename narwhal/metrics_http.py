"""``GET /metrics`` over plain asyncio streams: what Prometheus needs, without aiohttp's server.

A scrape every 15 s would otherwise import aiohttp (~10 MiB of idle RSS, issue 21) into a daemon that serves
kubelet only.  HTTP/1.1 with keep-alive (Prometheus reuses its connection), HEAD, 404 for other paths and 405
for other methods, as aiohttp answered them; a request with a body it cannot frame is refused (400) and the
connection closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

IDLE_TIMEOUT = 75.0  # a kept-alive connection with no next request is closed (aiohttp's keepalive_timeout)
MAX_HEAD = 16 << 10
MAX_BODY = 64 << 10

Render = Callable[[], Awaitable[bytes]]


async def serve(socks: list[socket.socket], render: Render, content_type: str) -> list[asyncio.Server]:
    """Serve /metrics on listening sockets until the returned servers are closed."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await _one(reader, writer, render, content_type):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return [await asyncio.start_server(client, sock=sock, limit=MAX_HEAD) for sock in socks]


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, render: Render,
               content_type: str) -> bool:
    """Answer one request; True when the connection stays open for the next."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    line, *fields = head[:-4].decode("latin-1").split("\r\n")
    parts = line.split(" ")
    headers = {name.strip().lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        await _answer(writer, 400, b"400: Bad Request", "text/plain; charset=utf-8", keep=False)
        return False
    method, target, version = parts
    length = headers.get("content-length", "0")
    if "transfer-encoding" in headers or not length.isdigit() or int(length) > MAX_BODY:
        await _answer(writer, 400, b"400: Bad Request", "text/plain; charset=utf-8", keep=False)
        return False
    if int(length):
        await reader.readexactly(int(length))
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    path = target.split("?", 1)[0]
    if path != "/metrics":
        await _answer(writer, 404, b"404: Not Found", "text/plain; charset=utf-8", keep=keep, head=method == "HEAD")
    elif method not in ("GET", "HEAD"):
        await _answer(writer, 405, b"405: Method Not Allowed", "text/plain; charset=utf-8", keep=keep,
                      extra="Allow: GET,HEAD\r\n")
    else:
        await _answer(writer, 200, await render(), content_type, keep=keep, head=method == "HEAD")
    return keep


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, *, keep: bool,
                  head: bool = False, extra: str = "") -> None:
    writer.write((f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n{extra}Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
                  ).encode("latin-1"))
    if not head:
        writer.write(body)
    await writer.drain()
