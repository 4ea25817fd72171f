"""Docker attach: a container's own stdio, attachable before it starts.

The docker CLI attaches first and starts after (``docker run``, ``docker
start -a``), so unlike CRI's attach this one waits: output is relayed from
the container's next start (or the current run, when it is running) until
that run exits, and input written before the start waits for it.  The
output comes from the container's log (the same file ``docker logs`` reads),
followed with partial records unjoined so a prompt without a newline shows.

Nothing of a short run is lost: the subscription is registered with the
container's run tracker before the start, so the start hands over that run's
exit event however fast it ends; the exit event is set only once the logger
has written its last record; and a removal (``--rm``) waits until this reader
has the log open.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pkg import errors
from pkg.containerd import tasks as ctr_tasks
from pkg.logs.reader import ReadOptions, read_log
from pkg.model.container import ContainerMetadata
from pkg.model.state import ContainerState
from pkg.runtime.attach import output_log
from pkg.runtime.containers import ContainerService
from pkg.runtime.runs import Run
from pkg.streaming.model import TerminalSize

log = logging.getLogger(__name__)

POLL = 0.05  # how often a waiting attach looks at the container's state


class _Output:
    """The output of the container's current (or next) run, as ``(stream, bytes)``; None at its end."""

    def __init__(self, owner: DockerAttach, since_ns: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(1024)
        self._stop = asyncio.Event()
        # Decided now, synchronously: the start that follows cannot slip past this subscription, nor a
        # removal delete the log of the run to relay before the pump has opened it.
        self._run = owner.run_to_relay(since_ns)
        self._task = asyncio.ensure_future(self._pump(since_ns))

    async def _pump(self, since_ns: int) -> None:
        try:
            run = await self._run
            if run is None:
                return  # removed before it started
            watcher = asyncio.ensure_future(run.exited.wait())
            watcher.add_done_callback(lambda _: self._stop.set())
            try:
                log_path = output_log(self._owner.containers.ctx, self._owner.metadata)
                if not log_path:
                    run.hold.release()
                    await self._stop.wait()
                    return
                options = ReadOptions(follow=True, since_ns=since_ns, join_partial=False)
                async for entry in read_log(log_path, options, stop=self._stop, opened=run.hold.release):
                    await self._queue.put((entry.stream, entry.content))
            finally:
                watcher.cancel()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the attached client sees its output end; the cause is logged
            log.exception("attach to %s: reading the output failed", self._owner.id[:12])
        finally:
            self._let_go()
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    def _let_go(self) -> None:
        """The hold on the container's files (if a run was handed over) or the wait for one ends."""
        if not self._run.done():
            self._run.cancel()
        elif not self._run.cancelled() and (run := self._run.result()) is not None:
            run.hold.release()

    async def read(self) -> tuple[str, bytes] | None:
        if self._task.done() and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        self._stop.set()
        self._task.cancel()
        self._let_go()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


class DockerAttach:
    """``pkg.streaming.backend.ContainerStdio`` of a Docker container, running or about to be started."""

    def __init__(self, containers: ContainerService, container_id: str, since_ns: int | None = None) -> None:
        """``since_ns``: relay output from then on (default: from the subscription), so a client that
        replayed the log up to a point misses nothing after it."""
        self.containers = containers
        self._since_ns = since_ns
        self._prepared: _Output | None = None
        self.metadata: ContainerMetadata = containers.get(container_id)[0]
        self.id = self.metadata.id

    @property
    def tty(self) -> bool:
        return self.metadata.config.tty

    @property
    def stdin(self) -> bool:
        return self.metadata.config.stdin

    @property
    def stdin_once(self) -> bool:
        return self.metadata.config.stdin_once

    def prepare(self) -> None:
        """Subscribe now; the next ``subscribe()`` returns this subscription (see ``discard_prepared``)."""
        self._prepared = _Output(self, time.time_ns() if self._since_ns is None else self._since_ns)

    def discard_prepared(self) -> None:
        """A prepared subscription nobody took (the session ended first) is closed."""
        if self._prepared is not None:
            self._prepared.close()
            self._prepared = None

    def subscribe(self) -> _Output:
        if self._prepared is not None:
            prepared, self._prepared = self._prepared, None
            return prepared
        return _Output(self, time.time_ns() if self._since_ns is None else self._since_ns)

    def run_to_relay(self, since_ns: int) -> asyncio.Future[Run | None]:
        """The run that is current or was started after ``since_ns``, else the next one; None (at once or
        when it comes to that) if the container is removed first."""
        runs = self.containers.runs
        found = self.containers.ctx.containers.find(self.id)
        if found is None:
            gone: asyncio.Future[Run | None] = asyncio.get_running_loop().create_future()
            gone.set_result(None)
            return gone
        _, status = found
        if status.state == ContainerState.RUNNING or (
                status.state == ContainerState.EXITED and status.started_at >= since_ns):
            current: asyncio.Future[Run | None] = asyncio.get_running_loop().create_future()
            current.set_result(Run(self.containers.exit_event(self.id), runs.reader(self.id)))
            return current
        return runs.next_run(self.id)

    async def _running(self) -> bool:
        found = self.containers.ctx.containers.find(self.id)
        while found is not None and found[1].state == ContainerState.CREATED:
            await asyncio.sleep(POLL)
            found = self.containers.ctx.containers.find(self.id)
        return found is not None and found[1].state == ContainerState.RUNNING

    async def write_stdin(self, data: bytes) -> None:
        """Input for the container; dropped when it is not running (it exited meanwhile)."""
        if not await self._running():
            return
        with contextlib.suppress(errors.FailedPrecondition):
            await self.containers.ctx.stdin.write(self.id, data)

    async def close_stdin(self) -> None:
        if not await self._running():
            return
        self.containers.ctx.stdin.close(self.id)
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
            await ctr_tasks.close_stdin(self.containers.ctx.client, self.id)

    async def resize(self, size: TerminalSize) -> None:
        if not await self._running():
            return
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
            await ctr_tasks.resize_pty(self.containers.ctx.client, self.id, size.width, size.height)


async def resize(containers: ContainerService, container_ref: str, height: int, width: int) -> None:
    """POST /containers/{id}/resize: the running container's console."""
    metadata, status = containers.get(container_ref)
    if status.state != ContainerState.RUNNING:
        raise errors.Conflict(f"container {metadata.id} is not running")
    if height < 0 or width < 0:
        raise errors.InvalidArgument("resize dimensions must not be negative")
    with contextlib.suppress(errors.NotFound):
        await ctr_tasks.resize_pty(containers.ctx.client, metadata.id, width, height)
