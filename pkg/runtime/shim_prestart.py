"""The pod's shim started during RunPodSandbox, side by side with the CNI chain.

containerd's CRI starts a pod's runc v2 shim in RunPodSandbox (for the pause container); Narwhal runs no
pause container, so without this the first StartContainer of a pod paid for the shim's start-up inside
Tasks.Create (docs/benchmarks.md).  The pod's group (its sandbox ID, or its ``pods-per-shim`` group) gets
a shim started the way containerd starts one (pkg.containerd.shim_start), from ``<state>/shims/<group>``;
the first Tasks.Create of the group finds it listening and uses it.

Lifecycle: the start runs in the background (RunPodSandbox never waits for it); a per-group lock orders it
with the reap.  A removed pod's group (for ``pods-per-shim`` > 1: once its last pod is removed) is reaped:
an idle shim is killed, its socket and directory removed; a shim that served tasks has exited by then
(containerd shuts it down with its last task).  After a restart, :meth:`gc` reaps the directories of
groups no recovered pod holds; those still held keep their shim (used again, or replaced by containerd
when it is gone).  ``narwhald cleanup`` reaps whatever is left (narwhal/cleanup.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.containerd import shim_start

log = logging.getLogger(__name__)


class ShimPrestarter:
    def __init__(self, base: Path, containerd_address: str, namespace: str, containerd_binary: str,
                 containerd_pid: Callable[[], int | None]) -> None:
        self.base = base  # <domain state>/shims
        self.containerd_address = containerd_address
        self.namespace = namespace
        self.containerd_binary = containerd_binary
        self.containerd_pid = containerd_pid
        self._locks: dict[str, asyncio.Lock] = {}
        self._wanted: set[str] = set()  # groups asked for and not reaped since (a late start must not revive one)
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = 0  # shims this narwhald started (tests, metrics)

    def spot(self, group: str) -> shim_start.ShimSpot:
        return shim_start.ShimSpot(self.containerd_address, self.namespace, group, str(self.base / group))

    def _lock(self, group: str) -> asyncio.Lock:
        return self._locks.setdefault(group, asyncio.Lock())

    def launch(self, group: str) -> None:
        """Start the group's shim in the background (RunPodSandbox does not wait for it)."""
        self._wanted.add(group)
        task = create_guarded_task(lambda: self.prestart(group), f"shim-prestart-{group[:12]}")
        self._tasks.add(task)  # asyncio keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    async def prestart(self, group: str) -> None:
        """Start the group's shim unless one runs or the group was reaped since :meth:`launch`; a failure
        only costs the speed-up (logged)."""
        async with self._lock(group):
            if group not in self._wanted:  # reaped before this start got its turn
                return
            try:
                if await shim_start.start(self.spot(group), self.containerd_binary, self.containerd_pid()):
                    self.started += 1
            except (errors.NarwhalError, OSError) as exc:
                log.warning("pre-starting the shim of %s: %s", group[:24], exc)

    async def reap(self, group: str) -> None:
        """The group has no pod left: its idle shim, socket and directory go."""
        self._wanted.discard(group)
        lock = self._lock(group)
        async with lock:
            directory = self.base / group
            if directory.exists():
                await asyncio.to_thread(shim_start.reap, directory)
        if not lock.locked() and self._locks.get(group) is lock:
            del self._locks[group]

    async def gc(self, wanted: Callable[[str], bool]) -> int:
        """At start: reap the groups no recovered pod holds (a pod removed, or never finished, while no
        narwhald ran); returns how many were reaped."""
        if not self.base.is_dir():
            return 0
        gone = [d.name for d in self.base.iterdir() if d.is_dir() and not wanted(d.name)]
        for group in gone:
            await self.reap(group)
        return len(gone)
