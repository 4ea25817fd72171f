"""The Kubernetes WebSocket channel protocols (``*.channel.k8s.io``), over aiohttp's WebSocket.

Each message is one channel's data: the first byte is the channel number
(binary protocols), or the channel digit followed by base64 text (the
``base64`` variants).  remotecommand uses channels 0 stdin, 1 stdout,
2 stderr, 3 error, 4 resize; ``v5.channel.k8s.io`` adds a close signal
(channel 255, payload = the channel being closed), which is how a client
half-closes stdin.  Port-forward uses a pair per port (data 2i, error 2i+1),
each starting with the port as two little-endian bytes.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from pkg import errors
from pkg.streaming import remotecommand as rc
from pkg.streaming.backend import ExecStreams, StreamingBackend
from pkg.streaming.idle import IdleWatch
from pkg.streaming.model import AttachRequest, ExecRequest, PortForwardRequest
from pkg.streaming.portforward import pump

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
CLOSE_SIGNAL = 255

REMOTECOMMAND_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io",
                           "base64.channel.k8s.io", "channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "portforward.k8s.io")
MAX_MESSAGE = 1 << 20
QUEUED_MESSAGES = 64  # per channel; beyond, the reader waits and TCP pushes back on the client


# ---- channel framing (sans I/O) ----
def encode_frame(channel: int, data: bytes, b64: bool) -> bytes | str:
    if b64:
        return str(channel) + base64.b64encode(data).decode()
    return bytes([channel]) + data


def decode_frame(message: bytes | str, b64: bool) -> tuple[int, bytes]:
    if b64:
        if not isinstance(message, str) or not message or not message[0].isdigit():
            raise errors.InvalidArgument("base64 channel message must be text starting with a channel digit")
        try:
            return int(message[0]), base64.b64decode(message[1:], validate=True)
        except binascii.Error:
            raise errors.InvalidArgument("channel message is not valid base64") from None
    if isinstance(message, str):
        message = message.encode()
    if not message:
        raise errors.InvalidArgument("empty channel message")
    return message[0], bytes(message[1:])


class ChannelConn:
    """A WebSocket carrying numbered channels; one reader task routes incoming data to per-channel queues."""

    def __init__(self, ws: web.WebSocketResponse, b64: bool, readable: set[int], v5: bool = False,
                 on_activity: Callable[[], None] | None = None) -> None:
        self.ws = ws
        self._on_activity = on_activity or (lambda: None)
        self.b64 = b64
        self.v5 = v5
        self._queues: dict[int, asyncio.Queue[bytes]] = {ch: asyncio.Queue(QUEUED_MESSAGES) for ch in readable}
        self._eof: set[int] = set()
        self._lock = asyncio.Lock()
        self.closed = asyncio.Event()

    async def send(self, channel: int, data: bytes) -> None:
        if self.closed.is_set() or self.ws.closed:
            raise ConnectionResetError("websocket closed")
        frame = encode_frame(channel, data, self.b64)
        self._on_activity()
        async with self._lock:
            if isinstance(frame, str):
                await self.ws.send_str(frame)
            else:
                await self.ws.send_bytes(frame)

    async def recv(self, channel: int) -> bytes:
        """Next data for ``channel``; b"" when it (or the whole connection) closed."""
        queue = self._queues[channel]
        if channel in self._eof and queue.empty():
            return b""
        return await queue.get()

    def discard(self, channel: int) -> None:
        """Nobody will read ``channel`` any more: drop what arrives for it."""
        self._close_channel(channel)

    def _close_channel(self, channel: int) -> None:
        queue = self._queues.get(channel)
        if queue is not None and channel not in self._eof:
            self._eof.add(channel)
            if not queue.full():
                queue.put_nowait(b"")  # wakes a reader waiting on an empty queue

    async def read_loop(self) -> None:
        try:
            async for msg in self.ws:
                self._on_activity()
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                try:
                    channel, data = decode_frame(msg.data, self.b64)
                except errors.InvalidArgument as exc:
                    log.debug("websocket: %s", exc.message)
                    continue
                if channel == CLOSE_SIGNAL and self.v5:
                    for closed in data:
                        self._close_channel(closed)
                elif channel in self._queues and data and channel not in self._eof:
                    await self._queues[channel].put(data)
        finally:
            self.closed.set()
            for channel in self._queues:
                self._close_channel(channel)


class _Out:
    def __init__(self, conn: ChannelConn, channel: int) -> None:
        self._conn, self._channel = conn, channel

    async def write(self, data: bytes) -> None:
        await self._conn.send(self._channel, data)


class _In:
    def __init__(self, conn: ChannelConn, channel: int) -> None:
        self._conn, self._channel = conn, channel
        self._eof = False

    async def read(self) -> bytes:
        if self._eof:
            return b""
        data = await self._conn.recv(self._channel)
        self._eof = not data
        return data


async def _open(request: web.Request, protocols: tuple[str, ...]) -> tuple[web.WebSocketResponse, str]:
    ws = web.WebSocketResponse(protocols=protocols, max_msg_size=MAX_MESSAGE, autoping=True)
    await ws.prepare(request)
    return ws, ws.ws_protocol or "channel.k8s.io"


async def serve_remotecommand(request: web.Request, req: ExecRequest | AttachRequest,
                              backend: StreamingBackend, idle: IdleWatch) -> web.WebSocketResponse:
    ws, protocol = await _open(request, REMOTECOMMAND_PROTOCOLS)
    readable = ({STDIN} if req.stdin else set()) | ({RESIZE} if req.tty else set())  # others are dropped
    conn = ChannelConn(ws, b64="base64" in protocol, readable=readable, v5=protocol.startswith("v5."),
                       on_activity=idle.touch)
    idle.on_idle(ws.close)
    reader = asyncio.create_task(conn.read_loop(), name="ws-remotecommand-reader")
    streams = ExecStreams(
        tty=req.tty,
        stdin=_In(conn, STDIN) if req.stdin else None,
        stdout=_Out(conn, STDOUT) if req.stdout else None,
        stderr=_Out(conn, STDERR) if req.stderr and not req.tty else None,
        resize=rc.StreamResize(_In(conn, RESIZE)) if req.tty else None,
    )
    try:
        work = asyncio.create_task(rc.run_command(backend, req, streams), name="remotecommand")
        if await rc.until_closed(work, conn.closed) and not work.cancelled() and work.exception() is None:
            status_protocol = rc.V4 if protocol.startswith(("v4.", "v5.")) else rc.V1
            payload = rc.encode_status(work.result(), status_protocol)
            with contextlib.suppress(ConnectionError):
                if payload:
                    await conn.send(ERROR, payload)
            await ws.close()
    finally:
        await _stop(reader)
        await ws.close()
    return ws


async def serve_portforward(request: web.Request, req: PortForwardRequest,
                            backend: StreamingBackend, idle: IdleWatch) -> web.StreamResponse:
    ports = list(req.ports)
    if not ports:
        try:
            ports = [int(p) for value in request.query.getall("port", []) for p in value.split(",") if p]
        except ValueError:
            raise errors.InvalidArgument("port must be a number") from None
    if not ports or not all(0 < p < 65536 for p in ports):
        raise errors.InvalidArgument("port-forward needs one or more ports between 1 and 65535")
    ws, protocol = await _open(request, PORTFORWARD_PROTOCOLS)
    conn = ChannelConn(ws, b64="base64" in protocol, readable={2 * i for i in range(len(ports))},
                       on_activity=idle.touch)
    idle.on_idle(ws.close)
    reader = asyncio.create_task(conn.read_loop(), name="ws-portforward-reader")
    try:
        forwards = asyncio.gather(*(_forward_ws_port(conn, backend, req.sandbox_id, port, 2 * i)
                                    for i, port in enumerate(ports)), return_exceptions=True)
        await rc.until_closed(asyncio.ensure_future(forwards), conn.closed)  # the client leaving ends them all
    finally:
        await _stop(reader)
        await ws.close()
    return ws


async def _forward_ws_port(conn: ChannelConn, backend: StreamingBackend, sandbox_id: str, port: int,
                           data_ch: int) -> None:
    prefix = port.to_bytes(2, "little")
    try:
        await conn.send(data_ch, prefix)
        await conn.send(data_ch + 1, prefix)
    except ConnectionError:
        return
    try:
        reader, writer = await backend.dial(sandbox_id, port)
    except errors.NarwhalError as exc:
        conn.discard(data_ch)
        with contextlib.suppress(ConnectionError):
            await conn.send(data_ch + 1, f"error forwarding port {port} to pod {sandbox_id}: {exc.message}".encode())
        return

    async def send(data: bytes) -> None:
        await conn.send(data_ch, data)

    try:
        await pump(lambda: conn.recv(data_ch), send, reader, writer)
    finally:
        conn.discard(data_ch)


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
