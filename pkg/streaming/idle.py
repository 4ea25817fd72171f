"""Idle timeout for streaming sessions (kubelet's ``streamingConnectionIdleTimeout``).

A session with no bytes in either direction for ``timeout`` seconds is closed,
so a client that vanished without closing its TCP connection cannot keep an
exec process (or a port-forward) alive forever.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 4 * 3600.0


class IdleWatch:
    def __init__(self, timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self._timeout = timeout
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        self._last = time.monotonic()

    def on_idle(self, close: Callable[[], Awaitable[Any]]) -> None:
        """Call ``close()`` once the session has been idle for the timeout (until ``stop()``)."""
        self.stop()
        self._task = asyncio.create_task(self._watch(close), name="streaming-idle-watch")

    async def _watch(self, close: Callable[[], Awaitable[Any]]) -> None:
        while (left := self._last + self._timeout - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 60.0))
        log.info("closing a streaming session idle for %.0fs", self._timeout)
        with contextlib.suppress(Exception):
            await close()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
