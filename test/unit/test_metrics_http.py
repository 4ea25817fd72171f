"""narwhal.metrics_http: /metrics without aiohttp (issue 21, idle RSS) answers as aiohttp's server did: GET and
HEAD, keep-alive for Prometheus, 404/405 elsewhere, and a request it cannot frame refused, not hung."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from narwhal import metrics_http
from pkg.sockets import listen_tcp

TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
async def port() -> AsyncIterator[int]:
    socks = listen_tcp("127.0.0.1", 0)
    renders = 0

    async def render() -> bytes:
        nonlocal renders
        renders += 1
        return f"scrapes_total {renders}\n".encode()

    servers = await metrics_http.serve(socks, render, TYPE)
    yield int(socks[0].getsockname()[1])
    for server in servers:
        server.close()
        await server.wait_closed()


def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


async def test_get_head_and_other_paths_and_methods(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    assert await asyncio.to_thread(_get, f"{base}/metrics") == (200, TYPE, b"scrapes_total 1\n")
    assert await asyncio.to_thread(_get, f"{base}/metrics?x=1", "HEAD") == (200, TYPE, b"")
    assert await asyncio.to_thread(_get, f"{base}/") == (404, "text/plain; charset=utf-8", b"404: Not Found")
    assert (await asyncio.to_thread(_get, f"{base}/metrics", "POST"))[0] == 405


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()
        await writer.wait_closed()


async def test_keep_alive_serves_several_requests_on_one_connection(port: int) -> None:
    two = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = await _exchange(port, two)
    assert out.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: keep-alive" in out and out.endswith(b"\n")
    assert b"scrapes_total 1\n" in out and b"scrapes_total 2\n" in out
    old = await _exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n")  # 1.0 without keep-alive: closed after one
    assert old.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in old


@pytest.mark.parametrize("request_", [
    b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
    b"NONSENSE\r\n\r\n",
], ids=["chunked-body", "bad-length", "bad-request-line"])
async def test_unframable_requests_are_refused_and_closed(port: int, request_: bytes) -> None:
    out = await _exchange(port, request_)
    assert out.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in out
