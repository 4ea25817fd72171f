"""Task calls sent straight to the task's runc v2 shim, not through containerd's task service.

containerd 1.6's task service keeps nothing of an exec process: ``Tasks.Exec``, ``Start``, ``Wait``, ``Kill``,
``CloseIO``, ``ResizePty`` and ``DeleteProcess`` each look the task up, ask its shim for the process's state
(``State``, for all but ``Exec``) and pass the call on to the shim over ttrpc (services/tasks/local.go,
runtime/v2/shim.go); a task's own ``Start`` is passed on too, followed by a ``State`` for the pid the shim's
answer already has.  The shim holds the processes and publishes their events (``TaskStart``,
``TaskExecAdded``, ``TaskExecStarted``, ``TaskExit``) to containerd's event service itself, whoever asked.
Calling the shim's ``containerd.task.v2.Task`` service directly is therefore the same operation with one gRPC
hop and one shim round trip fewer per call: ~5-6 ms of a ~45 ms exec of ``true`` (issue 21, docs/benchmarks.md
"Task calls straight to the shim").  containerd's CRI makes the same calls in-process.  What containerd does
keep (the task's creation and deletion, its bundle, its shim) still goes through containerd.

The task's shim address is the one containerd itself reads: the ``address`` file in the task's bundle
(``<containerd state>/io.containerd.runtime.v2.task/<namespace>/<id>/address``), so this only works with a
containerd narwhald runs itself (its state dir is known).  One connection per shim, shared by every call and
dropped when the shim hangs up.  When the bundle has no address or the shim does not answer the connect, the
caller goes through containerd as before (:class:`Unreachable`), which gives containerd's own error.
"""
from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.containerd.errors import CODES
from pkg.containerd.ttrpc import Connection, ConnectionLost, TtrpcError

SERVICE = "containerd.task.v2.Task"
NAMESPACE_KEY = "containerd-namespace-ttrpc"  # containerd's namespaces.TTRPCHeader
TASK_DIR = "io.containerd.runtime.v2.task"

R = TypeVar("R", bound=Message)


class Unreachable(Exception):
    """No shim address for the task, or its shim refused the connection: go through containerd."""


class ShimTasks:
    """ttrpc connections to the shims of one containerd namespace's tasks."""

    def __init__(self, containerd_state: Path, namespace: str) -> None:
        self.bundles = containerd_state / TASK_DIR / namespace
        self.namespace = namespace
        self._metadata = ((NAMESPACE_KEY, namespace),)
        self._connections: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Future[Connection]] = {}

    def _address(self, container_id: str) -> str:
        """The shim's socket path, read from the task's bundle (a few bytes in the page cache: read on the loop)."""
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise Unreachable(container_id)
        try:
            address = (self.bundles / container_id / "address").read_text().strip()
        except OSError:
            raise Unreachable(container_id) from None
        path = address.removeprefix("unix://")
        if not path.startswith("/"):
            raise Unreachable(address)  # an abstract socket or another scheme: leave it to containerd
        return path

    async def _connection(self, container_id: str) -> Connection:
        path = self._address(container_id)
        conn = self._connections.get(path)
        if conn is not None and not conn.closed:
            return conn
        opening = self._opening.get(path)
        if opening is None:  # one connect per shim, however many calls wait for it
            opening = self._opening[path] = asyncio.ensure_future(self._open(path))
            opening.add_done_callback(functools.partial(_settled, self._opening, path))
        return await asyncio.shield(opening)

    async def _open(self, path: str) -> Connection:
        try:
            conn = await Connection.open(path)
        except OSError:
            raise Unreachable(path) from None
        for gone in [p for p, c in self._connections.items() if c.closed]:
            del self._connections[gone]  # shims that exited since
        self._connections[path] = conn
        return conn

    async def call(self, container_id: str, method: str, request: Message, response: type[R], *, what: str,
                   timeout: float | None = None) -> R:
        """One call of the shim's Task service; errors as containerd's would be translated.

        Unreachable (before anything was sent) means: ask containerd instead."""
        conn = await self._connection(container_id)
        m = metrics_mod.current()
        start = time.monotonic()
        try:
            payload = await conn.call(SERVICE, method, request.SerializeToString(), timeout=timeout,
                                      metadata=self._metadata)
        except TtrpcError as err:
            status = _STATUS.get(err.code, grpc.StatusCode.UNKNOWN)
            m.containerd_errors.labels(service="shim", method=method, code=status.name).inc()
            raise CODES.get(status, errors.Internal)(f"{what}: {err.message}") from None
        except ConnectionLost as err:
            m.containerd_errors.labels(service="shim", method=method, code="UNAVAILABLE").inc()
            raise errors.Unavailable(f"{what}: the task's shim went away ({err})") from None
        except TimeoutError:
            m.containerd_errors.labels(service="shim", method=method, code="DEADLINE_EXCEEDED").inc()
            raise errors.DeadlineExceeded(f"{what}: the task's shim did not answer in {timeout:g} s") from None
        except ValueError as err:  # not a ttrpc Response (a shim of another protocol on the socket?)
            m.containerd_errors.labels(service="shim", method=method, code="INTERNAL").inc()
            raise errors.Internal(f"{what}: the task's shim answered something else than ttrpc: {err}") from None
        finally:
            m.containerd_latency.labels(service="shim", method=method).observe(time.monotonic() - start)
        result = response()
        try:
            result.ParseFromString(payload)
        except DecodeError as err:
            raise errors.Internal(f"{what}: the shim's {method} answer is not a {response.__name__}: {err}") from None
        return result

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            await conn.close()


def _settled(opening: dict[str, asyncio.Future[Connection]], path: str, done: asyncio.Future[Connection]) -> None:
    opening.pop(path, None)
    if not done.cancelled():
        done.exception()  # retrieved: every caller waiting for it may have gone


_STATUS = {status.value[0]: status for status in grpc.StatusCode}  # ttrpc carries gRPC's codes as numbers
