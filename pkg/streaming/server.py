"""The streaming server: ``/exec/{token}``, ``/attach/{token}``, ``/portforward/{token}``.

The CRI RPCs validate a request and call ``url_for``, which mints a single-use token; the client then
connects here and upgrades to SPDY/3.1 or to WebSocket (pkg.streaming.app).  The port is bound and
listening from ``start()`` (its URL is known at once), but the HTTP side and aiohttp are imported only when
the first client connects (pkg.sockets.FirstClient): a node that never execs does not hold them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from pkg import errors
from pkg.aio import import_modules
from pkg.config import parse_address
from pkg.sockets import FirstClient, listen_tcp
from pkg.streaming.backend import StreamingBackend
from pkg.streaming.idle import DEFAULT_IDLE_TIMEOUT
from pkg.streaming.model import AttachRequest, ExecRequest, PortForwardRequest, StreamRequest
from pkg.streaming.tokens import DEFAULT_TTL, TokenCache

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

STREAM_CREATION_TIMEOUT = 30.0


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first protocol the client offers that we support (kubelet's httpstream.Handshake)."""
    for value in offered:
        for proto in (p.strip() for p in value.split(",")):
            if proto in supported:
                return proto
    return None


class StreamingServer:
    def __init__(self, backend: StreamingBackend, address: str = "127.0.0.1:0", *, token_ttl: float = DEFAULT_TTL,
                 stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self._backend = backend
        self._host, self._port = parse_address(address, "streaming-address")
        self.tokens = TokenCache(ttl=token_ttl)
        self._stream_timeout = stream_creation_timeout
        self._idle_timeout = idle_timeout
        self._listener: FirstClient | None = None
        self._runner: web.AppRunner | None = None
        self._sessions: set[asyncio.Task[Any]] = set()
        self.base_url = ""

    # ---- lifetime ----
    async def start(self) -> None:
        try:
            socks = listen_tcp(self._host, self._port)
        except OSError as exc:
            raise errors.Unavailable(f"streaming-address {self._host}:{self._port}: {exc.strerror}") from None
        self._listener = FirstClient(socks, self._serve, "streaming server")
        self._listener.arm()
        host, port = socks[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{port}"
        log.info("streaming server on %s", self.base_url)

    async def _serve(self, socks: list[socket.socket]) -> None:
        """The first client is here: the HTTP side serves the listening sockets (imported in a thread, so the
        daemon's loop keeps serving meanwhile)."""
        await import_modules("pkg.streaming.app")
        from aiohttp import web

        from pkg.streaming.app import StreamingApp

        app = StreamingApp(self._backend, self.tokens, self._sessions,
                           stream_creation_timeout=self._stream_timeout, idle_timeout=self._idle_timeout)
        self._runner = app.runner()
        await self._runner.setup()
        for sock in socks:
            await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self.base_url = ""  # no more tokens for a server that is going away
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- URLs (called by the CRI RPCs after validation) ----
    def url_for(self, request: StreamRequest) -> str:
        if not self.base_url:
            raise errors.Unavailable("the streaming server is not running")
        verb = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}[type(request)]
        return f"{self.base_url}/{verb}/{self.tokens.mint(request)}"
