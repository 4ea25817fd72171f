"""Exec: run a process in a running containerd task, with its stdio relayed through fifos.

The process spec is the container's own ``process`` with the new args (and
``TERM=xterm`` for a TTY), as containerd's CRI does.  stdio goes through
fifos in a private directory: we hold stdout and stderr open with a second
"keeper" fd until ``Tasks.Start`` returns (the shim has opened its ends by then),
so we neither block on open nor read a premature EOF; after that, EOF on
stdout/stderr means the shim is done with them.  stdin is opened only once the
shim holds its reader, which it opens in the background (pkg.runtime.exec_stdin).

``run_exec`` serves an interactive session (``ExecStreams``); ``pkg.runtime.exec_sync``
captures bounded output with a timeout on top of it.  Both kill the process if they are
cancelled or time out, and always delete the exec process and its fifos.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.aio import CleanupStack
from pkg.containerd import containers as ctr_containers
from pkg.containerd import tasks as ctr_tasks
from pkg.containerd.client import Client
from pkg.runtime.exec_exits import EVENT_GRACE, ExecExits, StreamLost
from pkg.runtime.exec_stdin import ExecStdin
from pkg.runtime.process_specs import ProcessSpecs
from pkg.streaming.backend import ExecStreams, OutputStream

log = logging.getLogger(__name__)

OUTPUT_DRAIN_TIMEOUT = 2.0  # after exit, how long a backgrounded child may keep the output open
CLEANUP_TIMEOUT = 10.0


# A front end's exec options (env, working dir, user, privileged) edit the process spec before it is sent.
ProcessAdjust = Callable[[dict[str, Any]], dict[str, Any]]


def process_spec(container_spec: dict[str, Any], cmd: Sequence[str], tty: bool) -> dict[str, Any]:
    """The container's process with ``cmd`` as args (pure, for tests)."""
    process = dict(container_spec.get("process") or {})
    if not process:
        raise errors.FailedPrecondition("container spec has no process")
    process["args"] = list(cmd)
    process["terminal"] = tty
    process.pop("consoleSize", None)
    if tty:
        env = [e for e in process.get("env") or [] if not e.startswith("TERM=")]
        process["env"] = [*env, "TERM=xterm"]
    return process


def _open_pipe_pair(path: str) -> tuple[int, int]:
    """(our read end, keeper write end) on an output fifo: ours first, so neither open blocks."""
    ours = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    keeper = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    return ours, keeper


class ExecProcess:
    """One exec process: ``start()``, relay its stdio, ``wait()``, and always ``delete()``."""

    def __init__(self, client: Client, container_id: str, cmd: Sequence[str], *, fifo_root: Path,
                 tty: bool = False, stdin: bool = False, adjust: ProcessAdjust | None = None,
                 specs: ProcessSpecs | None = None, exits: ExecExits | None = None) -> None:
        if not cmd:
            raise errors.InvalidArgument("exec needs a command")
        self._client = client
        self.container_id = container_id
        self.cmd = tuple(cmd)
        self.tty = tty
        self.exec_id = secrets.token_hex(16)
        self._adjust = adjust
        self._specs = specs  # the containers' process specs, kept (None: read the spec from containerd)
        self._exits = exits  # exits from the task event stream (None: ask Wait)
        self._dir = fifo_root / container_id / self.exec_id  # the layout reap_stale_execs relies on
        # The shim needs stdout (and stderr without a TTY) even when nobody listens: unread output is drained.
        self._want = {"stdin": stdin, "stdout": True, "stderr": not tty}
        self._keepers: list[int] = []  # stdout's and stderr's writers, closed once Start returned
        self._fds: dict[str, int] = {}  # our ends of the fifos, until attached to the loop
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._stdin = ExecStdin(self._path("stdin")) if stdin else None
        self._transports: list[asyncio.BaseTransport] = []
        self._wait: asyncio.Task[int] | None = None
        self._created = False
        self._deleted = False
        self.pid = 0

    # ---- lifecycle ----
    async def start(self) -> None:
        async with CleanupStack(CLEANUP_TIMEOUT) as cleanup:
            cleanup.add("exec: delete process and fifos", self.delete)
            spec = await self._spec()
            what = f"exec in {self.container_id}"
            # On the loop: a dir, two or three fifos and their opens are a dozen syscalls under the state dir
            # (tmpfs /run by default); a thread hop each way cost more CPU than they do, even on ext4 (issue 21,
            # round three: "ExecSync's CPU"), and with the removal on the loop too no other thread races them.
            self._make_fifos()
            await ctr_tasks.exec_process(
                self._client, self.container_id, self.exec_id, spec, terminal=self.tty,
                stdin=self._path("stdin"), stdout=self._path("stdout"), stderr=self._path("stderr"), what=what)
            self._created = True
            await self._attach_fifos()
            # Wait is sent before Start, as containerd's own client and CRI do: the shim answers it at the exit
            # (or at once when the start fails), so the exit costs no round trip after Start returns (issue 21).
            self._wait = asyncio.create_task(self._wait_exit(), name=f"exec-wait-{self.exec_id[:12]}")
            await asyncio.sleep(0)  # the Wait goes out first
            self.pid = await ctr_tasks.start_process(self._client, self.container_id, self.exec_id, what=what)
            metrics_mod.current().execs.inc()
            self._close_keepers()
            if self._stdin is not None:
                self._stdin.start()
            cleanup.commit()

    async def _spec(self) -> dict[str, Any]:
        container_spec: dict[str, Any]
        if self._specs is not None:
            container_spec = {"process": await self._specs.get(self._client, self.container_id)}
        else:
            raw = await ctr_containers.spec_bytes(self._client, self.container_id,
                                                  what=f"container {self.container_id}")
            try:
                container_spec = json.loads(raw)
            except ValueError:
                raise errors.FailedPrecondition(f"container {self.container_id} has no valid OCI spec") from None
        process = process_spec(container_spec, self.cmd, self.tty)
        return self._adjust(process) if self._adjust is not None else process

    def _path(self, name: str) -> str:
        return str(self._dir / name) if self._want[name] else ""

    def _make_fifos(self) -> None:
        """Make the exec's dir and fifos and open them (our fds and their keepers: delete() closes what
        _attach_fifos did not take)."""
        # A finished exec of this container removes their dir once empty, after its client was answered (it did
        # so in another thread until round three of issue 21, and the dir vanished between any two steps here:
        # EEXIST from pathlib's exist_ok check, and ENOENT, under load); should anything else remove it, try again.
        for attempt in range(5):
            try:
                os.mkdir(self._dir.parent, 0o700)
            except FileExistsError:
                pass
            except FileNotFoundError:
                self._dir.parent.parent.mkdir(parents=True, exist_ok=True)  # the exec root itself
                continue
            try:
                os.mkdir(self._dir, 0o700)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        for name, wanted in self._want.items():
            if wanted:
                path = f"{self._dir}/{name}"
                os.mkfifo(path, 0o600)
                if name == "stdin":
                    continue  # opened once the shim holds its reader (ExecStdin)
                ours, keeper = _open_pipe_pair(path)
                self._keepers.append(keeper)
                self._fds[name] = ours

    async def _attach_fifos(self) -> None:
        loop = asyncio.get_running_loop()
        for name in ("stdout", "stderr"):
            if name not in self._fds:
                continue
            fd = self._fds.pop(name)
            reader = asyncio.StreamReader(limit=1 << 20)
            protocol = asyncio.StreamReaderProtocol(reader)
            read_transport, _ = await loop.connect_read_pipe(lambda p=protocol: p,  # type: ignore[misc]
                                                             os.fdopen(fd, "rb", buffering=0))
            self._transports.append(read_transport)
            setattr(self, name, reader)

    def _close_keepers(self) -> None:
        for fd in self._keepers:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keepers.clear()

    async def _wait_exit(self) -> int:
        event = self._exits.expect(self.container_id, self.exec_id) if self._exits is not None else None
        if event is not None:
            # The exit event the monitor reads anyway, instead of a Wait round trip (pkg.runtime.exec_exits);
            # Wait when it does not come in time or the stream broke.
            try:
                return await asyncio.wait_for(event, EVENT_GRACE)
            except (TimeoutError, StreamLost):
                pass
            finally:
                self._exits.forget(self.container_id, self.exec_id)  # type: ignore[union-attr]
        return await ctr_tasks.wait_process(self._client, self.container_id, self.exec_id,
                                            what=f"wait for exec in {self.container_id}")

    async def wait(self) -> int:
        if self._wait is None:
            raise errors.FailedPrecondition("exec process was not started")
        return await asyncio.shield(self._wait)

    @property
    def exited(self) -> bool:
        return self._wait is not None and self._wait.done()

    # ---- control ----
    async def write_stdin(self, data: bytes) -> None:
        """Written once the shim reads the fifo (ExecStdin)."""
        if self._stdin is not None:
            await self._stdin.write(data)

    async def close_stdin(self) -> None:
        """Our end (once the shim reads the fifo: ExecStdin), then the shim's (``CloseIO``): the process reads EOF."""
        if self._stdin is None:
            return
        await self._stdin.close()
        if not self.exited:
            with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
                await ctr_tasks.close_process_stdin(self._client, self.container_id, self.exec_id,
                                                    what="close exec stdin")

    async def resize(self, width: int, height: int) -> None:
        if not self.tty or self.exited:
            return
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
            await ctr_tasks.resize_process_pty(self._client, self.container_id, self.exec_id, width, height,
                                               what="resize exec tty")

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.exited:
            return
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
            await ctr_tasks.kill_process(self._client, self.container_id, self.exec_id, sig,
                                         what="kill exec process")

    async def delete(self) -> None:
        """Kill if still running, delete the exec process, close and remove the fifos. Idempotent."""
        if self._deleted:
            return
        self._deleted = True
        self._close_keepers()
        if self._stdin is not None:
            await self._stdin.release()
        for fd in self._fds.values():  # opened but not attached: the start failed
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._created:
            if self.pid and self._wait is not None and not self._wait.done():  # started: kill it, see it exit
                await self.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._wait), CLEANUP_TIMEOUT)
            with contextlib.suppress(errors.NotFound):
                await ctr_tasks.delete_process(self._client, self.container_id, self.exec_id,
                                               what="delete exec process")
        if self._wait is not None:
            if not self._wait.done():
                self._wait.cancel()  # a process that never started: the shim may never answer its Wait
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._wait  # (also retrieves the error of a Wait that failed with the start)
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        # On the loop, by name (two or three unlinks, two rmdirs; rmtree's scan and a thread hop cost more).
        _remove_exec_dir(self._dir, [name for name, wanted in self._want.items() if wanted])


def _remove_exec_dir(path: Path, names: Sequence[str] | None = None) -> None:
    """An exec's fifo dir (``names``: the fifos it holds; None: whatever it holds), then the container's dir
    once its last exec is gone."""
    top = str(path)
    if names is not None:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(f"{top}/{name}")
    try:
        os.rmdir(top)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(top, ignore_errors=True)  # something else in there
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(top))


async def reap_stale_execs(client: Client, fifo_root: Path) -> int:
    """Kill and delete exec processes a previous narwhald left behind (it died mid-exec); remove their fifos.

    Run once at start-up, before any exec: every directory under ``fifo_root`` is then stale.
    Returns how many were reaped.
    """
    stale = await asyncio.to_thread(
        lambda: [d for c in fifo_root.iterdir() if c.is_dir() for d in c.iterdir()] if fifo_root.is_dir() else [])
    for exec_dir in stale:
        container_id, exec_id = exec_dir.parent.name, exec_dir.name
        with contextlib.suppress(errors.NarwhalError):
            await ctr_tasks.kill_process(client, container_id, exec_id, signal.SIGKILL, what="kill stale exec")
            await ctr_tasks.wait_process(client, container_id, exec_id, what="wait for stale exec",
                                         timeout=CLEANUP_TIMEOUT)
        with contextlib.suppress(errors.NarwhalError):
            await ctr_tasks.delete_process(client, container_id, exec_id, what="delete stale exec")
        await asyncio.to_thread(_remove_exec_dir, exec_dir)
    if stale:
        log.info("reaped %d exec process(es) left by a previous run", len(stale))
    return len(stale)


async def _copy_out(reader: asyncio.StreamReader | None, sink: OutputStream | None) -> None:
    """Relay to the client; if the client is gone keep draining so the process never blocks on a full pipe."""
    if reader is None:
        return
    while data := await reader.read(32 * 1024):
        if sink is not None:
            try:
                await sink.write(data)
            except ConnectionError:
                sink = None


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def run_exec(client: Client, container_id: str, cmd: Sequence[str], streams: ExecStreams, *,
                   fifo_root: Path, adjust: ProcessAdjust | None = None,
                   on_started: Callable[[ExecProcess], None] | None = None,
                   on_exit: Callable[[int], None] | None = None,
                   specs: ProcessSpecs | None = None, exits: ExecExits | None = None) -> int:
    """An interactive exec: relay ``streams`` until the process exits; its exit code.

    Cancelling this (the client went away) kills the process; it is always deleted.
    ``on_started`` sees the running process (an exec's inspect and resize need it); ``on_exit`` its exit
    code, once its output is relayed and before the process is deleted (a front end may answer its client
    then, as moby deletes an exec's process after reporting its exit).
    """
    proc = ExecProcess(client, container_id, cmd, fifo_root=fifo_root, tty=streams.tty,
                       stdin=streams.stdin is not None, adjust=adjust, specs=specs, exits=exits)
    await proc.start()
    if on_started is not None:
        on_started(proc)
    helpers: list[asyncio.Task[None]] = []
    try:
        outputs = [asyncio.create_task(_copy_out(proc.stdout, streams.stdout)),
                   asyncio.create_task(_copy_out(proc.stderr, streams.stderr))]
        helpers += outputs
        if streams.stdin is not None:
            helpers.append(asyncio.create_task(_copy_in(proc, streams)))
        if streams.resize is not None and streams.tty:
            helpers.append(asyncio.create_task(_resizes(proc, streams)))
        code = await proc.wait()
        # The output may still be in flight; a backgrounded child can hold it open, so bound the wait.
        await asyncio.wait(outputs, timeout=OUTPUT_DRAIN_TIMEOUT)
        if on_exit is not None:
            on_exit(code)
        return code
    finally:
        await asyncio.shield(_finish_and_delete(helpers, proc))


async def _finish_and_delete(helpers: list[asyncio.Task[None]], proc: ExecProcess) -> None:
    await _finish(helpers)
    await proc.delete()


async def _copy_in(proc: ExecProcess, streams: ExecStreams) -> None:
    assert streams.stdin is not None
    while data := await streams.stdin.read():
        await proc.write_stdin(data)
    await proc.close_stdin()


async def _resizes(proc: ExecProcess, streams: ExecStreams) -> None:
    assert streams.resize is not None
    while (size := await streams.resize.next()) is not None:
        await proc.resize(size.width, size.height)
