"""A guard for tests that run an event loop in the test process: it fails a test that leaks an asyncio task
(still pending once the test and its fixtures are done) or blocks the loop for more than ``BLOCK_LIMIT``.

Blocking is measured per callback the loop runs (asyncio's own slow-callback check, debug mode's
``slow_callback_duration``, measures wall time, which on a loaded shared machine includes the time the
thread waited for a CPU): here the thread's run-queue wait (/proc/thread-self/schedstat) is taken off, so
what counts is time the loop spent computing or sleeping in a blocking call, which no other task could use.
Excused: asyncio's own spawn of a child process (fork and exec happen on the loop by asyncio's design; on a
loaded machine the wait for the child's exec alone can pass the limit) and the garbage collector's pauses
(a full collection in a test process that holds a thousand tests' objects takes that long on its own).
"""
from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from asyncio import base_subprocess
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

BLOCK_LIMIT = 0.1  # seconds one callback may hold the loop
GRACE_ROUNDS = 20  # loop turns a finishing task (a cancelled one running its finally) gets at once
SETTLE = 2.0  # then seconds it may take to end by itself before it counts as leaked


class LoopGuard:
    def __init__(self) -> None:
        self.blocked: list[tuple[float, str]] = []
        self._thread = 0
        self._schedstat = -1
        self._excused = 0.0  # of the callback running now: time inside asyncio's subprocess spawn or the GC
        self._gc_began = 0.0
        self.leaked: list[str] = []  # tasks a test's own asyncio.run() left pending

    def _runqueue_wait(self) -> float:
        try:
            return int(os.pread(self._schedstat, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def timed(self, handle: asyncio.Handle, run: Any) -> Any:
        start, waited, cpu = time.monotonic(), self._runqueue_wait(), time.thread_time()
        self._excused = 0.0
        try:
            return run(handle)
        finally:
            held = time.monotonic() - start - (self._runqueue_wait() - waited) - self._excused
            if held > BLOCK_LIMIT:
                on_cpu = time.thread_time() - cpu
                self.blocked.append((held, f"{_describe(handle)} [{on_cpu * 1000:.0f} ms of it on the CPU]"))

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Time every callback of loops run on this thread while the guard is installed."""
        self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        self._thread = threading.get_native_id()
        original = asyncio.Handle._run
        guard = self

        def _run(handle: asyncio.Handle) -> None:
            if threading.get_native_id() != guard._thread:  # a loop on another thread (to_thread helpers' own loops)
                return original(handle)
            return guard.timed(handle, original)  # type: ignore[no-any-return]

        spawn = base_subprocess.BaseSubprocessTransport._start

        def _start(transport: Any, *args: Any, **kwargs: Any) -> None:
            began = time.monotonic()
            try:
                spawn(transport, *args, **kwargs)
            finally:
                if threading.get_native_id() == guard._thread:
                    guard._excused += time.monotonic() - began

        def collecting(phase: str, info: dict[str, int]) -> None:
            if threading.get_native_id() != guard._thread:
                return
            if phase == "start":
                guard._gc_began = time.monotonic()
            elif guard._gc_began:
                guard._excused += time.monotonic() - guard._gc_began
                guard._gc_began = 0.0

        run_loop = asyncio.run

        def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
            """asyncio.run that reports the tasks its coroutine left pending (asyncio.run cancels them quietly)."""

            async def watched() -> T:
                try:
                    return await main
                finally:
                    guard.leaked += [f"{t.get_name()} {t.get_coro()!r}"[:200] for t in await leaked_tasks(set())]

            return run_loop(watched(), debug=debug)

        gc.callbacks.append(collecting)
        asyncio.run = run
        asyncio.Handle._run = _run  # type: ignore[method-assign,assignment]
        base_subprocess.BaseSubprocessTransport._start = _start  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            gc.callbacks.remove(collecting)
            asyncio.run = run_loop
            asyncio.Handle._run = original  # type: ignore[method-assign]
            base_subprocess.BaseSubprocessTransport._start = spawn  # type: ignore[method-assign]
            os.close(self._schedstat)


def _describe(handle: asyncio.Handle) -> str:
    """The callback, or for a task's step the coroutine and where it was suspended next (after the block)."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(task, asyncio.Task):
        where = ""
        stack = task.get_stack(limit=1)
        if stack:
            code = stack[-1].f_code
            where = f" (then waiting at {code.co_filename.rsplit('/', 2)[-1]}:{stack[-1].f_lineno} in {code.co_name})"
        return f"task {task.get_name()} {task.get_coro()!r}{where}"[:400]
    return repr(handle)[:400]


async def leaked_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks made since ``before`` that are still pending once they had ``SETTLE`` seconds to end by themselves
    (a cancelled task running its finally, a gRPC call's request consumer waiting for its last write), the
    caller's own excepted. They are cancelled: a leak must not run on into the next test."""
    me = asyncio.current_task()

    def pending() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]

    for _ in range(GRACE_ROUNDS):
        if not pending():
            return []
        await asyncio.sleep(0)
    if pending():
        await asyncio.wait(pending(), timeout=SETTLE)
    leaked = pending()
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.wait(leaked, timeout=5)
    return leaked
