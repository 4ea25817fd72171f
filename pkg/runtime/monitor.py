"""The exit monitor: containerd's task exit and OOM events drive container and sandbox state.

One event stream per daemon.  Whenever the stream (re)connects — at start-up
and after a containerd restart — and every RECONCILE_INTERVAL seconds, every
running container is reconciled with its task (one Tasks.List), so an exit
that happened while nobody listened is never lost for long.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from pkg import errors
from pkg.containerd import events
from pkg.containerd import tasks as ctr_tasks
from pkg.model.state import ContainerState
from pkg.runtime.containers import ContainerService
from pkg.runtime.sandboxes import SandboxService

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 10.0


class ExitMonitor:
    def __init__(self, containers: ContainerService, sandboxes: SandboxService) -> None:
        self._containers = containers
        self._sandboxes = sandboxes
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Runs until cancelled; the guard restarts it if the stream breaks."""
        ctx = self._containers.ctx
        stream = events.subscribe(ctx.client)
        # The stream is read by a task of its own that hands exec exits over as they come and queues the rest,
        # handled here one at a time, in order, as before: a container's exit awaits Tasks.Delete and its
        # logger, and an exec answered by its exit event (pkg.runtime.exec_exits) must not wait behind that.
        # (A child of this call, not a guarded task: cancelled and awaited below, its failure raised here.)
        pending: asyncio.Queue[events.TaskEvent | Exception | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read(stream, pending), name="exit-monitor-reader")
        try:
            self.connected.set()
            await self.reconcile_all()
            while (item := await pending.get()) is not None:
                if isinstance(item, Exception):
                    raise item  # the stream broke: the guard restarts the monitor
                try:
                    await self._handle(item)
                except errors.NarwhalError as exc:
                    log.warning("handling %s: %s", item, exc.message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.connected.clear()
            ctx.exec_exits.disconnected()
            await stream.aclose()

    async def _read(self, stream: AsyncGenerator[events.TaskEvent, None],
                    pending: asyncio.Queue[events.TaskEvent | Exception | None]) -> None:
        exits = self._containers.ctx.exec_exits
        try:
            async for event in stream:
                exits.connected()  # events come through: execs' exits may be taken from here on
                if isinstance(event, events.TaskExit) and event.exec_id and event.exec_id != event.container_id:
                    exits.exited(event.container_id, event.exec_id, event.exit_status)  # an exec process
                else:
                    pending.put_nowait(event)
        except Exception as exc:  # noqa: BLE001 - raised by run()
            pending.put_nowait(exc)
            return
        pending.put_nowait(None)

    async def _handle(self, event: events.TaskEvent) -> None:
        ctx = self._containers.ctx
        if isinstance(event, events.TaskOOM):
            self._containers.handle_oom(event.container_id)
            return
        if event.exec_id and event.exec_id != event.container_id:
            ctx.exec_exits.exited(event.container_id, event.exec_id, event.exit_status)  # an exec process
            return
        if ctx.containers.find(event.container_id) is not None:
            await self._containers.handle_exit(event.container_id, event.exit_status, event.exited_at_ns)
        elif ctx.sandboxes.find(event.container_id) is not None:
            await self._sandboxes.infra_exited(event.container_id)

    async def reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            await self.reconcile_all()

    async def reconcile_all(self) -> None:
        ctx = self._containers.ctx
        running = [cid for cid, _, s in ctx.containers if s.state in (ContainerState.RUNNING, ContainerState.UNKNOWN)]
        if running:
            tasks = await ctr_tasks.list_all(ctx.client)
            for container_id in running:
                task = tasks.get(container_id)
                if task is not None and task.status == ctr_tasks.TaskStatus.RUNNING:
                    _, status = ctx.containers.get(container_id)
                    if status.state == ContainerState.RUNNING:
                        continue
                try:
                    await self._containers.reconcile(container_id)
                except errors.NarwhalError as exc:
                    log.warning("reconciling container %s: %s", container_id[:12], exc.message)
        await self._sandboxes.reconcile_all()
