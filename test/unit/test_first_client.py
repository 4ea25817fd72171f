"""pkg.sockets.FirstClient: a server loaded when its first client connects (issue 21, idle RSS).  Clients that
connect before it serves wait in the backlog and are all served; it loads once; a failed load refuses
clients instead of leaving them hanging; a shutdown before (or during) the load leaves no socket open."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from pkg.sockets import FirstClient, listen_tcp, listen_unix


async def _echo_server(socks: list[socket.socket], servers: list[asyncio.Server]) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"served:" + await reader.readline())
        await writer.drain()
        writer.close()

    for sock in socks:
        servers.append(await asyncio.start_unix_server(echo, sock=sock))


async def _ask(path: Path) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"hi\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_clients_before_the_load_are_served_and_it_loads_once(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    loads: list[int] = []
    servers: list[asyncio.Server] = []
    go = asyncio.Event()

    async def serve(socks: list[socket.socket]) -> None:
        loads.append(1)
        await go.wait()  # a slow import: clients keep arriving meanwhile
        await _echo_server(socks, servers)

    first = FirstClient([listen_unix(path, backlog=16)], serve, "test API")
    first.arm()
    assert path.stat().st_mode & 0o777 == 0o660
    asks = [asyncio.create_task(_ask(path)) for _ in range(5)]
    await asyncio.wait_for(_until(lambda: bool(loads)), 10)
    assert not first.loaded and not any(a.done() for a in asks)
    go.set()
    assert await asyncio.gather(*asks) == [b"served:hi\n"] * 5
    assert loads == [1] and first.loaded and first.error is None
    await first.close()  # a loaded server keeps its sockets: it closes them itself
    assert await _ask(path) == b"served:hi\n"
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_failed_load_refuses_clients(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"

    async def serve(socks: list[socket.socket]) -> None:
        raise RuntimeError("no such module")

    first = FirstClient([listen_unix(path, backlog=16)], serve, "test API")
    first.arm()
    try:
        answer = await _ask(path)  # queued, then dropped when the load fails: never left hanging
    except ConnectionError:
        answer = b""
    assert answer == b""
    assert isinstance(first.error, RuntimeError) and not first.loaded
    await first.load()  # once: a second load does not try again
    assert str(first.error) == "no such module"
    with pytest.raises(ConnectionError):
        await _ask(path)
    await first.close()


async def test_close_before_any_client_or_during_the_load_closes_the_sockets(tmp_path: Path) -> None:
    idle = FirstClient([listen_unix(tmp_path / "idle.sock", backlog=16)], _never, "idle API")
    idle.arm()
    await idle.close()
    assert all(s.fileno() == -1 for s in idle.sockets)

    started = asyncio.Event()

    async def hanging(socks: list[socket.socket]) -> None:
        started.set()
        await asyncio.Event().wait()

    loading = FirstClient([listen_unix(tmp_path / "loading.sock", backlog=16)], hanging, "loading API")
    task = loading.load()
    await asyncio.wait_for(started.wait(), 10)
    await loading.close()
    assert task.cancelled() and all(s.fileno() == -1 for s in loading.sockets)


def test_listen_tcp_port_zero() -> None:
    socks = listen_tcp("127.0.0.1", 0)
    try:
        assert len(socks) == 1 and socks[0].getsockname()[1] > 0
        probe = socket.create_connection(socks[0].getsockname()[:2], timeout=5)  # queued, not refused
        probe.close()
    finally:
        for s in socks:
            s.close()


async def _never(socks: list[socket.socket]) -> None:
    raise AssertionError("no client came: nothing to load")


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)
