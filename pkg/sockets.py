"""Unix sockets that never exist with a mode wider than their final one (0660), whatever the umask, and
without changing the process-wide umask (other threads create files meanwhile).

* ``bind_unix``: the socket's inode gets its mode (fchmod) before bind, which the kernel uses for the file.
* ``staged``: for servers that bind by path themselves (gRPC): bind inside a private 0700 directory, set
  the mode, then rename the socket into place, so the public path appears already restricted.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
