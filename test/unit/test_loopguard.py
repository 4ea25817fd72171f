"""The guard conftest puts around every test (lib.loopguard): it sees a callback that blocks the loop, not one
that waits, and finds a task a test leaves behind. Off for these tests themselves: they block and leak."""
from __future__ import annotations

import asyncio
import time

import pytest
from lib.loopguard import LoopGuard, leaked_tasks


@pytest.mark.loop_guard_off
def test_a_blocking_call_on_the_loop_is_caught_a_wait_is_not() -> None:
    guard = LoopGuard()

    async def body() -> None:
        await asyncio.sleep(0.2)  # waiting: the loop is free
        time.sleep(0.25)  # noqa: ASYNC251 - blocking: nothing else runs
        await asyncio.to_thread(time.sleep, 0.2)  # off the loop

    with guard.installed():
        asyncio.run(body())
    assert len(guard.blocked) == 1, guard.blocked
    held, what = guard.blocked[0]
    assert 0.2 <= held < 5 and "ms of it on the CPU" in what


@pytest.mark.loop_guard_off
def test_a_leaked_task_is_found_and_cancelled() -> None:
    async def body() -> None:
        before = asyncio.all_tasks()
        leak = asyncio.create_task(asyncio.sleep(30))
        asyncio.create_task(asyncio.sleep(0))  # ends by itself within the grace turns
        assert await leaked_tasks(before) == [leak]
        assert leak.cancelled()

    asyncio.run(body())


@pytest.mark.loop_guard_off
def test_a_task_left_by_asyncio_run_is_reported() -> None:
    guard = LoopGuard()

    async def body() -> int:
        asyncio.create_task(asyncio.sleep(30), name="forgotten")
        return 7

    with guard.installed():
        assert asyncio.run(body()) == 7
    assert len(guard.leaked) == 1 and "forgotten" in guard.leaked[0]
