"""The streaming server over the wire into real processes: exec in a runc task through SPDY and
WebSocket clients, and port-forward into a network namespace."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from lib import ctrtask, spdy_client
from lib.daemon import DaemonProcess, start_daemon

from pkg import errors
from pkg.cni import netns
from pkg.containerd.client import Client
from pkg.runtime.exec import run_exec
from pkg.streaming.backend import ContainerStdio, ExecStreams
from pkg.streaming.model import ExecRequest, PortForwardRequest
from pkg.streaming.netns_dial import dial_in_netns
from pkg.streaming.server import StreamingServer
from pkg.streaming.spdy_conn import SpdyStream


class TaskBackend:
    """The streaming backend the runtime will provide, reduced to what these tests need."""

    def __init__(self, client: Client, fifo_root: Path, pods: dict[str, Path]) -> None:
        self.client, self.fifo_root, self.pods = client, fifo_root, pods

    async def check_container_running(self, container_id: str) -> None:
        pass

    async def check_sandbox_ready(self, sandbox_id: str) -> None:
        if sandbox_id not in self.pods:
            raise errors.NotFound(sandbox_id)

    async def exec(self, container_id: str, cmd: Sequence[str], streams: ExecStreams) -> int:
        return await run_exec(self.client, container_id, cmd, streams, fifo_root=self.fifo_root)

    async def attach_stdio(self, container_id: str) -> ContainerStdio:
        raise errors.NotImplementedYet("attach needs the runtime")

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.check_sandbox_ready(sandbox_id)
        return await dial_in_netns(self.pods[sandbox_id], port)


@pytest.fixture(scope="module")
def narwhald() -> Iterator[DaemonProcess]:
    d = start_daemon()
    yield d
    d.destroy()


@pytest.fixture
async def client(narwhald: DaemonProcess) -> AsyncIterator[Client]:
    c = Client(narwhald.state / "containerd" / "containerd.sock", ctrtask.NAMESPACE)
    yield c
    await c.close()


@pytest.fixture
async def pod_netns(narwhald: DaemonProcess) -> AsyncIterator[Path]:
    path = await netns.create(narwhald.state / "test-netns" / f"pod-{os.getpid()}")
    yield path
    await netns.remove(path)


@pytest.fixture
async def backend(client: Client, narwhald: DaemonProcess, pod_netns: Path) -> TaskBackend:
    fifo_root = narwhald.state / "exec"
    fifo_root.mkdir(exist_ok=True)
    return TaskBackend(client, fifo_root, {"pod1": pod_netns})


@pytest.fixture
async def server(backend: TaskBackend) -> AsyncIterator[StreamingServer]:
    srv = StreamingServer(backend, "127.0.0.1:0")
    await srv.start()
    yield srv
    await srv.stop()
    assert os.listdir(backend.fifo_root) == []


@pytest.fixture
async def task(client: Client, narwhald: DaemonProcess) -> AsyncIterator[ctrtask.RunningTask]:
    t = await ctrtask.start_task(client, narwhald.base, narwhald.state / "runc")
    yield t
    await t.destroy()


STTY_LINE = rb"(?m)^(?:(\d+) (\d+)|stty:.*)\r?$"  # `stty size` output, or its complaint


async def read_until(stream: SpdyStream, buf: bytearray, pattern: bytes, start: int = 0) -> re.Match[bytes]:
    while (found := re.search(pattern, bytes(buf[start:]))) is None:
        chunk = await stream.read()
        if not chunk:
            raise AssertionError(f"stream ended before {pattern!r}: {bytes(buf)!r}")
        buf += chunk
    return found


async def test_spdy_exec_separates_streams_and_reports_the_exit_code(
        server: StreamingServer, task: ctrtask.RunningTask) -> None:
    url = server.url_for(ExecRequest(task.container_id, ("sh", "-c", "echo o; echo e >&2; exit 5")))
    out, err, status = await spdy_client.run_exec(url)
    assert (out, err) == (b"o\n", b"e\n")
    assert status is not None and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    assert await task.pids() == [task.pid]


async def test_spdy_tty_exec_sees_stty_size_change(server: StreamingServer, task: ctrtask.RunningTask) -> None:
    url = server.url_for(ExecRequest(task.container_id,
                                     ("sh", "-c", "while read l; do [ \"$l\" = q ] && exit 3; stty size; done"),
                                     tty=True, stdin=True, stderr=False))
    session = await spdy_client.open_exec(url, stdin=True, tty=True)
    assert session.stdin is not None and session.stdout is not None
    buf = bytearray()
    for width, height in ((90, 25), (140, 45)):
        await session.resize_to(width, height)
        for _ in range(50):  # resize and newline travel separately: ask until the new size shows
            mark = len(buf)
            await session.stdin.write(b"\n")
            try:
                found = await asyncio.wait_for(read_until(session.stdout, buf, STTY_LINE, mark), 30)
            except TimeoutError:
                raise AssertionError(f"no stty output after {bytes(buf[:mark])!r}: {bytes(buf[mark:])!r}") from None
            if found.group(1) and (int(found.group(1)), int(found.group(2))) == (height, width):
                break
        else:
            raise AssertionError(f"stty size never showed {height} {width}: {bytes(buf)!r}")
    await session.stdin.write(b"q\n")
    await spdy_client.read_all(session.stdout)
    status = await session.status()
    assert status is not None and status["details"]["causes"][0]["message"] == "3"
    await session.client.close()


async def test_client_going_away_kills_the_exec(server: StreamingServer, task: ctrtask.RunningTask) -> None:
    url = server.url_for(ExecRequest(task.container_id, ("sh", "-c", "echo started; sleep 600")))
    session = await spdy_client.open_exec(url)
    assert session.stdout is not None
    await asyncio.wait_for(read_until(session.stdout, bytearray(), rb"started"), 30)
    assert len(await task.pids()) > 1
    await session.client.abort()
    for _ in range(200):
        if await task.pids() == [task.pid]:
            break
        await asyncio.sleep(0.1)
    assert await task.pids() == [task.pid]


async def test_websocket_v5_exec_with_stdin(server: StreamingServer, task: ctrtask.RunningTask) -> None:
    url = server.url_for(ExecRequest(task.container_id, ("sh", "-c", "wc -c; exit 2"), stdin=True))
    got: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws", 1),
                                                                protocols=["v5.channel.k8s.io"]) as ws:
        await ws.send_bytes(b"\0" + b"x" * 100_000)
        await ws.send_bytes(bytes([255, 0]))
        async for msg in ws:
            got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
    assert got[1].strip() == b"100000"
    assert json.loads(got[3])["details"]["causes"][0]["message"] == "2"


# ---- port-forward into a network namespace ----
@pytest.fixture
async def pod_http(pod_netns: Path) -> AsyncIterator[int]:
    """An HTTP responder listening on 127.0.0.1 inside the pod's netns (a socket made in the netns)."""
    def listen() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        return sock

    sock = await netns.run_in_netns(pod_netns, listen)
    port = sock.getsockname()[1]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        body = b"pod says " + request.split(b" ")[1]
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, sock=sock)
    yield port
    srv.close()
    await srv.wait_closed()


async def test_spdy_port_forward_into_the_pod_netns(server: StreamingServer, pod_http: int) -> None:
    with pytest.raises(OSError):  # the port is the pod's, not the host's
        socket.create_connection(("127.0.0.1", pod_http), timeout=2).close()
    client = await spdy_client.connect(server.url_for(PortForwardRequest("pod1", (pod_http,))),
                                       ["portforward.k8s.io"])
    results = await asyncio.gather(*(
        spdy_client.forward_once(client, pod_http, str(i), f"GET /{i} HTTP/1.0\r\n\r\n".encode())
        for i in range(8)))
    for i, (reply, err) in enumerate(results):
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(f"pod says /{i}".encode()) and err == b""
    reply, err = await spdy_client.forward_once(client, 1, "closed-port", b"")
    assert b"nothing listens on port 1" in err
    await client.close()


async def test_websocket_port_forward_into_the_pod_netns(server: StreamingServer, pod_http: int) -> None:
    url = server.url_for(PortForwardRequest("pod1", (pod_http,))).replace("http", "ws", 1)
    got: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(url,
                                                                protocols=["v4.base64.channel.k8s.io"]) as ws:
        await ws.send_str("0" + base64.b64encode(b"GET /ws HTTP/1.0\r\n\r\n").decode())
        async for msg in ws:
            ch = int(msg.data[0])
            got[ch] = got.get(ch, b"") + base64.b64decode(msg.data[1:])
    assert got[0][2:].endswith(b"pod says /ws")


async def test_critest_exec_shapes(server: StreamingServer, task: ctrtask.RunningTask) -> None:
    """critest's exec specs: `echo hello` gives exactly "hello\\n", and with tty+stdin "hello\\r\\n"."""
    out, err, status = await spdy_client.run_exec(server.url_for(ExecRequest(task.container_id, ("echo", "hello"))))
    assert (out, err, status) == (b"hello\n", b"", {"metadata": {}, "status": "Success"})
    session = await spdy_client.open_exec(server.url_for(ExecRequest(
        task.container_id, ("echo", "hello"), tty=True, stdin=True, stderr=False)), stdin=True, tty=True)
    assert session.stdin is not None
    out = await spdy_client.read_all(session.stdout)  # critest keeps stdin open until it has the output
    await session.stdin.close()
    assert out == b"hello\r\n"
    assert await session.status() == {"metadata": {}, "status": "Success"}
    await session.client.close()
