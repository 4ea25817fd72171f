"""Interoperability with moby/spdystream, the SPDY library inside kubelet, client-go and crictl.

test/lib/spdyinterop/main.go is built against Debian's golang-github-docker-spdystream-dev
(GOPATH mode, offline) and driven at the streaming server; skipped when Go or the package is
missing.  The fake backend is enough here: real exec and netns dialing have their own tests.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lib.fake_streaming import FakeBackend

from pkg.streaming.model import ExecRequest, PortForwardRequest
from pkg.streaming.server import StreamingServer

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).resolve().parents[1] / "lib" / "spdyinterop"


@pytest.fixture(scope="module")
def spdyinterop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None or not (GOPATH / "src/github.com/moby/spdystream/connection.go").exists():
        pytest.skip("needs golang-go and golang-github-docker-spdystream-dev")
    out = tmp_path_factory.mktemp("go") / "spdyinterop"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(out.parent / "cache"),
           "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=SOURCE, env=env, check=True, timeout=300)
    return out


@pytest.fixture
async def server() -> AsyncIterator[StreamingServer]:
    srv = StreamingServer(FakeBackend(), "127.0.0.1:0")
    await srv.start()
    yield srv
    await srv.stop()


async def run_tool(tool: Path, *args: str, stdin: bytes = b"") -> Any:
    proc = await asyncio.create_subprocess_exec(str(tool), *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_spdystream_exec_gets_streams_and_exit_status(spdyinterop: Path, server: StreamingServer) -> None:
    result = await run_tool(spdyinterop, "exec", server.url_for(ExecRequest("c1", ("out-err", "O", "E", "3"))))
    assert (result["stdout"], result["stderr"]) == ("O", "E")
    status = json.loads(result["error"])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_spdystream_exec_moves_more_than_a_window_both_ways(spdyinterop: Path,
                                                                  server: StreamingServer) -> None:
    # spdystream never sends WINDOW_UPDATE: a server enforcing windows on it would stall at 64 KiB.
    payload = os.urandom(300_000).hex().encode()
    result = await run_tool(spdyinterop, "exec", server.url_for(ExecRequest("c1", ("cat",), stdin=True)),
                            "stdin", stdin=payload)
    assert result["stdout"].encode() == payload
    assert json.loads(result["error"]) == {"metadata": {}, "status": "Success"}


async def test_spdystream_port_forward(spdyinterop: Path, server: StreamingServer) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nhi " + request.split(b" ")[1])
        await writer.drain()
        writer.close()

    target = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = target.sockets[0].getsockname()[1]
        results = await run_tool(spdyinterop, "portforward", server.url_for(PortForwardRequest("pod1")), str(port),
                                 "6")
    finally:
        target.close()
        await target.wait_closed()
    assert [r["data"].endswith(f"hi /{i}") and r["error"] == "" for i, r in enumerate(results)] == [True] * 6
