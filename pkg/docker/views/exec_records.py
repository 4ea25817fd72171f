"""Docker exec instances on disk: one small JSON file per instance, rewritten at each state change.

Separate from pkg.docker.views.exec, which decides what a record holds: this is how it is written.  One writer
thread, so a record's changes land in the order they were made, off the event loop: on a loaded host a file
write and rename took milliseconds, on the path of every exec's answer (issue 21).  ``close()`` flushes; a
change after it (narwhald stopping) is dropped and the file stays as last written.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


def _write_record(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("exec record %s not saved: %r", path.stem[:12], exc)


def _unlink_record(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


class ExecRecords:
    """The records dir (``<id>.json`` each) and its writer thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._writer = ThreadPoolExecutor(1, "exec-records")
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, exec_id: str, text: str) -> None:
        self._submit(lambda: _write_record(self.directory / f"{exec_id}.json", text))

    def drop(self, exec_id: str) -> None:
        self._submit(lambda: _unlink_record(self.directory / f"{exec_id}.json"))

    def _submit(self, write: Callable[[], None]) -> None:
        try:
            self._writer.submit(write)
        except RuntimeError:  # closed (narwhald is stopping): the record stays as last written
            log.debug("exec record change after close dropped")

    async def flush(self) -> None:
        """Until every record change made so far is on disk."""
        await asyncio.wrap_future(self._writer.submit(lambda: None))

    async def close(self) -> None:
        await self.flush()
        self._writer.shutdown()
