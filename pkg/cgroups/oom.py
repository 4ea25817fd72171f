"""OOM detection: a counter check for the exit path, and live notifications.

``was_oom_killed`` compares the cgroup's ``oom_kill`` counter (v1
``memory.oom_control``, v2 ``memory.events``) against a baseline; call it
when the task exits, before the task is deleted (runc removes the cgroup on
delete).  It is the robust fallback to containerd's ``/tasks/oom`` events,
which are lost while narwhald is down.  ``OomWatcher`` delivers OOMs as they
happen: a v1 eventfd registered through ``cgroup.event_control``, or on v2 a
poll of ``memory.events``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.cgroups.fs import Hierarchies, host
from pkg.cgroups.stats import parse_flat_keyed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OomState:
    oom_kills: int  # processes killed by the OOM killer in this cgroup
    under_oom: bool = False  # v1 only: the cgroup is stuck at its limit (OOM killer disabled)


def read_oom(cgroup: str, h: Hierarchies | None = None) -> OomState | None:
    """The cgroup's OOM counters, or None when the memory cgroup does not exist (any more)."""
    h = h or host()
    base = h.controller("memory", cgroup)
    if base is None:
        return None
    name = "memory.events" if h.is_v2 else "memory.oom_control"
    try:
        fields = parse_flat_keyed((base / name).read_text())
    except FileNotFoundError:
        return None
    return OomState(oom_kills=fields.get("oom_kill", 0), under_oom=bool(fields.get("under_oom", 0)))


def was_oom_killed(cgroup: str, h: Hierarchies | None = None, *, baseline: int = 0) -> bool:
    """True when the OOM killer struck in ``cgroup`` since the counter stood at ``baseline``."""
    state = read_oom(cgroup, h)
    return state is not None and (state.oom_kills > baseline or state.under_oom)


OomCallback = Callable[[str], None]


class OomWatcher:
    """Calls ``callback(key)`` when a watched cgroup hits an OOM.  Use from the event loop thread."""

    def __init__(self, h: Hierarchies | None = None, *, poll_interval: float = 1.0) -> None:
        self._h = h or host()
        self._poll_interval = poll_interval
        self._eventfds: dict[str, tuple[int, int]] = {}  # key -> (eventfd, oom_control fd), v1
        self._polled: dict[str, tuple[str, int, OomCallback]] = {}  # key -> (cgroup, last count, callback), v2
        self._poller: asyncio.Task[None] | None = None

    def add(self, key: str, cgroup: str, callback: OomCallback) -> None:
        self.remove(key)
        if self._h.is_v2:
            state = read_oom(cgroup, self._h)
            if state is None:
                raise errors.NotFound(f"memory cgroup {cgroup} not found")
            self._polled[key] = (cgroup, state.oom_kills, callback)
            if self._poller is None:
                self._poller = create_guarded_task(self._poll, "cgroup oom poller", restart_delay=1.0)
            return
        base = self._h.controller("memory", cgroup)
        if base is None or not base.is_dir():
            raise errors.NotFound(f"memory cgroup {cgroup} not found")
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(base / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            raise
        try:
            with open(base / "cgroup.event_control", "w") as control:
                control.write(f"{efd} {ofd}")
        except OSError:
            os.close(efd)
            os.close(ofd)
            raise
        self._eventfds[key] = (efd, ofd)
        asyncio.get_running_loop().add_reader(efd, self._on_event, key, base, callback)

    def _on_event(self, key: str, base: os.PathLike[str], callback: OomCallback) -> None:
        fds = self._eventfds.get(key)
        if fds is None:
            return
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(fds[0])
        # The kernel also signals the eventfd when the cgroup is removed: that is no OOM.
        if not os.path.isdir(base):
            self.remove(key)
            return
        try:
            callback(key)
        except Exception:
            log.exception("OOM callback for %s failed", key)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            items = list(self._polled.items())
            states = await asyncio.to_thread(self._read_all, [cgroup for _, (cgroup, _, _) in items])
            for (key, (cgroup, last, callback)), state in zip(items, states, strict=True):
                if key not in self._polled:
                    continue
                if state is None:
                    self._polled.pop(key, None)
                    continue
                if state.oom_kills > last:
                    self._polled[key] = (cgroup, state.oom_kills, callback)
                    try:
                        callback(key)
                    except Exception:
                        log.exception("OOM callback for %s failed", key)

    def _read_all(self, cgroups: list[str]) -> list[OomState | None]:
        return [read_oom(cgroup, self._h) for cgroup in cgroups]

    def remove(self, key: str) -> None:
        self._polled.pop(key, None)
        fds = self._eventfds.pop(key, None)
        if fds is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(fds[0])
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        for key in list(self._eventfds) + list(self._polled):
            self.remove(key)
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
