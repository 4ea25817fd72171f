"""The Docker API server: an aiohttp application on a unix socket."""
from __future__ import annotations

import logging
import socket as socketlib
from pathlib import Path

from aiohttp import web

from dockerapi import routes
from dockerapi.backend import BACKENDS, Backends
from dockerapi.middleware import error_response, make_middlewares
from pkg import sockets

log = logging.getLogger(__name__)


MAX_JSON_BODY = 16 << 20
# Go's listeners (dockerd) use the kernel's somaxconn backlog, not aiohttp's 128: a burst of clients must
# queue, not get EAGAIN on connect.
BACKLOG = 4096


async def _not_found(request: web.Request) -> web.Response:
    return error_response(404, f"page not found: {request.method} {request.path}")


def build_app(backends: Backends) -> web.Application:
    # Bodies read whole (JSON) are bounded; archives and image tarballs stream through request.content,
    # which client_max_size does not limit.  moby has no general limit; 16 MiB is far above any real config.
    app = web.Application(middlewares=make_middlewares(backends.metrics),  # type: ignore[arg-type]
                          client_max_size=MAX_JSON_BODY)
    app[BACKENDS] = backends
    routes.register(app)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


class DockerServer:
    def __init__(self, socket: Path, app: web.Application) -> None:
        self.socket = socket
        # Streams (logs -f, attach, events, wait) never end by themselves: give in-flight requests a moment,
        # then cut them, or a stop would wait out aiohttp's 60 s default.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)

    async def start(self, sock: socketlib.socket | None = None) -> None:
        """Serve ``sock`` (the daemon listens on the Docker socket from its start: see narwhal.docker_face),
        or a socket bound here."""
        if sock is None:
            sock = sockets.listen_unix(self.socket, BACKLOG)  # 0660 from the moment it exists
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=BACKLOG).start()
        log.info("Docker API listening on %s", self.socket)

    async def stop(self) -> None:
        await self._runner.cleanup()
        self.socket.unlink(missing_ok=True)
