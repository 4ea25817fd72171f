"""Connect to a TCP port inside a pod's network namespace, without nsenter or socat.

A socket belongs to the network namespace of the thread that created it, so
the connect runs through ``pkg.cni.netns.run_in_netns`` (a dedicated thread
that joins the namespace and dies afterwards); the connected socket then
works from the event loop like any other.  As kubelet does, "the port" means
localhost inside the pod: 127.0.0.1 first, then ::1.
"""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from pkg import errors
from pkg.cni.netns import run_in_netns

CONNECT_TIMEOUT = 10.0


def _connect(port: int, timeout: float) -> socket.socket:
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


async def dial_in_netns(netns: Path, port: int, timeout: float = CONNECT_TIMEOUT
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An asyncio connection to localhost:``port`` as seen from inside ``netns`` (a pinned netns path)."""
    if not 0 < port < 65536:
        raise errors.InvalidArgument(f"invalid port {port}")
    try:
        sock = await run_in_netns(netns, lambda: _connect(port, timeout))
    except ConnectionRefusedError:
        raise errors.Unavailable(f"nothing listens on port {port} in the pod") from None
    except TimeoutError:
        raise errors.Unavailable(f"connecting to port {port} in the pod timed out") from None
    except OSError as exc:
        raise errors.Unavailable(f"connect to port {port} in {netns}: {exc.strerror or exc}") from None
    return await asyncio.open_connection(sock=sock)
