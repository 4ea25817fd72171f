"""Port-forward over SPDY (``portforward.k8s.io``), kubelet's protocol.

For every forwarded connection the client opens two streams with headers
``streamtype`` (``error`` or ``data``), ``port`` and ``requestid``.  Once both
of a pair are there the server dials the port inside the pod's network
namespace and copies bytes both ways; a failure is reported as text on the
error stream.  The data stream is half-closed towards the client when the
pod side closes, and a FIN from the client half-closes the pod side.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pkg import errors
from pkg.streaming.backend import StreamingBackend
from pkg.streaming.spdy_conn import SpdyConnection, SpdyStream

log = logging.getLogger(__name__)

PROTOCOL = "portforward.k8s.io"


@dataclass
class _Pair:
    request_id: str
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    created: float = field(default=0.0)


def request_id(stream: SpdyStream) -> str:
    """The pair a stream belongs to; old clients send no requestid, so derive it from the stream ids."""
    value = stream.header("requestid")
    if value:
        return value
    return str(stream.id if stream.header("streamtype") == "error" else stream.id - 2)


class PortForwardSession:
    def __init__(self, conn: SpdyConnection, incoming: asyncio.Queue[SpdyStream], backend: StreamingBackend,
                 sandbox_id: str, pair_timeout: float) -> None:
        self._conn = conn
        self._incoming = incoming
        self._backend = backend
        self._sandbox_id = sandbox_id
        self._pair_timeout = pair_timeout
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Accept stream pairs until the client goes away; then stop every forward."""
        accept = asyncio.create_task(self._accept())
        try:
            await self._conn.closed.wait()
        finally:
            accept.cancel()
            for task in [accept, *self._tasks]:
                task.cancel()
            for task in [accept, *self._tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                stream = await asyncio.wait_for(self._incoming.get(), self._pair_timeout)
            except TimeoutError:
                await self._expire(loop.time())
                continue
            await stream.reply()
            kind = stream.header("streamtype")
            if kind not in ("data", "error"):
                await stream.abort()
                continue
            rid = request_id(stream)
            pair = self._pairs.setdefault(rid, _Pair(rid, created=loop.time()))
            if getattr(pair, kind) is not None:
                await stream.abort()  # a second stream of the same kind for one request
                continue
            setattr(pair, kind, stream)
            if pair.data is not None and pair.error is not None:
                del self._pairs[rid]
                self._spawn(pair.data, pair.error)
            await self._expire(loop.time())

    async def _expire(self, now: float) -> None:
        for rid, pair in list(self._pairs.items()):
            if now - pair.created >= self._pair_timeout:
                del self._pairs[rid]
                for stream in (pair.data, pair.error):
                    if stream is not None:
                        with contextlib.suppress(ConnectionError):
                            if stream is pair.error:
                                await stream.write(b"timed out waiting for the data and error streams")
                            await stream.close()

    def _spawn(self, data: SpdyStream, error: SpdyStream) -> None:
        task = asyncio.create_task(self._forward(data, error), name=f"portforward-{data.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, data: SpdyStream, error: SpdyStream) -> None:
        try:
            try:
                port = int(data.header("port"))
                if not 0 < port < 65536:
                    raise ValueError
            except ValueError:
                raise errors.InvalidArgument(f"invalid port {data.header('port')!r}") from None
            reader, writer = await self._backend.dial(self._sandbox_id, port)
        except errors.NarwhalError as exc:
            with contextlib.suppress(ConnectionError):
                await error.write(
                    f"error forwarding port {data.header('port')} to pod {self._sandbox_id}: {exc.message}".encode())
                await error.close()
                await data.close()
            return
        await pump(data.read, data.write, reader, writer, half_close=data.close)
        with contextlib.suppress(ConnectionError):
            await error.close()


async def pump(recv: Callable[[], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]],
               reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               half_close: Callable[[], Awaitable[None]] | None = None) -> None:
    """Copy a forwarded port's data both ways (SPDY stream or WebSocket channel pair on one side, the pod's
    connection on the other) until the pod side closes, the client goes or the stream is reset.

    ``recv`` returning b"" is the client's half-close, passed on to the pod. With ``half_close`` (SPDY) the
    pod's end of output is passed on to the client, which may still be sending: its data is relayed until
    it half-closes too. Without it (WebSocket, no half-close) the pod's end is the end."""

    async def upstream() -> None:
        while data := await recv():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    up = asyncio.create_task(upstream())
    try:
        while data := await reader.read(65536):
            await send(data)
        if half_close is not None:
            await half_close()
            if not up.done():
                await asyncio.wait([up])
    except ConnectionError:
        pass
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await up
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
