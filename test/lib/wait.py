"""The one way tests wait for something: poll a condition with a deadline, never a fixed sleep.

``wait_for`` raises AssertionError naming what did not happen; ``eventually`` (lib.docker) is the same wait
answering True/False for ``assert eventually(...)``; ``async_wait_for`` polls from a coroutine without
blocking its loop."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_for(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.1) -> None:
    """Poll ``cond`` until it is truthy; AssertionError after ``timeout`` seconds (checked once more at the
    deadline, so a slow machine's last poll counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    if not cond():
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def async_wait_for(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition",
                         interval: float = 0.05) -> None:
    """``wait_for`` from a coroutine: the polling (and ``cond``, which may read files) runs off the loop."""
    await asyncio.to_thread(wait_for, cond, timeout, what, interval)
