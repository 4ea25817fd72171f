"""Unix sockets that never exist with a mode wider than their final one (0660), whatever the umask, and
without changing the process-wide umask (other threads create files meanwhile).

* ``bind_unix``: the socket's inode gets its mode (fchmod) before bind, which the kernel uses for the file.
* ``staged``: for servers that bind by path themselves (gRPC): bind inside a private 0700 directory, set
  the mode, then rename the socket into place, so the public path appears already restricted.
* ``listen_tcp`` + ``FirstClient``: a server bound and listening from the daemon's start whose code is loaded
  only when its first client connects (the Docker API, the streaming server, /metrics): clients wait in the
  backlog meanwhile, none is refused or lost, and a daemon nobody asks never imports aiohttp.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660  # root and the socket's group


def bind_unix(path: Path, mode: int = SOCKET_MODE) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), mode)  # the bound file is created from this, masked by the umask
        sock.bind(str(path))
        os.chmod(path, mode)  # only widens what the umask took away, up to ``mode``
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def staged(path: Path, mode: int = SOCKET_MODE) -> Iterator[Path]:
    """Yields where to bind; on exit the socket there gets ``mode`` and is renamed to ``path``."""
    private = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # 0700
    try:
        inner = private / path.name
        yield inner
        os.chmod(inner, mode)
        os.replace(inner, path)
    finally:
        with contextlib.suppress(OSError):
            (private / path.name).unlink()
        private.rmdir()


def listen_unix(path: Path, backlog: int, mode: int = SOCKET_MODE) -> socket.socket:
    """``bind_unix`` (its dir made first), listening: clients queue from now on, until a server serves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = bind_unix(path, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def listen_tcp(host: str, port: int, backlog: int = 128) -> list[socket.socket]:
    """Listening sockets for ``host:port`` as asyncio's ``create_server`` makes them (every address the host
    resolves to, SO_REUSEADDR, IPv6 sockets v6-only), so a server can be handed them later."""
    # An ASCII host goes as bytes: a str is IDNA-encoded first, and the idna codec imports stringprep and
    # unicodedata (~0.6 MiB of an idle narwhald, docs/benchmarks.md) for what is almost always an IP literal.
    name = host.encode("ascii") if host.isascii() else host
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class FirstClient:
    """Listening sockets whose server is loaded when the first client connects (or when ``load`` is called).

    ``serve(sockets)`` imports the server's code, builds it and starts serving on these sockets; the first
    connection waits in the backlog until it does.  If it fails, the error is logged and kept in ``error``,
    and the sockets are closed (clients are refused; the rest of the daemon runs on).
    """

    def __init__(self, sockets: list[socket.socket], serve: Callable[[list[socket.socket]], Awaitable[None]],
                 what: str) -> None:
        self.sockets = sockets
        self._serve = serve
        self.what = what
        self.error: Exception | None = None
        self._task: asyncio.Task[None] | None = None
        self._armed = False

    @property
    def loaded(self) -> bool:
        return self._task is not None and self._task.done() and not self._task.cancelled() and self.error is None

    def arm(self) -> None:
        """Wait for the first client (a pending connection makes a listening socket readable)."""
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._knock)
        self._armed = True

    def _disarm(self) -> None:
        if self._armed:
            loop = asyncio.get_running_loop()
            for sock in self.sockets:
                loop.remove_reader(sock.fileno())
            self._armed = False

    def _knock(self) -> None:
        log.info("%s: first client, loading", self.what)
        _ = self.load()  # the task is kept; a failure is logged there

    def load(self) -> asyncio.Task[None]:
        """Load now (once; a no-op once loaded); awaiting the task waits for the server to serve."""
        if self._task is None:
            self._disarm()
            self._task = asyncio.get_running_loop().create_task(self._load(), name=f"load {self.what}")
        return self._task

    async def _load(self) -> None:
        try:
            await self._serve(self.sockets)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the daemon runs on without this server
            log.exception("%s: could not be loaded; its sockets are closed", self.what)
            self.error = exc
            self._close_sockets()

    async def close(self) -> None:
        """Daemon shutdown: stop waiting; a load under way is cancelled; sockets no server took are closed
        (a loaded server closes its own)."""
        self._disarm()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.loaded:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
