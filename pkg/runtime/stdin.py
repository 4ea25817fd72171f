"""The write ends of containers' stdin fifos, held by the runtime context for the containers' lifetime
(attach writes clients' input through them; pkg.runtime.attach explains the fifo)."""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from pkg import errors


class StdinKeeper:
    """The write ends of containers' stdin fifos, held open for the containers' lifetime."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def open(self, path: Path, container_id: str) -> None:
        if container_id in self._fds:
            return
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkfifo(path, 0o600)
        elif not stat.S_ISFIFO(path.stat().st_mode):
            raise errors.Internal(f"{path} is not a fifo")
        # O_RDWR never blocks on a fifo and counts as a writer, so the shim never reads a premature EOF.
        self._fds[container_id] = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    async def write(self, container_id: str, data: bytes) -> None:
        fd = self._fds.get(container_id)
        if fd is None:
            raise errors.FailedPrecondition("the container's stdin is closed")
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.01)  # the container is not reading: back off, never block the loop
                continue
            view = view[written:]

    def close(self, container_id: str) -> None:
        fd = self._fds.pop(container_id, None)
        if fd is not None:
            os.close(fd)
