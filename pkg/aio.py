"""asyncio helpers: guarded background tasks and cancellation-proof cleanup.

Background loops (containerd watchdog, event monitors, config watchers) must
never die silently: ``create_guarded_task`` logs a crash and, when asked,
restarts the loop after a pause.  Rollback steps must finish even when the
request that started them is cancelled: ``CleanupStack`` runs each labelled
step shielded and bounded by a timeout.  Code a daemon may never need is imported late, by
``import_modules``: in a worker thread, so the loop keeps serving meanwhile.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import shutil
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_background: set[asyncio.Task[Any]] = set()
_imports = threading.Lock()


async def import_modules(*names: str) -> None:
    """Import ``names`` in a worker thread (a big module graph takes 0.1-1 s the loop should not wait for).
    One such import at a time: two threads importing overlapping graphs can deadlock on the import locks."""
    if all(name in sys.modules for name in names):
        return

    def load() -> None:
        with _imports:
            for name in names:
                importlib.import_module(name)

    await asyncio.to_thread(load)


def create_guarded_task(
    factory: Callable[[], Coroutine[Any, Any, Any]],
    name: str,
    *,
    restart_delay: float | None = None,
) -> asyncio.Task[None]:
    """Run ``factory()`` in the background; log crashes; restart if ``restart_delay`` is set."""

    async def guard() -> None:
        while True:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s crashed", name)
            else:
                if restart_delay is None:
                    return
                log.warning("background task %s exited; restarting", name)
            if restart_delay is None:
                return
            await asyncio.sleep(restart_delay)

    task = asyncio.create_task(guard(), name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def cancel_tasks(tasks: list[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel tasks and wait (bounded) for them to finish."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


async def rmtree(*paths: Path) -> None:
    """Remove directory trees off the event loop; missing ones are fine."""
    for path in paths:
        await asyncio.to_thread(shutil.rmtree, path, True)


class CleanupStack:
    """Labelled rollback steps, run last-in first-out, each shielded from cancellation.

    Use as ``async with CleanupStack() as cleanup:``; ``cleanup.add(label, fn)``
    after acquiring each resource and ``cleanup.commit()`` on success.  When the
    block exits with an error (cancellation included) every step runs.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._timeout = timeout

    def add(self, label: str, step: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append((label, step))

    def commit(self) -> None:
        self._steps.clear()

    async def run(self) -> None:
        steps, self._steps = self._steps[::-1], []
        for label, step in steps:
            task = asyncio.ensure_future(asyncio.wait_for(step(), self._timeout))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # Our caller was cancelled: let the step finish anyway.
                try:
                    await task
                except Exception:
                    log.exception("cleanup step failed: %s", label)
            except Exception:
                log.exception("cleanup step failed: %s", label)

    async def __aenter__(self) -> CleanupStack:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            await self.run()


async def run_to_completion(step: Awaitable[T]) -> T:
    """Finish a cleanup step even when our caller is cancelled meanwhile (gRPC cancels a handler when its
    client gives up, possibly more than once); the cancellation is re-raised afterwards."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
