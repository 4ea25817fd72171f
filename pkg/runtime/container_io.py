"""A container's stdio: where containerd's shim sends stdout/stderr (the CRI log via
narwhal-logger or the log service), the stdin fifo for attach, and how we learn about OOM kills.

With ``log-service: true`` every container gets fifo stdio instead, read by the instance's one log
service (pkg.logs.service): no process per container.  narwhald registers the fifos with the service
before the task is created, holds write ends of them until the shim has opened its own (so the service
sees no early EOF), and the exit path waits for the service's word that both streams ended.

Output always reaches the log through a narwhal-logger process that does not
depend on narwhald.  Normally the shim runs it (a ``binary://`` log URI).  The
shim's binary IO has no stdin, though (containerd's ``binaryIO.Stdin`` is nil),
so a container with stdin and no TTY gets fifos instead: narwhald starts the
logger itself in its own session on the fifos' read ends, and the shim copies
the container's pipes into them as it does for any fifo stdio.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pkg import errors
from pkg.cgroups.oom import was_oom_killed
from pkg.logs import binary as log_binary
from pkg.logs.service import StreamSpec
from pkg.logs.writer import F_SETPIPE_SZ, PIPE_SIZE, STATS_SUFFIX
from pkg.model.container import ContainerConfig, ContainerMetadata
from pkg.runtime import attach
from pkg.runtime.context import RuntimeContext

log = logging.getLogger(__name__)

LOGGER_READY_TIMEOUT = 10.0
# After the task is deleted, how long its logger may take to write what is left (it drains for up to
# logger.DRAIN_AFTER_TERM after the shim's SIGTERM; the shim itself waits for it up to 12 s).
LOGGER_EXIT_WAIT = 10.0


@dataclass(frozen=True)
class Stdio:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    # The log service's registration of the fifos, still on its way while the task is created (narwhald holds
    # ends of both fifos, so the shim can open them meanwhile): ``ready`` before the task starts.
    registering: asyncio.Future[None] | None = None

    async def ready(self) -> None:
        """Once the fifos' reader is in place: the container may start writing."""
        if self.registering is not None:
            await self.registering


def logger_pid_file(ctx: RuntimeContext, container_id: str) -> Path:
    return ctx.container_state(container_id) / "logger.pid"


def log_stats_file(ctx: RuntimeContext, container_id: str) -> Path:
    """Where the container's narwhal-logger reports its totals (for the log metrics)."""
    return ctx.container_state(container_id) / f"logger.pid{STATS_SUFFIX}"


@contextlib.asynccontextmanager
async def task_stdio(ctx: RuntimeContext, metadata: ContainerMetadata) -> AsyncIterator[Stdio]:
    """The stdio URIs for creating the task; valid until the task has started (the block's end)."""
    config = metadata.config
    stdin = ""
    if config.stdin:
        fifo = attach.stdin_fifo(ctx, metadata.id)
        ctx.stdin.open(fifo, metadata.id)
        stdin = str(fifo)
    log_path = attach.output_log(ctx, metadata)
    if not log_path:
        yield Stdio()  # no log path and nothing to attach to: output is discarded, as containerd does
        return
    if ctx.log_service is not None:
        async with _service_fifos(ctx, log_path, metadata) as (stdout, stderr, registering):
            yield Stdio(stdin=stdin, stdout=stdout, stderr=stderr, registering=registering)
        return
    pid_file = logger_pid_file(ctx, metadata.id)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    if config.tty or not config.stdin:
        uri = log_binary.logger_uri(log_path, pid_file=pid_file, tty=config.tty, binary=ctx.logger,
                                    rotation=_rotation(config))
        yield Stdio(stdin=stdin, stdout=uri, stderr="" if config.tty else uri)
        return
    async with _fifo_logger(ctx, log_path, metadata.id, pid_file, _rotation(config)) as (stdout, stderr):
        yield Stdio(stdin=stdin, stdout=stdout, stderr=stderr)


@contextlib.asynccontextmanager
async def _fifo_logger(ctx: RuntimeContext, log_path: str, container_id: str, pid_file: Path,
                       rotation: tuple[int, int, bool] | None = None) -> AsyncIterator[tuple[str, str]]:
    directory = ctx.container_state(container_id)
    fifos = [directory / "stdout", directory / "stderr"]
    fds: list[int] = []
    try:
        for fifo in fifos:
            if not fifo.exists():
                os.mkfifo(fifo, 0o600)
            # Read ends for the logger.
            fds.append(_high(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)))
        # Keepers: write ends held until the shim has opened its own, so the logger sees no early EOF.
        keepers = [os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC) for fifo in fifos]
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        fds.append(ready_r)
        ready_w = _high(ready_w)
        fds.append(ready_w)
        out_fd, err_fd = fds[0], fds[1]
        args = [str(ctx.logger or log_binary.logger_binary()), "path", log_path, "pid-file", str(pid_file),
                "stdout-fd", str(out_fd), "stderr-fd", str(err_fd), "ready-fd", str(ready_w)]
        for key, value in log_binary.rotation_args(rotation).items():
            args += [key, value]
        # Its own session: the logger outlives narwhald, as the shim-run one does.
        proc = await asyncio.create_subprocess_exec(
            *args, pass_fds=(out_fd, err_fd, ready_w), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(ready_w)
        fds.remove(ready_w)
        await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), LOGGER_READY_TIMEOUT)
        if proc.returncode is not None:
            raise errors.Internal(f"narwhal-logger exited with {proc.returncode} before it was ready")
        for fd in (out_fd, err_fd):
            os.close(fd)
            fds.remove(fd)
        try:
            yield str(fifos[0]), str(fifos[1])
        finally:
            for fd in keepers:
                os.close(fd)
    except (TimeoutError, OSError) as exc:
        raise errors.Internal(f"starting the logger of {container_id}: {exc!r}") from exc
    finally:
        for fd in fds:
            os.close(fd)


def stream_key(ctx: RuntimeContext, container_id: str) -> str:
    """The container's registration with the log service (one service serves both domains)."""
    return f"{ctx.domain or 'cri'}-{container_id}"


@contextlib.asynccontextmanager
async def _service_fifos(ctx: RuntimeContext, log_path: str,
                         metadata: ContainerMetadata) -> AsyncIterator[tuple[str, str, asyncio.Future[None]]]:
    """The stdout (and, without a TTY, stderr) fifos, and their registration with the log service, on its way
    while the caller creates the task (one round trip to the service less before Tasks.Create); the fifos are
    valid until the task is created, when the shim holds its own ends.  Our ends stay open until the
    registration has settled, so the service never sees an EOF before the container ran."""
    assert ctx.log_service is not None
    config = metadata.config
    directory = ctx.container_state(metadata.id)
    directory.mkdir(parents=True, exist_ok=True)
    fifos = [directory / "stdout"] + ([] if config.tty else [directory / "stderr"])
    rotation = _rotation(config)
    max_size, max_files, compress = rotation if rotation is not None and rotation[0] > 0 else (0, 1, False)
    spec = StreamSpec(path=log_path, stdout=str(fifos[0]), stderr=str(fifos[1]) if len(fifos) > 1 else "",
                      stats=str(log_stats_file(ctx, metadata.id)), max_size=max_size, max_files=max_files,
                      compress=compress)
    fds: list[int] = []
    try:
        for fifo in fifos:
            if not fifo.exists():
                os.mkfifo(fifo, 0o600)
            # A read end of our own, so the keeper's non-blocking write open succeeds, then the keeper: a write
            # end held until the shim has opened its own, so the service sees no EOF before the container runs.
            fds.append(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise errors.Internal(f"the log fifos of {metadata.id}: {exc!r}") from exc
    registering = asyncio.ensure_future(_register(ctx, metadata.id, spec))
    try:
        yield spec.stdout, spec.stderr, registering
    finally:
        try:
            await asyncio.wait({registering})  # a failed create still waits: the service must not see our ends go
            if not registering.cancelled():
                registering.exception()  # retrieved here when the caller never asked (its create failed)
        finally:
            for fd in fds:
                os.close(fd)


async def _register(ctx: RuntimeContext, container_id: str, spec: StreamSpec) -> None:
    assert ctx.log_service is not None
    try:
        await ctx.log_service.add(stream_key(ctx, container_id), spec)
    except OSError as exc:
        raise errors.Internal(f"the log fifos of {container_id}: {exc!r}") from exc


def widen_output_pipes(ctx: RuntimeContext, metadata: ContainerMetadata, pid: int) -> None:
    """Once the task is created: grow the container's own stdout/stderr pipes (the shim's, which it copies
    into the fifos) to ``PIPE_SIZE``, as narwhal-logger does for the pipes it reads.

    With fifo stdio nobody else does: at the kernel's 64 KiB a busy container blocks on every few of the
    shim's 32 KiB copies (issue 21's log-throughput row).  The pipe is reached through the init process's
    ``/proc/<pid>/fd/1`` and ``2``, opened read-only for the one fcntl (an extra read end never delays EOF).
    Best effort: a TTY, a pipe already gone, ``pipe-max-size`` or the per-user pipe limits leave it as is."""
    if metadata.config.tty or pid <= 0 or not attach.output_log(ctx, metadata):
        return
    grow_stdio_pipes(pid)


def grow_stdio_pipes(pid: int) -> None:
    """``PIPE_SIZE`` for the pipes that are ``pid``'s fds 1 and 2 (others, and failures, are left alone)."""
    for n in (1, 2):
        link = f"/proc/{pid}/fd/{n}"
        try:
            if not os.readlink(link).startswith("pipe:"):
                continue
            fd = os.open(link, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # EPERM (limits) or EBUSY (more in it than the new size): the default size stays
        finally:
            os.close(fd)


def _rotation(config: ContainerConfig) -> tuple[int, int, bool] | None:
    r = config.log_rotation
    return (r.max_size, r.max_files, r.compress) if r is not None else None


def _high(fd: int) -> int:
    """Move ``fd`` to a number >= 100 (close-on-exec), clear of the low numbers subprocesses use."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return high


async def logger_running(ctx: RuntimeContext, metadata: ContainerMetadata) -> None:
    """Before the exited task is deleted: wait (bounded) until the container's logger runs.

    The shim starts the container as soon as the launcher says "ready", before the logger is up
    (``log_binary.write_launcher``), and deleting the task sends the logger SIGTERM: a container
    that was over within the logger's start-up lost all its output, log file included (seen with a
    12-container CRI loop on an idle machine).  The pid file is written once the log file is open
    and SIGTERM is handled, so from then on the SIGTERM only makes it drain.
    """
    if ctx.log_service is not None or not attach.output_log(ctx, metadata):
        return  # the service opened the fifos before the task was created
    pid_file = logger_pid_file(ctx, metadata.id)
    deadline = time.monotonic() + log_binary.STARTUP_GRACE
    while await asyncio.to_thread(log_binary.read_pid_file, pid_file) is None:
        if time.monotonic() > deadline:
            log.warning("container %s: its logger did not start within %.0f s", metadata.id[:12],
                        log_binary.STARTUP_GRACE)
            return
        await asyncio.sleep(0.01)


async def logger_exited(ctx: RuntimeContext, container_id: str) -> None:
    """Wait until the container's logger has exited, so its log is complete.

    The shim waits for the logger it runs when the task is deleted; the one narwhald starts on fifos
    (stdin without a TTY) sees EOF only then and still has to write what it read.  The log service says
    when both of the container's fifos reached EOF and the last record is written."""
    if ctx.log_service is not None:
        if not await ctx.log_service.wait_done(stream_key(ctx, container_id), LOGGER_EXIT_WAIT):
            log.warning("container %s: the log service still reads its output %.0f s after the exit",
                        container_id[:12], LOGGER_EXIT_WAIT)
        return
    if not await log_binary.wait_logger_exit(logger_pid_file(ctx, container_id), LOGGER_EXIT_WAIT):
        log.warning("container %s: its logger still runs %.0f s after the exit", container_id[:12],
                    LOGGER_EXIT_WAIT)


async def reopen_log(ctx: RuntimeContext, metadata: ContainerMetadata) -> None:
    if ctx.log_service is not None:
        await ctx.log_service.reopen(stream_key(ctx, metadata.id))
        return
    await log_binary.reopen_container_log(logger_pid_file(ctx, metadata.id))


def oom_killed(metadata: ContainerMetadata) -> bool:
    """Fallback when no /tasks/oom event was seen: the cgroup's OOM-kill counter (read before the
    task is deleted, which removes the cgroup)."""
    return was_oom_killed(metadata.cgroups_path)
