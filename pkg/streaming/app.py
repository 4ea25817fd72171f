"""The streaming server's HTTP side (aiohttp): ``/exec/{token}``, ``/attach/{token}``, ``/portforward/{token}``.

Imported by pkg.streaming.server when the first client connects (aiohttp costs ~10 MiB a daemon that
serves no exec, attach or port-forward need not hold).  The client upgrades to SPDY/3.1 (``Upgrade: SPDY/3.1``,
protocol chosen from ``X-Stream-Protocol-Version``) or to WebSocket; each session runs inside its request
handler and is cancelled on the server's ``stop()``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pkg import errors
from pkg.streaming import portforward, remotecommand, websocket
from pkg.streaming.backend import StreamingBackend
from pkg.streaming.hijack import hijack
from pkg.streaming.idle import IdleWatch
from pkg.streaming.model import AttachRequest, ExecRequest, PortForwardRequest, StreamRequest
from pkg.streaming.server import negotiate
from pkg.streaming.spdy_conn import SpdyConnection, SpdyStream
from pkg.streaming.tokens import TokenCache

log = logging.getLogger(__name__)

_STATUS = {
    errors.NotFound: 404,
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 400,
    errors.PermissionDenied: 403,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
}


def _http_status(exc: errors.NarwhalError) -> int:
    for kind in type(exc).__mro__:
        if kind in _STATUS:
            return _STATUS[kind]
    return 500


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """The one mapping from pkg errors to HTTP statuses for this server (before any upgrade)."""
    try:
        return await handler(request)
    except errors.NarwhalError as exc:
        return web.Response(status=_http_status(exc), text=exc.message + "\n")


class StreamingApp:
    """The handlers: a token's request served over SPDY or WebSocket by the backend."""

    def __init__(self, backend: StreamingBackend, tokens: TokenCache, sessions: set[asyncio.Task[Any]], *,
                 stream_creation_timeout: float, idle_timeout: float) -> None:
        self._backend = backend
        self.tokens = tokens
        self._sessions = sessions
        self._stream_timeout = stream_creation_timeout
        self._idle_timeout = idle_timeout

    def runner(self) -> web.AppRunner:
        app = web.Application(middlewares=[_errors])
        for verb, handler in (("exec", self._exec), ("attach", self._attach), ("portforward", self._portforward)):
            app.router.add_route("GET", f"/{verb}/{{token}}", handler)
            app.router.add_route("POST", f"/{verb}/{{token}}", handler)
        return web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)

    # ---- handlers ----
    def _consume(self, request: web.Request, kind: type[StreamRequest]) -> StreamRequest:
        req = self.tokens.consume(request.match_info["token"])
        if req is None or not isinstance(req, kind):
            raise errors.NotFound("unknown or expired streaming token")
        return req

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, ExecRequest)
        assert isinstance(req, ExecRequest)
        return await self._session(request, req)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, AttachRequest)
        assert isinstance(req, AttachRequest)
        return await self._session(request, req)

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, PortForwardRequest)
        assert isinstance(req, PortForwardRequest)
        return await self._session(request, req)

    async def _session(self, request: web.Request, req: StreamRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        log.debug("streaming session %s from %s (%s)", req, request.remote, request.headers.get("Upgrade", "-"))
        idle = IdleWatch(self._idle_timeout)
        try:
            upgrade = request.headers.get("Upgrade", "").lower()
            if upgrade == "websocket":
                if isinstance(req, PortForwardRequest):
                    return await websocket.serve_portforward(request, req, self._backend, idle)
                return await websocket.serve_remotecommand(request, req, self._backend, idle)
            if upgrade.startswith("spdy/3.1"):
                return await self._spdy(request, req, idle)
            raise errors.InvalidArgument("expected an upgrade to SPDY/3.1 or websocket")
        finally:
            idle.stop()
            self._sessions.discard(task)

    async def _spdy(self, request: web.Request, req: StreamRequest, idle: IdleWatch) -> web.StreamResponse:
        offered = request.headers.getall("X-Stream-Protocol-Version", [])
        if isinstance(req, PortForwardRequest):
            supported: tuple[str, ...] = (portforward.PROTOCOL,)
        else:
            supported = remotecommand.SPDY_PROTOCOLS
        protocol = negotiate(offered, supported)
        if protocol is None and offered:
            raise errors.PermissionDenied(
                f"none of the offered protocols {offered} is supported (supported: {', '.join(supported)})")
        headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
        if protocol is not None:
            headers["X-Stream-Protocol-Version"] = protocol
        transport = await hijack(request, headers)
        incoming: asyncio.Queue[SpdyStream] = asyncio.Queue()
        conn = SpdyConnection(transport, server=True, on_stream=incoming.put_nowait, on_activity=idle.touch)
        reader = asyncio.create_task(conn.run(), name="spdy-reader")
        idle.on_idle(lambda: conn.close(linger=0))
        try:
            if isinstance(req, PortForwardRequest):
                await portforward.PortForwardSession(conn, incoming, self._backend, req.sandbox_id,
                                                     self._stream_timeout).run()
            else:
                await remotecommand.serve_spdy(conn, incoming, protocol or remotecommand.V1, req, self._backend,
                                               self._stream_timeout)
        finally:
            await conn.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        return transport.response  # already sent; aiohttp only closes the connection
