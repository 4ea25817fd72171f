"""The daemon's one event bus: CRI GetContainerEvents and Docker ``/events`` both read it.

Publishers are the core's own transitions (``pkg.runtime``: create, start,
exit, remove, OOM — which follow containerd's task events) and the Docker
facade's services (images, networks, volumes, the engine).  Every event is
tagged with its runtime *domain* (``""`` for CRI, ``"docker"``), so CRI sees
only CRI containers and Docker only Docker objects.

Publishing never waits: each subscriber has a bounded queue, and one that
falls behind by a full queue is cut off (its next read raises
``ResourceExhausted``) instead of slowing the runtime or growing without
bound.  CRI clients (kubelet) reconnect and relist; ``docker events`` ends
with the error.  The last ``HISTORY`` Docker events are kept in a ring so
``docker events --since`` can replay them (moby keeps 256).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pkg import errors

if TYPE_CHECKING:
    from pkg.model.container import ContainerMetadata

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # per subscriber (moby: 1024)
HISTORY = 1024  # Docker events kept for ?since
CRI_DOMAIN = ""
DOCKER_DOMAIN = "docker"


class ContainerEventType(enum.Enum):
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True)
class ContainerEvent:
    """A core container transition (what CRI's ContainerEventResponse reports)."""

    container_id: str
    sandbox_id: str
    type: ContainerEventType
    created_at: int  # ns since the epoch
    domain: str = CRI_DOMAIN


@dataclass(frozen=True)
class DockerEvent:
    """One Docker event (moby's events.Message, minus the JSON): always of the Docker domain."""

    type: str  # container, image, network, volume, daemon, plugin, ...
    action: str  # create, start, die, pull, connect, ... ("exec_start: <cmd>" keeps moby's form)
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)
    time_ns: int = 0
    scope: str = "local"
    domain: str = DOCKER_DOMAIN


Event = ContainerEvent | DockerEvent
Match = Callable[[Event], bool]

# Core transitions as Docker container actions.
_DOCKER_ACTIONS = {
    ContainerEventType.CREATED: "create",
    ContainerEventType.STARTED: "start",
    ContainerEventType.STOPPED: "die",
    ContainerEventType.DELETED: "destroy",
}


class Subscription:
    """One reader's bounded queue.  Reading after an overflow raises ResourceExhausted."""

    def __init__(self, match: Match, size: int) -> None:
        self._match = match
        self._size = size
        # None marks the overflow: the backlog is freed and the reader woken to see it.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(size + 1)
        self.dropped = 0  # events lost when the queue overflowed (then the subscription is closed)

    def _offer(self, event: Event) -> bool:
        """False when the subscriber is cut off (its queue was full)."""
        if not self._match(event):
            return True
        if self._queue.qsize() < self._size:
            self._queue.put_nowait(event)
            return True
        self.dropped = self._queue.qsize() + 1
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        return False

    def pending(self) -> int:
        return self._queue.qsize()

    async def get(self) -> Event:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # stays cut off
            raise errors.ResourceExhausted(
                f"event subscriber fell behind: more than {self._size} events queued; reconnect"
            )
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self.get()


class EventBus:
    def __init__(self, queue_size: int = QUEUE_SIZE, history: int = HISTORY) -> None:
        self._subscribers: list[Subscription] = []
        self._queue_size = queue_size
        self._history: deque[DockerEvent] = deque(maxlen=history)
        self.published = 0
        self.overflows = 0  # subscribers cut off for falling behind (also a metric)
        self.on_overflow: Callable[[], None] | None = None

    # ---- publishing (never blocks, never raises) ----
    def publish_event(self, event: Event) -> None:
        self.published += 1
        if isinstance(event, DockerEvent):
            self._history.append(event)
        for sub in list(self._subscribers):
            try:
                kept = sub._offer(event)
            except Exception:  # a reader's filter is broken: its problem, never the publisher's
                log.exception("event subscriber's filter failed on %s", event)
                continue
            if not kept:
                self._subscribers.remove(sub)
                self.overflows += 1
                if self.on_overflow is not None:
                    self.on_overflow()
                log.warning("event subscriber fell behind (%d events queued): disconnected", sub.dropped)

    def publish(self, container_id: str, sandbox_id: str, type_: ContainerEventType, domain: str = CRI_DOMAIN) -> None:
        self.publish_event(ContainerEvent(container_id, sandbox_id, type_, time.time_ns(), domain))

    def publish_docker(self, type_: str, action: str, actor_id: str,
                       attributes: Mapping[str, str] | None = None) -> None:
        """A Docker event, e.g. ``bus.publish_docker("image", "pull", "busybox:latest", {"name": ...})``."""
        self.publish_event(DockerEvent(type_, action, actor_id, dict(attributes or {}), time.time_ns()))

    def domain(self, name: str) -> DomainEvents:
        """The publisher a runtime domain's services use (tags events with ``name``)."""
        return DomainEvents(self, name)

    # ---- reading ----
    def history(self, match: Match, since_ns: int = 0) -> list[DockerEvent]:
        return [e for e in self._history if e.time_ns >= since_ns and match(e)]

    @asynccontextmanager
    async def subscribe(self, match: Match | None = None) -> AsyncIterator[Subscription]:
        """Events matching ``match`` from now on, until the block exits (or the reader falls behind)."""
        sub = Subscription(match or (lambda _: True), self._queue_size)
        self._subscribers.append(sub)
        try:
            yield sub
        finally:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


class DomainEvents:
    """A runtime domain's view of the bus: core transitions tagged with the domain, and — in the
    Docker domain — the matching Docker container events (create, start, oom, die, destroy).  Actions only
    Docker has (kill, stop, pause, restart, rename, ...) are the engine's to publish, with
    ``docker_container()``: the core cannot tell a user's ``docker kill`` from its own clean-up."""

    def __init__(self, bus: EventBus, domain: str) -> None:
        self.bus = bus
        self.domain = domain
        # Docker's own view of a container's attributes (the image name the user gave, the Docker name,
        # labels), installed by whoever owns that view (the engine); the core's metadata is the fallback.
        self.describe: Callable[[str], Mapping[str, str] | None] | None = None
        # What the Docker engine publishes at an exit before "die" (moby's Cleanup: volume unmounts).
        self.before_die: Callable[[str], None] | None = None
        # The CRI domain under docker-shows-pods: its transitions are Docker container events too.
        self.shown_to_docker = False

    def publish(self, container_id: str, sandbox_id: str, type_: ContainerEventType,
                metadata: ContainerMetadata | None = None, exit_code: int | None = None, **extra: str) -> None:
        """``extra``: more Docker attributes (``die`` has moby's ``execDuration``, whole seconds run)."""
        self.bus.publish(container_id, sandbox_id, type_, self.domain)
        if self.domain == DOCKER_DOMAIN or self.shown_to_docker:
            attributes = {"exitCode": str(exit_code)} if exit_code is not None else {}
            if type_ == ContainerEventType.STOPPED and self.before_die is not None:
                self.before_die(container_id)
            self._docker(_DOCKER_ACTIONS[type_], container_id, metadata, {**attributes, **extra})

    def docker_container(self, action: str, metadata: ContainerMetadata, **extra: str) -> None:
        """A Docker-only container action (kill, stop, oom, exec_*, attach, ...): never a CRI event; published
        in the Docker domain, and in the CRI domain when its containers are shown to Docker (docker-shows-pods)."""
        if self.domain == DOCKER_DOMAIN or self.shown_to_docker:
            self._docker(action, metadata.id, metadata, extra)

    def _docker(self, action: str, container_id: str, metadata: ContainerMetadata | None,
                extra: Mapping[str, str]) -> None:
        attributes = container_attributes(metadata)
        if self.describe is not None:
            attributes.update(self.describe(container_id) or {})
        self.bus.publish_docker("container", action, container_id, {**attributes, **extra})


def container_attributes(metadata: ContainerMetadata | None) -> dict[str, str]:
    """Docker's Actor.Attributes of a container event: its labels, then image and name (moby's order)."""
    if metadata is None:
        return {}
    attrs = dict(metadata.config.labels)
    attrs["image"] = metadata.image_ref or metadata.image_id
    attrs["name"] = metadata.config.name.lstrip("/")
    return attrs
