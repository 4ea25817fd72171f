"""Docker logs: a container's log entries, and with ``follow`` the new ones until it stops.

The entries are the container's CRI log (what narwhal-logger wrote), with
partial records joined; a container that never started has none.
"""
from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

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
    try:
        async for entry in read_log(path, dataclasses.replace(options, follow=follow), stop=stop):
            yield entry
    except errors.NotFound:
        return  # never started: no log yet
