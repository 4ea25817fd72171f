"""In-process event bus: container lifecycle events for CRI GetContainerEvents and Docker /events.

Each subscriber gets its own bounded queue; a subscriber too slow to keep up
loses its oldest events rather than slowing the runtime down.
"""
from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

QUEUE_SIZE = 1000


class ContainerEventType(enum.Enum):
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True)
class ContainerEvent:
    container_id: str
    sandbox_id: str
    type: ContainerEventType
    created_at: int  # ns since the epoch


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[ContainerEvent]] = set()

    def publish(self, container_id: str, sandbox_id: str, type_: ContainerEventType) -> None:
        event = ContainerEvent(container_id, sandbox_id, type_, time.time_ns())
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[ContainerEvent]]:
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
