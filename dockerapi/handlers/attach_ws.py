"""GET /containers/{id}/attach/ws: attach over a WebSocket (moby's wsContainersAttach).

The same session as the hijacked attach (logs replay, then the live streams), but on WebSocket messages:
output is not multiplexed (stdout and stderr share the socket as they would on a TTY), each chunk is one
message, binary from API 1.42 on (text before, as moby's golang.org/x/net/websocket default); every
message the client sends is stdin.  The session ends when the container's output ends or the client
closes the socket.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import WSMsgType, web

from dockerapi import versions
from dockerapi.handlers.attach import containers, lookup, relay_until_lost
from dockerapi.params import query_bool
from pkg import errors
from pkg.docker.views import attach as docker_attach
from pkg.docker.views.logs import container_logs
from pkg.logs.reader import ReadOptions
from pkg.streaming.backend import ExecStreams


class _Socket:
    """The client's WebSocket as the attach relay's stdin and stdout/stderr."""

    def __init__(self, ws: web.WebSocketResponse, binary: bool) -> None:
        self._ws = ws
        self._binary = binary
        self._input: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost = asyncio.Event()

    async def pump(self) -> None:
        """Read the client's messages (the socket's close is only seen by reading) into stdin's queue."""
        try:
            async for msg in self._ws:
                if msg.type == WSMsgType.BINARY:
                    self._input.put_nowait(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._input.put_nowait(msg.data.encode())
        finally:
            self._input.put_nowait(b"")
            self.lost.set()

    async def read(self) -> bytes:
        return await self._input.get()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._ws.closed:
            raise ConnectionResetError("the client closed the WebSocket")
        if self._binary:
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data.decode(errors="replace"))


class _Discard:
    async def write(self, data: bytes) -> None:
        return None


async def attach_ws(request: web.Request) -> web.StreamResponse:
    found = lookup(request, request.match_info["id"])
    if found.paused:
        raise errors.Conflict(f"container {found.id} is paused, unpause the container before attach.")
    want_stdin = query_bool(request, "stdin")
    want_stdout, want_stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
    logs, stream = query_bool(request, "logs"), query_bool(request, "stream")
    cut = time.time_ns()
    stdio = docker_attach.DockerAttach(containers(request), found.id, since_ns=cut + 1 if logs else None)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sock = _Socket(ws, binary=versions.at_least(request, "1.42"))
    pump = asyncio.ensure_future(sock.pump())
    try:
        with contextlib.suppress(ConnectionError):
            wanted = frozenset(n for n, want in (("stdout", want_stdout), ("stderr", want_stderr)) if want)
            if logs and wanted:  # the log up to the cut, then the live output from it: nothing lost or doubled
                async for entry in container_logs(containers(request), found.id,
                                                  ReadOptions(streams=wanted, until_ns=cut)):
                    await sock.write(entry.content)
            if stream:
                streams = ExecStreams(tty=stdio.tty, stdin=sock if want_stdin else None,
                                      stdout=sock if want_stdout else _Discard(),
                                      stderr=sock if want_stderr else _Discard())
                await relay_until_lost(stdio, streams, sock.lost)
    finally:
        await ws.close()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


ROUTES = [
    ("GET", "/containers/{id}/attach/ws", attach_ws),
]
