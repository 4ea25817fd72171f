"""Docker's container events from the core's neutral facts (moby's container actions and attributes).

The core (pkg.runtime) only says what happened to a container: created, started, OOM-killed, exited,
deleted (pkg.events.ContainerFact).  This module is where those facts become Docker's ``create``,
``start``, ``oom``, ``die`` and ``destroy`` with moby's Actor.Attributes, and where the Docker domain
publishes the actions only Docker has (kill, stop, pause, restart, rename, exec_*, attach, ...): the core
cannot tell a user's ``docker kill`` from its own clean-up.

One translator per runtime domain (``docker_events(ctx.events)``): the Docker domain's translates every
fact; the CRI domain's only under docker-shows-pods (``shown_to_docker``), and then only the lifecycle
(kubelet's containers' create/start/die/destroy).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping

from pkg.events import DOCKER_DOMAIN, ContainerFact, ContainerNews, DomainEvents
from pkg.model.container import ContainerMetadata

_ACTIONS = {
    ContainerFact.CREATED: "create",
    ContainerFact.STARTED: "start",
    ContainerFact.EXITED: "die",
    ContainerFact.DELETED: "destroy",
}

_BY_DOMAIN: weakref.WeakKeyDictionary[DomainEvents, DockerContainerEvents] = weakref.WeakKeyDictionary()


def docker_events(events: DomainEvents) -> DockerContainerEvents:
    """The translator of this domain, installed as its listener on first use (the composition root asks
    for the Docker domain's before the runtime recovers, so recovery's exits are Docker events too)."""
    found = _BY_DOMAIN.get(events)
    if found is None:
        found = _BY_DOMAIN[events] = DockerContainerEvents(events)
    return found


class DockerContainerEvents:
    def __init__(self, events: DomainEvents) -> None:
        self.bus = events.bus
        self.domain = events.domain
        # Docker's own view of a container's attributes (the image name the user gave, the Docker name,
        # labels), installed by whoever owns that view (the engine); the core's metadata is the fallback.
        self.describe: Callable[[str], Mapping[str, str] | None] | None = None
        # What the Docker engine publishes at an exit before "die" (moby's Cleanup: volume unmounts).
        self.before_die: Callable[[str], None] | None = None
        # The CRI domain under docker-shows-pods: its lifecycle facts are Docker container events too.
        self.shown_to_docker = False
        events.listeners.append(self._hear)

    @property
    def _docker(self) -> bool:
        return self.domain == DOCKER_DOMAIN

    def _hear(self, news: ContainerNews) -> None:
        if news.fact is ContainerFact.OOM_KILLED:
            if (self._docker or self.shown_to_docker) and news.metadata is not None:
                self._publish("oom", news.container_id, news.metadata, {})
            return
        if not (self._docker or self.shown_to_docker):
            return
        extra = {}
        if news.exit_code is not None:
            extra["exitCode"] = str(news.exit_code)
        if news.fact is ContainerFact.EXITED:
            if news.ran_for_s is not None:
                extra["execDuration"] = str(news.ran_for_s)  # moby's die: whole seconds run
            if self.before_die is not None:
                self.before_die(news.container_id)
        self._publish(_ACTIONS[news.fact], news.container_id, news.metadata, extra)

    def container(self, action: str, metadata: ContainerMetadata, **extra: str) -> None:
        """A Docker-only container action (kill, stop, pause, exec_*, attach, ...): never a CRI event; published
        in the Docker domain, and in the CRI domain when its containers are shown to Docker (docker-shows-pods)."""
        if self._docker or self.shown_to_docker:
            self._publish(action, metadata.id, metadata, extra)

    def _publish(self, action: str, container_id: str, metadata: ContainerMetadata | None,
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
