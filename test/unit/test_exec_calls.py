"""The containerd calls of one exec (issue 21): Wait is in flight before Start, as containerd's own client sends
it, and an ExecSync is answered at the exit, its DeleteProcess and fifos following in the background.

A fake containerd at the ``pkg.containerd.tasks`` seam; the fifos are real (under tmp_path): with no shim
holding their write ends, stdout and stderr read EOF once the keepers close after Start.
"""
from __future__ import annotations

import asyncio
import os
import threading
import types
from pathlib import Path
from typing import Any, cast

import pytest

from pkg import errors
from pkg.containerd import events as ctr_events
from pkg.containerd.client import Client
from pkg.runtime import exec as exec_mod
from pkg.runtime import exec_sync as exec_sync_mod
from pkg.runtime import monitor as monitor_mod
from pkg.runtime.exec_exits import ExecExits, StreamLost
from pkg.runtime.monitor import ExitMonitor
from pkg.runtime.process_specs import ProcessSpecs
from pkg.streaming.backend import ExecStreams

CLIENT = cast(Client, object())
PROCESS = {"args": ["sleep", "inf"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}}


class FakeShim:
    """Exec, Start, Wait, Kill, DeleteProcess of one container; ``calls`` in the order they were sent."""

    def __init__(self, start_error: errors.NarwhalError | None = None) -> None:
        self.calls: list[str] = []
        self.exited = asyncio.Event()
        self.deleting = asyncio.Event()  # DeleteProcess answers once set
        self.deleting.set()
        self.start_error = start_error
        self.waits_in_flight_at_start = -1
        self._waiting = 0

    async def exec_process(self, client: Client, container_id: str, exec_id: str, spec: dict[str, Any],
                           **_: Any) -> None:
        self.calls.append("Exec")

    async def start_process(self, client: Client, container_id: str, exec_id: str, *, what: str) -> int:
        self.calls.append("Start")
        self.waits_in_flight_at_start = self._waiting
        await asyncio.sleep(0.01)  # the runc exec
        if self.start_error is not None:
            raise self.start_error
        self.exited.set()  # `true` exits at once
        return 4242

    async def wait_process(self, client: Client, container_id: str, exec_id: str, *, what: str,
                           timeout: float | None = None) -> int:
        self.calls.append("Wait")
        self._waiting += 1
        try:
            await self.exited.wait()  # a process that never started: only a cancel ends this
        finally:
            self._waiting -= 1
        return 3

    async def kill_process(self, client: Client, container_id: str, exec_id: str, sig: int, *, what: str) -> None:
        self.calls.append("Kill")

    async def delete_process(self, client: Client, container_id: str, exec_id: str, *, what: str) -> None:
        await self.deleting.wait()
        self.calls.append("DeleteProcess")


@pytest.fixture
def shim(monkeypatch: pytest.MonkeyPatch) -> FakeShim:
    fake = FakeShim()
    for name in ("exec_process", "start_process", "wait_process", "kill_process", "delete_process"):
        monkeypatch.setattr(exec_mod.ctr_tasks, name, getattr(fake, name))
    return fake


def _specs() -> ProcessSpecs:
    specs = ProcessSpecs()
    specs.put("c1", {"ociVersion": "1.0.2", "process": PROCESS})
    return specs


async def test_wait_is_in_flight_before_start(shim: FakeShim, tmp_path: Path) -> None:
    result = await exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs())
    await exec_sync_mod.settle()
    assert result == exec_sync_mod.ExecResult(3, b"", b"")
    assert shim.calls == ["Exec", "Wait", "Start", "DeleteProcess"]
    assert shim.waits_in_flight_at_start == 1  # sent before Start, not after it returned
    assert not any(tmp_path.iterdir())  # the exec's fifos and the container's dir are gone


async def test_exec_sync_answers_before_the_process_is_deleted(shim: FakeShim, tmp_path: Path) -> None:
    shim.deleting.clear()  # DeleteProcess hangs until released
    result = await asyncio.wait_for(
        exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs()), 5)
    assert result.exit_code == 3 and "DeleteProcess" not in shim.calls
    await asyncio.wait_for(exec_sync_mod.settle("c2"), 1)  # another container's removal does not wait for it
    await exec_sync_mod.settle("c1", timeout=0.05)  # c1's would, for at most its timeout
    assert "DeleteProcess" not in shim.calls
    shim.deleting.set()
    await asyncio.wait_for(exec_sync_mod.settle("c1"), 5)
    assert shim.calls[-1] == "DeleteProcess" and not any(tmp_path.iterdir())


async def test_a_start_failure_is_raised_and_its_wait_cancelled(monkeypatch: pytest.MonkeyPatch, shim: FakeShim,
                                                                tmp_path: Path) -> None:
    shim.start_error = errors.FailedPrecondition("OCI runtime exec failed: executable file not found in $PATH")
    with pytest.raises(errors.FailedPrecondition, match="executable file not found"):
        await asyncio.wait_for(exec_sync_mod.exec_sync(CLIENT, "c1", ["nope"], fifo_root=tmp_path, specs=_specs()), 5)
    await asyncio.wait_for(exec_sync_mod.settle(), 5)
    # Never started, so not killed (nor waited for: its Wait, unanswered by the shim, is cancelled); deleted.
    assert shim.calls == ["Exec", "Wait", "Start", "DeleteProcess"]
    assert not any(tmp_path.iterdir())


async def test_a_timeout_kills_and_deletes(shim: FakeShim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def start_forever(client: Client, container_id: str, exec_id: str, *, what: str) -> int:
        shim.calls.append("Start")
        return 4242  # started, never exits until killed

    async def kill(client: Client, container_id: str, exec_id: str, sig: int, *, what: str) -> None:
        shim.calls.append("Kill")
        shim.exited.set()

    monkeypatch.setattr(exec_mod.ctr_tasks, "start_process", start_forever)
    monkeypatch.setattr(exec_mod.ctr_tasks, "kill_process", kill)
    with pytest.raises(errors.DeadlineExceeded):
        await exec_sync_mod.exec_sync(CLIENT, "c1", ["sleep", "9"], fifo_root=tmp_path, timeout=0.05, specs=_specs())
    await asyncio.wait_for(exec_sync_mod.settle(), 5)
    assert shim.calls == ["Exec", "Wait", "Start", "Kill", "DeleteProcess"]
    assert not any(tmp_path.iterdir())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_fifos_are_made_while_exec_is_sent_and_closed_when_it_fails(shim: FakeShim, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shim opens the fifos only at Start; they exist (made on the loop, no thread hop) while Exec is in
    flight; an Exec that fails leaves no fd open and no fifo behind."""
    made_during_exec: list[bool] = []

    async def exec_fails(client: Client, container_id: str, exec_id: str, spec: dict[str, Any], **_: Any) -> None:
        shim.calls.append("Exec")
        await asyncio.sleep(0)
        made_during_exec.append(any(tmp_path.rglob("stdout")))
        raise errors.NotFound("container c1 not found")

    monkeypatch.setattr(exec_mod.ctr_tasks, "exec_process", exec_fails)
    before = _open_fds()
    with pytest.raises(errors.NotFound):
        await exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs())
    await asyncio.wait_for(exec_sync_mod.settle(), 5)
    assert made_during_exec == [True] and shim.calls == ["Exec"]  # never created: nothing to delete
    assert _open_fds() == before and not any(tmp_path.iterdir())


async def test_a_fifo_failure_deletes_the_created_process(shim: FakeShim, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def mkfifo(path: Any, mode: int = 0o666) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exec_mod.os, "mkfifo", mkfifo)
    before = _open_fds()
    with pytest.raises(OSError, match="No space left"):
        await exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs())
    await asyncio.wait_for(exec_sync_mod.settle(), 5)
    # The fifos are made before Exec is sent: no process was created, none is deleted.
    assert shim.calls == [] and _open_fds() == before and not any(tmp_path.iterdir())


# ---- the exit from the task event stream instead of Wait (pkg.runtime.exec_exits; issue 21, round three) ----

class EventShim(FakeShim):
    """The shim whose exec's exit also reaches ``exits`` as the ExitMonitor hands it the ``/tasks/exit`` event
    (``deliver``: False drops the event, as a lost one)."""

    def __init__(self, exits: ExecExits, deliver: bool = True) -> None:
        super().__init__()
        self.exits = exits
        self.deliver = deliver

    async def start_process(self, client: Client, container_id: str, exec_id: str, *, what: str) -> int:
        pid = await super().start_process(client, container_id, exec_id, what=what)
        if self.deliver:
            asyncio.get_running_loop().call_soon(self.exits.exited, container_id, exec_id, 3)
        return pid


def _event_shim(monkeypatch: pytest.MonkeyPatch, deliver: bool = True, live: bool = True) -> EventShim:
    exits = ExecExits()
    if live:
        exits.connected()
    fake = EventShim(exits, deliver)
    for name in ("exec_process", "start_process", "wait_process", "kill_process", "delete_process"):
        monkeypatch.setattr(exec_mod.ctr_tasks, name, getattr(fake, name))
    return fake


async def test_the_exit_event_answers_without_a_wait_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shim = _event_shim(monkeypatch)
    result = await asyncio.wait_for(
        exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs(), exits=shim.exits), 5)
    await exec_sync_mod.settle()
    assert result == exec_sync_mod.ExecResult(3, b"", b"")
    assert shim.calls == ["Exec", "Start", "DeleteProcess"]  # no Wait round trip
    assert not shim.exits._waiting and not any(tmp_path.iterdir())


async def test_no_stream_read_means_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shim = _event_shim(monkeypatch, deliver=False, live=False)  # the monitor has seen no event yet
    result = await asyncio.wait_for(
        exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs(), exits=shim.exits), 5)
    await exec_sync_mod.settle()
    assert result.exit_code == 3 and shim.calls == ["Exec", "Wait", "Start", "DeleteProcess"]


async def test_a_lost_event_falls_back_to_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(exec_mod, "EVENT_GRACE", 0.05)
    shim = _event_shim(monkeypatch, deliver=False)
    result = await asyncio.wait_for(
        exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs(), exits=shim.exits), 5)
    await exec_sync_mod.settle()
    assert result.exit_code == 3 and shim.calls == ["Exec", "Start", "Wait", "DeleteProcess"]
    assert not shim.exits._waiting


async def test_a_broken_stream_falls_back_to_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shim = _event_shim(monkeypatch, deliver=False)
    real_start = shim.start_process

    async def start_then_stream_breaks(client: Client, container_id: str, exec_id: str, *, what: str) -> int:
        pid = await real_start(client, container_id, exec_id, what=what)
        shim.exits.disconnected()  # the monitor's stream broke: the exec must not wait for its event
        return pid

    monkeypatch.setattr(exec_mod.ctr_tasks, "start_process", start_then_stream_breaks)
    result = await asyncio.wait_for(
        exec_sync_mod.exec_sync(CLIENT, "c1", ["true"], fifo_root=tmp_path, specs=_specs(), exits=shim.exits), 0.5)
    await exec_sync_mod.settle()
    assert result.exit_code == 3 and shim.calls == ["Exec", "Start", "Wait", "DeleteProcess"]
    assert shim.exits.expect("c1", "x") is None  # until the stream delivers again


def test_exits_of_execs_nobody_waits_for_are_ignored() -> None:
    exits = ExecExits()
    exits.exited("c1", "e1", 0)  # the monitor sees every exec's exit, Docker's detached ones too
    assert not exits._waiting


async def test_the_monitor_hands_execs_exits_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """ExitMonitor: an exec process's ``/tasks/exit`` reaches the exec waiting for it; the stream's first event
    makes execs rely on it, its end makes them ask Wait again."""
    exits = ExecExits()
    ctx = types.SimpleNamespace(exec_exits=exits, client=CLIENT)
    monitor = ExitMonitor(cast(Any, types.SimpleNamespace(ctx=ctx)), cast(Any, None))

    async def reconcile_all() -> None:
        return None

    delivered = asyncio.Queue[ctr_events.TaskExit]()

    async def subscribe(client: Any) -> Any:
        while True:
            yield await delivered.get()

    monkeypatch.setattr(monitor, "reconcile_all", reconcile_all)
    monkeypatch.setattr(monitor_mod.events, "subscribe", subscribe)
    run = asyncio.create_task(monitor.run())
    await asyncio.wait_for(monitor.connected.wait(), 5)
    assert exits.expect("c1", "e0") is None  # no event through the stream yet
    delivered.put_nowait(ctr_events.TaskExit("c1", "e0", 1, 0, 0))  # another exec's
    while exits.expect("c1", "e1") is None:
        await asyncio.sleep(0.01)
    waiting = exits._waiting[("c1", "e1")]
    delivered.put_nowait(ctr_events.TaskExit("c1", "e1", 7, 126, 0))
    assert await asyncio.wait_for(waiting, 5) == 126
    lost = exits.expect("c1", "e2")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert lost is not None and isinstance(lost.exception(), StreamLost) and exits.expect("c1", "e3") is None


async def test_an_execs_exit_does_not_wait_behind_a_containers_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's exit path (Tasks.Delete, its logger) is handled in order, one at a time; an exec's exit read
    meanwhile reaches its exec at once."""
    exits = ExecExits()
    releasing = asyncio.Event()
    handled: list[str] = []

    async def handle_exit(container_id: str, exit_status: int, exited_at_ns: int) -> None:
        await releasing.wait()
        handled.append(container_id)

    ctx = types.SimpleNamespace(exec_exits=exits, client=CLIENT,
                                containers=types.SimpleNamespace(find=lambda cid: object()))
    monitor = ExitMonitor(cast(Any, types.SimpleNamespace(ctx=ctx, handle_exit=handle_exit)), cast(Any, None))

    async def reconcile_all() -> None:
        return None

    delivered = asyncio.Queue[ctr_events.TaskExit]()

    async def subscribe(client: Any) -> Any:
        while True:
            yield await delivered.get()

    monkeypatch.setattr(monitor, "reconcile_all", reconcile_all)
    monkeypatch.setattr(monitor_mod.events, "subscribe", subscribe)
    run = asyncio.create_task(monitor.run())
    delivered.put_nowait(ctr_events.TaskExit("c0", "c0", 1, 0, 0))  # a container's exit: its handling hangs
    while exits.expect("c1", "e1") is None:
        await asyncio.sleep(0.01)
    waiting = exits._waiting[("c1", "e1")]
    delivered.put_nowait(ctr_events.TaskExit("c1", "e1", 7, 0, 0))
    assert await asyncio.wait_for(waiting, 5) == 0 and handled == []
    releasing.set()
    while not handled:
        await asyncio.sleep(0.01)
    assert handled == ["c0"]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


# ---- stdin: the shim opens its reader in the background (pkg.runtime.exec_stdin) ----

class Input:
    def __init__(self, data: bytes) -> None:
        self.chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
        self.read_from = threading.Event()

    async def read(self) -> bytes:
        self.read_from.set()
        return self.chunks.pop(0) if self.chunks else b""


def _writers_of(path: str) -> int:
    """How many fds of this process hold ``path`` open for writing."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != path:
                continue
            flags = next(line for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                         if line.startswith("flags:"))
        except (OSError, StopIteration):
            continue
        count += int(flags.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return count


class LateReaderShim:
    """The runc v2 shim's stdin as containerd/fifo has it: a goroutine opens the fifo for reading with a
    *blocking* open (it returns once some writer holds the fifo) and copies until EOF.  Here the goroutine runs
    as late as it can: once narwhald has read its client's input and holds no write end of the fifo (before
    the fix: after narwhald wrote it all and closed its end; with ``opens_reader`` False, never)."""

    def __init__(self, shim: FakeShim, monkeypatch: pytest.MonkeyPatch, stdin: Input,
                 opens_reader: bool = True) -> None:
        self.shim = shim
        self.stdin = stdin
        self.opens_reader = opens_reader
        self.got = bytearray()
        self.eof = asyncio.Event()
        self.exits = asyncio.Event()
        self.threads: list[threading.Thread] = []
        self.path = ""
        for name in ("exec_process", "start_process", "wait_process", "close_process_stdin"):
            monkeypatch.setattr(exec_mod.ctr_tasks, name, getattr(self, name))

    async def exec_process(self, client: Client, container_id: str, exec_id: str, spec: dict[str, Any], *,
                           stdin: str, **_: Any) -> None:
        self.shim.calls.append("Exec")
        self.path = stdin

    def _goroutine(self, loop: asyncio.AbstractEventLoop) -> None:
        while not (self.stdin.read_from.is_set() and _writers_of(self.path) == 0):
            threading.Event().wait(0.001)  # the condition the goroutine is late for, polled
        fd = os.open(self.path, os.O_RDONLY)  # blocks until a writer holds the fifo
        try:
            while chunk := os.read(fd, 65536):
                self.got.extend(chunk)
        finally:
            os.close(fd)
        loop.call_soon_threadsafe(self.eof.set)

    async def start_process(self, client: Client, container_id: str, exec_id: str, *, what: str) -> int:
        self.shim.calls.append("Start")
        if self.opens_reader:
            thread = threading.Thread(target=self._goroutine, args=(asyncio.get_running_loop(),), daemon=True)
            self.threads.append(thread)
            thread.start()
        else:
            self.eof.set()  # the process exits without reading (and the shim never opens its reader)
        return 4242

    async def wait_process(self, client: Client, container_id: str, exec_id: str, *, what: str,
                           timeout: float | None = None) -> int:
        await self.eof.wait()  # `cat` exits at its input's end
        return 0

    async def close_process_stdin(self, client: Client, container_id: str, exec_id: str, *, what: str) -> None:
        self.shim.calls.append("CloseIO")


@pytest.mark.parametrize("size", [0, 20_000, 200_000])
async def test_stdin_is_written_once_the_shims_late_reader_is_there(shim: FakeShim, tmp_path: Path, size: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Input under the fifo's 64 KiB (or none) and its EOF used to be written and closed before the shim's
    reader goroutine opened, which then waited for a writer forever (`docker exec -i c cat` hung now and then
    once Start and CloseIO went straight to the shim).  Our end now opens only once the shim's reader is
    there, whatever the input's size."""
    data = os.urandom(size)
    stdin = Input(data)
    late = LateReaderShim(shim, monkeypatch, stdin)
    streams = ExecStreams(tty=False, stdin=stdin)  # type: ignore[arg-type]
    code = await asyncio.wait_for(
        exec_mod.run_exec(CLIENT, "c1", ["cat"], streams, fifo_root=tmp_path, specs=_specs()), 10)
    assert code == 0 and bytes(late.got) == data
    assert shim.calls == ["Exec", "Start", "CloseIO", "DeleteProcess"]
    assert not any(tmp_path.iterdir())


async def test_a_shim_that_never_opens_its_reader_leaves_nothing_behind(shim: FakeShim, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The process exits without the shim ever reading stdin (it died): the open waiting for its reader ends
    with the exec, whose fds and fifos are all gone."""
    stdin = Input(b"x" * 1000)
    LateReaderShim(shim, monkeypatch, stdin, opens_reader=False)
    before = _open_fds()
    code = await asyncio.wait_for(exec_mod.run_exec(CLIENT, "c1", ["cat"], ExecStreams(
        tty=False, stdin=stdin), fifo_root=tmp_path, specs=_specs()), 10)  # type: ignore[arg-type]
    assert code == 0 and shim.calls == ["Exec", "Start", "DeleteProcess"]
    assert _open_fds() == before and not any(tmp_path.iterdir())
