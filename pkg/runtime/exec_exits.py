"""Exec processes' exits, taken from the task event stream instead of a ``Tasks.Wait`` call per exec.

The runtime's ExitMonitor reads containerd's ``/tasks/exit`` events of its namespace anyway, exec processes'
included (it used to drop them).  A ``Wait`` per exec is one more gRPC round trip through containerd to the
shim, ~0.3 ms of narwhald's CPU plus containerd's on every ExecSync, health probe and ``docker exec``
(issue 21, round three: "ExecSync's CPU"); the event that reports the same exit is already paid for.

An exec registers before its ``Start`` (so its exit cannot be missed while the stream is up) and is answered
by the event.  Whenever that is not certain, it asks ``Wait`` as before: no stream (the monitor is not running
or reconnecting: the registration fails at once, or is failed when the stream breaks), or no event within
``EVENT_GRACE`` seconds (a long exec; or an event lost on the way, as the shim's publisher gives up after a
few retries): a ``Wait`` on a process that exited and is not deleted yet answers at once.
"""
from __future__ import annotations

import asyncio

EVENT_GRACE = 1.0  # seconds an exec waits on the event stream alone before it also asks Wait


class StreamLost(Exception):
    """The event stream broke while an exec waited on it: ask Wait."""


class ExecExits:
    """Futures of the exec processes waiting for their ``/tasks/exit`` event, by (container ID, exec ID)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[int]] = {}
        self._live = False

    def expect(self, container_id: str, exec_id: str) -> asyncio.Future[int] | None:
        """A future for the exit status of an exec about to start; None when no event stream is being read."""
        if not self._live:
            return None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[(container_id, exec_id)] = future
        return future

    def forget(self, container_id: str, exec_id: str) -> None:
        self._waiting.pop((container_id, exec_id), None)

    def exited(self, container_id: str, exec_id: str, status: int) -> None:
        """An exec's ``/tasks/exit`` event (of no exec waiting here: ignored)."""
        future = self._waiting.pop((container_id, exec_id), None)
        if future is not None and not future.done():
            future.set_result(status)

    def connected(self) -> None:
        """The monitor reads the event stream (from here on, an exec's exit reaches ``exited``)."""
        self._live = True

    def disconnected(self) -> None:
        """The stream broke: events may be lost until it is back, so every exec waiting asks Wait."""
        self._live = False
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(StreamLost())
