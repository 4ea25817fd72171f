"""Exec into a real containerd task (runc): streams, exit codes, TTY resize, ExecSync bounds and timeouts,
and nothing left behind (exec processes, fifos, asyncio tasks); each through the task's shim and through
containerd."""
from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lib import ctrtask
from lib.daemon import DaemonProcess, start_daemon

from pkg import errors
from pkg.containerd.client import Client
from pkg.runtime.exec import ExecProcess, reap_stale_execs, run_exec
from pkg.runtime.exec_sync import exec_sync, settle
from pkg.streaming.backend import ExecStreams
from pkg.streaming.model import TerminalSize


@pytest.fixture(scope="module")
def narwhald() -> Iterator[DaemonProcess]:
    d = start_daemon()
    yield d
    d.destroy()


@pytest.fixture(params=["via-shim", "via-containerd"])
async def client(narwhald: DaemonProcess, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """Every test both ways: exec processes straight to the task's shim over ttrpc (narwhald's default,
    pkg.containerd.shims), and through containerd's task service."""
    shim_state = narwhald.state / "containerd" if request.param == "via-shim" else None
    c = Client(narwhald.state / "containerd" / "containerd.sock", ctrtask.NAMESPACE, shim_state=shim_state)
    yield c
    await c.close()


@pytest.fixture
def fifo_root(narwhald: DaemonProcess) -> Path:
    root = narwhald.state / "exec"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture
async def task(client: Client, narwhald: DaemonProcess, fifo_root: Path) -> AsyncIterator[ctrtask.RunningTask]:
    t = await ctrtask.start_task(client, narwhald.base, narwhald.state / "runc")
    try:
        yield t
        # Nothing of any exec may outlive the test: processes in the task, fifos, asyncio tasks. (An ExecSync is
        # answered at the exit, its process and fifos deleted after that: wait for those deletions first.)
        await asyncio.wait_for(settle(), 30)
        pids, fifos = await t.pids(), os.listdir(fifo_root)
    finally:
        await t.destroy()
    assert pids == [t.pid]
    assert fifos == []
    leaked = [x for x in asyncio.all_tasks() if x is not asyncio.current_task() and not x.done()
              and "exec" in x.get_name()]
    assert not leaked


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    async def wait_for(self, needle: bytes) -> None:
        while needle not in self.data:
            self.changed.clear()
            await self.changed.wait()


class Source:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> bytes:
        return await self.queue.get()


class Resizes:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[TerminalSize | None] = asyncio.Queue()

    async def next(self) -> TerminalSize | None:
        return await self.queue.get()


async def test_non_tty_exec_separates_streams_and_returns_the_exit_code(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    out, err = Sink(), Sink()
    code = await run_exec(client, task.container_id, ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
                          ExecStreams(tty=False, stdout=out, stderr=err), fifo_root=fifo_root)
    assert (code, bytes(out.data), bytes(err.data)) == (7, b"to-out\n", b"to-err\n")


async def test_stdin_reaches_the_process_and_eof_ends_it(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    out, stdin = Sink(), Source()
    payload = b"line\n" * 50_000  # more than a pipe buffer
    stdin.queue.put_nowait(payload)
    stdin.queue.put_nowait(b"")
    code = await run_exec(client, task.container_id, ["sh", "-c", "cat; echo done"],
                          ExecStreams(tty=False, stdin=stdin, stdout=out), fifo_root=fifo_root)
    assert code == 0 and bytes(out.data) == payload + b"done\n"


async def test_tty_exec_sees_stty_size_change_after_resize(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    out, stdin, resizes = Sink(), Source(), Resizes()
    streams = ExecStreams(tty=True, stdin=stdin, stdout=out, resize=resizes)
    work = asyncio.create_task(run_exec(
        client, task.container_id, ["sh", "-c", "while read l; do [ \"$l\" = q ] && exit 3; stty size; done"],
        streams, fifo_root=fifo_root))
    for width, height in ((100, 30), (132, 43)):
        resizes.queue.put_nowait(TerminalSize(width, height))
        # The resize and the newline travel separately: ask again until the new size shows.
        for _ in range(50):
            mark = len(out.data)
            stdin.queue.put_nowait(b"\n")
            size = await asyncio.wait_for(_next_size(out, mark), 30)
            if size == (height, width):
                break
        assert size == (height, width)
    stdin.queue.put_nowait(b"q\n")
    assert await asyncio.wait_for(work, 30) == 3


async def _next_size(out: Sink, mark: int) -> tuple[int, int]:
    """What the first `stty size` after ``mark`` printed: (ROWS, COLS), or (0, 0) if it complained."""
    while (found := re.search(rb"(?m)^(?:(\d+) (\d+)|stty:.*)\r?$", bytes(out.data[mark:]))) is None:
        out.changed.clear()
        await out.changed.wait()
    return (int(found.group(1)), int(found.group(2))) if found.group(1) else (0, 0)


async def test_exec_sync_bounds_output_without_blocking_the_process(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    result = await exec_sync(client, task.container_id, ["sh", "-c", "head -c 300000 /dev/zero; echo e >&2"],
                             fifo_root=fifo_root, timeout=60, max_output=1000)
    assert result.exit_code == 0 and result.stdout == b"\0" * 1000 and result.stderr == b"e\n"


async def test_exec_sync_timeout_kills_the_process(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    with pytest.raises(errors.DeadlineExceeded):
        await exec_sync(client, task.container_id, ["sleep", "600"], fifo_root=fifo_root, timeout=0.5)
    # the fixture checks that the sleep is gone and its fifos removed


async def test_cancelled_exec_is_killed_and_deleted(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    out = Sink()
    work = asyncio.create_task(run_exec(client, task.container_id, ["sh", "-c", "echo started; sleep 600"],
                                        ExecStreams(tty=False, stdout=out), fifo_root=fifo_root))
    await asyncio.wait_for(out.wait_for(b"started"), 30)
    assert len(await task.pids()) > 1  # the exec is running next to init
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work


async def test_exec_errors_are_typed(client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    with pytest.raises(errors.NotFound):
        await exec_sync(client, "no-such-container", ["true"], fifo_root=fifo_root)
    with pytest.raises(errors.InvalidArgument):
        await exec_sync(client, task.container_id, [], fifo_root=fifo_root)
    with pytest.raises(errors.NarwhalError, match="no such file"):
        await exec_sync(client, task.container_id, ["/no/such/binary"], fifo_root=fifo_root, timeout=30)


async def test_execs_left_by_a_dead_narwhald_are_reaped(
        client: Client, task: ctrtask.RunningTask, fifo_root: Path) -> None:
    proc = ExecProcess(client, task.container_id, ["sleep", "600"], fifo_root=fifo_root, stdin=True)
    await proc.start()
    # Simulate narwhald dying: our ends of the fifos go away, the exec process and its directory stay.
    for transport in proc._transports:
        transport.close()
    assert proc._wait is not None
    proc._wait.cancel()
    assert len(await task.pids()) == 2
    assert await reap_stale_execs(client, fifo_root) == 1
    # the fixture checks that the process is gone and the fifo directory removed
