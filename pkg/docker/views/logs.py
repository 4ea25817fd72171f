"""Docker logs: a container's log entries, and with ``follow`` the new ones until it stops.

The entries are the container's CRI log (what narwhal-logger wrote), with
partial records joined; a container that never started has none.  With log
rotation (``--log-opt max-size``) the rotated files (``container.log.N``, gzipped
with ``compress``) come first, oldest first, as moby's json-file reader reads them.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gzip
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from pkg import errors
from pkg.logs.reader import LogEntry, ReadOptions, read_log
from pkg.model.state import ContainerState
from pkg.runtime.attach import output_log
from pkg.runtime.containers import ContainerService


async def container_logs(containers: ContainerService, container_ref: str,
                         options: ReadOptions) -> AsyncIterator[LogEntry]:
    metadata, status = containers.get(container_ref)
    path = output_log(containers.ctx, metadata)
    if not path:
        return
    follow = options.follow and status.state == ContainerState.RUNNING
    stop = containers.exit_event(metadata.id) if follow else None
    async for entry in _rotated_entries(path, options):
        yield entry
    try:
        async for entry in read_log(path, dataclasses.replace(options, follow=follow), stop=stop):
            yield entry
    except errors.NotFound:
        return  # never started: no log yet


def rotated_files(path: str) -> list[Path]:
    """``path.N[.gz]`` ... ``path.1[.gz]``: the rotated files, oldest first.  Blocking."""
    found: list[tuple[int, Path]] = []
    directory, name = os.path.split(path)
    try:
        entries = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.startswith(name + "."):
            continue
        number = entry[len(name) + 1:].removesuffix(".gz")
        if number.isdigit():
            found.append((int(number), Path(directory, entry)))
    return [p for _, p in sorted(found, reverse=True)]


@contextlib.contextmanager
def _plain(path: Path) -> Iterator[Path]:
    """A rotated file as plain text: itself, or a gzipped one decompressed into a temporary file."""
    if path.suffix != ".gz":
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="narwhal-log-", suffix=".log") as tmp:
        with gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp)
        tmp.flush()
        yield Path(tmp.name)


async def _rotated_entries(path: str, options: ReadOptions) -> AsyncIterator[LogEntry]:
    """The entries of the rotated files wanted before the current file's: all of them, or with ``tail`` the
    last ones the current file does not already hold."""
    files = await asyncio.to_thread(rotated_files, path)
    if not files:
        return
    plain = dataclasses.replace(options, follow=False, tail=None)
    if options.tail is None:
        for file in files:
            async for entry in _read_rotated(file, plain):
                yield entry
        return
    have = 0
    with contextlib.suppress(errors.NotFound):
        async for _ in read_log(path, dataclasses.replace(options, follow=False)):
            have += 1
    wanted: collections.deque[LogEntry] = collections.deque(maxlen=max(0, options.tail - have))
    if wanted.maxlen:
        for file in files:
            async for entry in _read_rotated(file, plain):
                wanted.append(entry)
    for entry in wanted:
        yield entry


async def _read_rotated(file: Path, options: ReadOptions) -> AsyncIterator[LogEntry]:
    try:
        view = await asyncio.to_thread(_enter_plain, file)
    except OSError:
        return  # rotated away meanwhile
    try:
        async for entry in read_log(view[1], options):
            yield entry
    except errors.NotFound:
        return
    finally:
        await asyncio.to_thread(view[0].close)


def _enter_plain(file: Path) -> tuple[contextlib.ExitStack, Path]:
    stack = contextlib.ExitStack()
    try:
        return stack, stack.enter_context(_plain(file))
    except BaseException:
        stack.close()
        raise
