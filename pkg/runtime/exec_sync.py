"""ExecSync: run a command in a running container to completion and answer with its bounded output.

Separate from pkg.runtime.exec, which runs one exec process and relays its stdio (an interactive session,
Docker's exec): this is what only a one-shot exec adds on top of ``run_exec`` (output captured within
gRPC's message limit, the timeout, the process's deletion after the answer, and the deletions a
container's removal waits for).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pkg import errors
from pkg.containerd.client import Client
from pkg.runtime.exec import run_exec
from pkg.runtime.exec_exits import ExecExits
from pkg.runtime.process_specs import ProcessSpecs
from pkg.streaming.backend import ExecStreams

log = logging.getLogger(__name__)

MAX_SYNC_OUTPUT = 16 << 20  # per stream, as containerd's CRI
# ...but both streams travel in one ExecSyncResponse, and gRPC refuses to send more than 16 MiB in total
# (RESOURCE_EXHAUSTED): their sum stays below that, with room for the message's own framing.
MAX_SYNC_TOTAL = (16 << 20) - (64 << 10)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class _Budget:
    """What both streams of one ExecSync may still keep together."""

    def __init__(self, total: int) -> None:
        self.left = total


class _Capture:
    """An OutputStream that keeps the first ``limit`` bytes (within the shared budget) and drops the rest."""

    def __init__(self, limit: int, budget: _Budget) -> None:
        self.data = bytearray()
        self._limit = limit
        self._budget = budget

    async def write(self, data: bytes) -> None:
        room = min(self._limit - len(self.data), self._budget.left)
        if room > 0:
            kept = data[:room]
            self.data += kept
            self._budget.left -= len(kept)


async def exec_sync(client: Client, container_id: str, cmd: Sequence[str], *, fifo_root: Path,
                    timeout: float | None = None, max_output: int = MAX_SYNC_OUTPUT,
                    max_total: int = MAX_SYNC_TOTAL, specs: ProcessSpecs | None = None,
                    exits: ExecExits | None = None) -> ExecResult:
    """Run ``cmd`` to completion and capture its output (each stream bounded by ``max_output``, both together
    by ``max_total``: a chatty probe gets truncated output, never a response gRPC cannot send).

    With a ``timeout`` (seconds; None or 0 for none) the process is killed when
    it runs out and DeadlineExceeded is raised, as containerd's CRI does.

    The result is returned once the process exited and its output is in: its ``DeleteProcess`` and the
    fifos' removal follow in the background (as for Docker's exec; issue 21), and a later exec of the
    same container does not wait for them.
    """
    budget = _Budget(max_total)
    out, err = _Capture(max_output, budget), _Capture(max_output, budget)
    streams = ExecStreams(tty=False, stdout=out, stderr=err)
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_exit(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    work = asyncio.ensure_future(run_exec(client, container_id, cmd, streams, fifo_root=fifo_root, specs=specs,
                                          on_exit=on_exit, exits=exits))
    _deleting[work] = container_id
    work.add_done_callback(_deleted)
    try:
        done, _ = await asyncio.wait([exited, work], timeout=timeout or None, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        if not exited.done():
            work.cancel()  # the caller went away: the process is killed and deleted
        raise
    if not done:
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, errors.NarwhalError):
            await work
        raise errors.DeadlineExceeded(f"command {list(cmd)} timed out after {timeout}s")
    code = exited.result() if exited.done() else work.result()  # (work's error: the process did not start)
    return ExecResult(code, bytes(out.data), bytes(err.data))


_deleting: dict[asyncio.Future[int], str] = {}  # ExecSyncs answered whose process is still being deleted: container


def _deleted(work: asyncio.Future[int]) -> None:
    _deleting.pop(work, None)
    if not work.cancelled() and (exc := work.exception()) is not None:  # (a start failure was raised already)
        log.debug("exec: %r", exc)


async def settle(container_id: str | None = None, timeout: float | None = None) -> None:
    """Until the exec processes of answered ExecSyncs (of one container, or all) are deleted, with their fifos:
    a container's removal waits for them (at most ``timeout``); a shutdown may leave them to
    ``reap_stale_execs``."""
    pending = [w for w, cid in _deleting.items() if container_id is None or cid == container_id]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
