"""Connect to a TCP port inside a network namespace, without nsenter or socat.

A socket belongs to the network namespace of the thread that created it, so
a short-lived dedicated thread ``setns``es into the pod's namespace, creates
and connects the socket, and exits; the connected socket then works from the
event loop like any other.  The thread is never returned to a pool, so no
other code can run in the wrong namespace.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import socket
import threading
from pathlib import Path

from pkg import errors

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _connect_in(netns: Path, port: int, timeout: float) -> socket.socket:
    """Runs in a dedicated thread: enter the namespace, connect to localhost:port, return to the host's."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            last: OSError | None = None
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    sock.settimeout(timeout)
                    sock.connect((host, port))
                    sock.setblocking(False)
                    return sock
                except OSError as exc:
                    sock.close()
                    last = exc
            assert last is not None
            raise last
        finally:
            _setns(own)
    finally:
        os.close(own)


async def dial_in_netns(netns: Path, port: int, timeout: float = CONNECT_TIMEOUT
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An asyncio connection to localhost:``port`` as seen from inside ``netns`` (a /proc or bind-mount path)."""
    if not 0 < port < 65536:
        raise errors.InvalidArgument(f"invalid port {port}")
    loop = asyncio.get_running_loop()
    result: asyncio.Future[socket.socket] = loop.create_future()

    def work() -> None:
        try:
            sock = _connect_in(netns, port, timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            loop.call_soon_threadsafe(_settle, result, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, result, sock, None)

    threading.Thread(target=work, name=f"netns-dial-{port}", daemon=True).start()
    try:
        sock = await result
    except FileNotFoundError:
        raise errors.NotFound(f"network namespace {netns} does not exist") from None
    except ConnectionRefusedError:
        raise errors.Unavailable(f"nothing listens on port {port} in the pod") from None
    except OSError as exc:
        raise errors.Unavailable(f"connect to port {port} in {netns}: {exc.strerror or exc}") from None
    return await asyncio.open_connection(sock=sock)


def _settle(fut: asyncio.Future[socket.socket], sock: socket.socket | None, exc: BaseException | None) -> None:
    if fut.cancelled():
        if sock is not None:
            sock.close()
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert sock is not None
        fut.set_result(sock)
