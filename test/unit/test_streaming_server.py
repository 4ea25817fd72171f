"""The streaming server end to end over real sockets, against a fake backend: SPDY and WebSocket clients."""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from lib import spdy_client
from lib.fake_streaming import FakeBackend

from pkg import errors
from pkg.streaming.model import AttachRequest, ExecRequest, PortForwardRequest, TerminalSize
from pkg.streaming.server import StreamingServer
from pkg.streaming.tokens import TokenCache


@pytest.fixture
async def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def server(backend: FakeBackend) -> AsyncIterator[StreamingServer]:
    srv = StreamingServer(backend, "127.0.0.1:0", stream_creation_timeout=5)
    await srv.start()
    yield srv
    await srv.stop()
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not leaked, f"leaked tasks: {leaked}"


def exec_url(server: StreamingServer, *cmd: str, **kw: bool) -> str:
    return server.url_for(ExecRequest("c1", tuple(cmd), **kw))


# ---- SPDY remotecommand ----
async def test_exec_separates_stdout_and_stderr_and_reports_exit_code(server: StreamingServer) -> None:
    out, err, status = await spdy_client.run_exec(exec_url(server, "out-err", "to-out", "to-err", "3"))
    assert (out, err) == (b"to-out", b"to-err")
    assert status is not None
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert "non-zero exit code" in status["message"]


async def test_exec_success_status_and_stdin(server: StreamingServer) -> None:
    url = exec_url(server, "cat", stdin=True, stderr=False)
    out, err, status = await spdy_client.run_exec(url, stdin_data=b"hello\n" * 20000, stderr=False)
    assert out == b"hello\n" * 20000 and err == b""
    assert status == {"metadata": {}, "status": "Success"}


async def test_tty_exec_sees_resizes(server: StreamingServer) -> None:
    url = exec_url(server, "sizes", "2", tty=True, stderr=False)
    session = await spdy_client.open_exec(url, tty=True)
    assert session.stderr is None and session.resize is not None
    await session.resize_to(80, 24)
    await session.resize_to(132, 50)
    assert await spdy_client.read_all(session.stdout) == b"80x24\n132x50\n"
    assert (await session.status() or {})["status"] == "Success"
    await session.client.close()


async def test_negotiates_the_clients_first_supported_protocol(server: StreamingServer) -> None:
    client = await spdy_client.connect(exec_url(server, "out-err", "", "", "0"),
                                       ["v9.channel.k8s.io", "v3.channel.k8s.io", "v4.channel.k8s.io"])
    assert client.protocol == "v3.channel.k8s.io"
    await client.close()
    with pytest.raises(spdy_client.UpgradeRefused) as refused:
        await spdy_client.connect(exec_url(server, "cat"), ["v9.channel.k8s.io"])
    assert refused.value.status == 403


async def test_pre_v4_protocols_report_failures_as_text(server: StreamingServer) -> None:
    url = exec_url(server, "out-err", "", "", "7")
    session = await spdy_client.open_exec(url, protocols=["v2.channel.k8s.io"])
    await spdy_client.read_all(session.stdout)
    assert b"non-zero exit code" in await spdy_client.read_all(session.error)
    await session.client.close()


async def test_backend_errors_become_internal_error_status(server: StreamingServer) -> None:
    _, _, status = await spdy_client.run_exec(exec_url(server, "boom"))
    assert status is not None and status["reason"] == "InternalError" and status["code"] == 500
    assert "container is not running" in status["message"]


async def test_backend_bugs_still_end_the_session_with_a_status(server: StreamingServer) -> None:
    _, _, status = await spdy_client.run_exec(exec_url(server, "crash"))
    assert status is not None and status["reason"] == "InternalError" and "a bug" in status["message"]


async def test_client_going_away_cancels_the_command(server: StreamingServer, backend: FakeBackend) -> None:
    session = await spdy_client.open_exec(exec_url(server, "hang"))
    while backend.running == 0:
        await asyncio.sleep(0.01)
    await session.client.abort()
    while backend.running:
        await asyncio.sleep(0.01)
    assert backend.cancelled == [("hang",)]


async def test_streams_not_created_in_time_end_the_session(backend: FakeBackend) -> None:
    srv = StreamingServer(backend, "127.0.0.1:0", stream_creation_timeout=0.2)
    await srv.start()
    try:
        client = await spdy_client.connect(srv.url_for(ExecRequest("c1", ("cat",), stdin=True)),
                                           ["v4.channel.k8s.io"])
        error = await client.conn.open_stream({"streamtype": ["error"]})  # but never stdin/stdout/stderr
        assert await spdy_client.read_all(error) == b""
        await asyncio.wait_for(client.conn.closed.wait(), 10)
        await client.close()
        assert backend.running == 0 and not backend.cancelled
    finally:
        await srv.stop()


# ---- tokens ----
async def test_tokens_work_once(server: StreamingServer) -> None:
    url = exec_url(server, "out-err", "x", "", "0")
    await spdy_client.run_exec(url)
    with pytest.raises(spdy_client.UpgradeRefused) as refused:
        await spdy_client.run_exec(url)
    assert refused.value.status == 404


async def test_tokens_expire(server: StreamingServer) -> None:
    now = [1000.0]
    server.tokens = TokenCache(ttl=60, clock=lambda: now[0])
    url = exec_url(server, "out-err", "x", "", "0")
    now[0] += 61
    with pytest.raises(spdy_client.UpgradeRefused) as refused:
        await spdy_client.run_exec(url)
    assert refused.value.status == 404


def test_token_cache_bounds_and_kinds() -> None:
    now = [0.0]
    cache = TokenCache(ttl=10, max_in_flight=2, clock=lambda: now[0])
    a = cache.mint(ExecRequest("c", ("ls",)))
    cache.mint(AttachRequest("c"))
    with pytest.raises(errors.ResourceExhausted):
        cache.mint(PortForwardRequest("p"))
    assert cache.consume(a) == ExecRequest("c", ("ls",))
    assert cache.consume(a) is None
    now[0] = 10.0
    assert len(cache) == 0
    assert len({cache.mint(PortForwardRequest("p")), cache.mint(PortForwardRequest("p"))}) == 2


async def test_plain_requests_are_refused(server: StreamingServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(exec_url(server, "cat")) as resp:
            assert resp.status == 400
        async with http.get(f"{server.base_url}/exec/nope") as resp:
            assert resp.status == 404


# ---- attach ----
async def test_attach_receives_output_and_delivers_stdin(server: StreamingServer, backend: FakeBackend) -> None:
    url = server.url_for(AttachRequest("c1", stdin=True, stdout=True, stderr=True))
    out, err, status = await spdy_client.run_exec(url, stdin_data=b"hi")
    assert (out, err) == (b"hi", b"err:hi")
    assert status == {"metadata": {}, "status": "Success"}
    assert backend.containers["c1"].stdin_closed  # stdin_once: the client's EOF closed the container's stdin


async def test_attach_tty_merges_output_and_resizes(server: StreamingServer, backend: FakeBackend) -> None:
    stdio = backend.containers["c1"]
    stdio.tty = True
    url = server.url_for(AttachRequest("c1", tty=True, stdin=True, stdout=True, stderr=False))
    session = await spdy_client.open_exec(url, stdin=True, tty=True)
    await session.resize_to(100, 40)
    assert session.stdin is not None
    await session.stdin.write(b"abc")
    assert session.stdout is not None
    got = b""
    while got != b"abcerr:abc":  # a TTY merges stderr into stdout
        got += await session.stdout.read()
    await session.stdin.close()  # with a TTY, closing stdin detaches: the session ends, the container runs on
    assert await spdy_client.read_all(session.stdout) == b""
    assert await session.status() == {"metadata": {}, "status": "Success"}
    await session.client.close()
    assert stdio.resizes == [TerminalSize(100, 40)] and not stdio.stdin_closed


# ---- WebSocket remotecommand ----
async def ws_exec(url: str, protocol: str, stdin: bytes | None = None) -> dict[int, bytes]:
    b64 = "base64" in protocol
    got: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws", 1),
                                                                protocols=[protocol]) as ws:
        assert ws.protocol == protocol
        if stdin is not None:
            await (ws.send_str("0" + base64.b64encode(stdin).decode()) if b64 else ws.send_bytes(b"\0" + stdin))
            await ws.send_bytes(bytes([255, 0]))  # v5 close signal for stdin
        async for msg in ws:
            raw = msg.data
            channel, data = (int(raw[0]), base64.b64decode(raw[1:])) if b64 else (raw[0], raw[1:])
            got[channel] = got.get(channel, b"") + data
    return got


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io"])
async def test_websocket_exec(server: StreamingServer, protocol: str) -> None:
    got = await ws_exec(exec_url(server, "out-err", "o", "e", "2"), protocol)
    assert got[1] == b"o" and got[2] == b"e"
    status = json.loads(got[3])
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "2"}


async def test_websocket_v5_stdin_close_signal(server: StreamingServer) -> None:
    got = await ws_exec(exec_url(server, "cat", stdin=True, stderr=False), "v5.channel.k8s.io", stdin=b"data")
    assert got[1] == b"data"
    assert json.loads(got[3])["status"] == "Success"


# ---- port-forward ----
@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        body = b"hello from " + request.split(b" ")[1]
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


async def test_spdy_port_forward_several_connections_at_once(server: StreamingServer, http_port: int) -> None:
    client = await spdy_client.connect(server.url_for(PortForwardRequest("pod1")), ["portforward.k8s.io"])
    assert client.protocol == "portforward.k8s.io"
    results = await asyncio.gather(*(
        spdy_client.forward_once(client, http_port, str(i), f"GET /{i} HTTP/1.0\r\n\r\n".encode())
        for i in range(5)))
    for i, (reply, err) in enumerate(results):
        assert reply.endswith(f"hello from /{i}".encode()) and err == b""
    await client.close()


async def test_spdy_port_forward_reports_dial_errors(server: StreamingServer, http_port: int) -> None:
    client = await spdy_client.connect(server.url_for(PortForwardRequest("pod1")), ["portforward.k8s.io"])
    reply, err = await spdy_client.forward_once(client, 1, "r1", b"")
    assert reply == b"" and b"nothing listens on port 1" in err
    await client.close()


async def test_websocket_port_forward(server: StreamingServer, http_port: int) -> None:
    url = server.url_for(PortForwardRequest("pod1", (http_port,))).replace("http", "ws", 1)
    got: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=["v4.channel.k8s.io"]) as ws:
        await ws.send_bytes(b"\0GET /ws HTTP/1.0\r\n\r\n")
        async for msg in ws:
            got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
    port_prefix = http_port.to_bytes(2, "little")
    assert got[0].startswith(port_prefix) and got[0].endswith(b"hello from /ws")
    assert got[1] == port_prefix


async def test_streams_beyond_the_expected_ones_are_refused(server: StreamingServer, backend: FakeBackend) -> None:
    session = await spdy_client.open_exec(exec_url(server, "hang"))
    while backend.running == 0:
        await asyncio.sleep(0.01)
    extra = await session.client.conn.open_stream({"streamtype": ["stdout"]})
    assert await spdy_client.read_all(extra) == b"" and extra.reset
    await session.client.close()


async def test_idle_sessions_are_closed(backend: FakeBackend) -> None:
    srv = StreamingServer(backend, "127.0.0.1:0", idle_timeout=0.2)
    await srv.start()
    try:
        session = await spdy_client.open_exec(srv.url_for(ExecRequest("c1", ("hang",))))
        await asyncio.wait_for(session.client.conn.closed.wait(), 30)  # the server hung up
        await session.client.close()
        url = srv.url_for(ExecRequest("c1", ("hang",))).replace("http", "ws", 1)
        async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=["v4.channel.k8s.io"]) as ws:
            assert [msg async for msg in ws] == []  # closed by the server without output
        while backend.running:
            await asyncio.sleep(0.01)
        assert backend.cancelled == [("hang",), ("hang",)]
    finally:
        await srv.stop()


async def test_stop_ends_running_sessions(backend: FakeBackend) -> None:
    srv = StreamingServer(backend, "127.0.0.1:0")
    await srv.start()
    session = await spdy_client.open_exec(srv.url_for(ExecRequest("c1", ("hang",))))
    while backend.running == 0:
        await asyncio.sleep(0.01)
    await srv.stop()
    assert backend.cancelled == [("hang",)]
    await asyncio.wait_for(session.client.conn.closed.wait(), 30)
    await session.client.close()
    with pytest.raises(errors.Unavailable):
        srv.url_for(ExecRequest("c1", ("ls",)))
