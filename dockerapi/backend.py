"""The one holder of what the Docker handlers reach (set up by the daemon, narwhal/docker_backends.py).

Each handler module reads the backend it needs from ``request.app[BACKENDS]``.  Every field is one of
dockerapi.backends' Protocols; a field stays None until the daemon wires it (unit tests wire only what they
exercise, with fakes), and ``need()`` turns a missing one into a clear 501 rather than an AttributeError.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from dockerapi.backends import (
    ArchiveBackend,
    BuildBackend,
    ContainerBackend,
    ContainerIOBackend,
    EventsBackend,
    ExecBackend,
    ImageBackend,
    ImageRemovalBackend,
    NetworkBackend,
    PodsBackend,
    SwarmBackend,
    SystemBackend,
    VolumeBackend,
)
from pkg import errors
from pkg.metrics import Metrics


@dataclass
class Backends:
    system: SystemBackend
    metrics: Metrics  # the middleware's request counters and latencies
    images: ImageBackend | None = None  # on the Docker containerd namespace
    image_removal: ImageRemovalBackend | None = None  # rmi/prune rules: images and the containers using them
    engine: ContainerBackend | None = None  # Docker containers (names, restart policies)
    io: ContainerIOBackend | None = None  # the Docker domain's containers: attach, logs, stats, top
    archive: ArchiveBackend | None = None  # docker cp, export, diff
    volumes: VolumeBackend | None = None  # Docker volumes (local driver)
    networks: NetworkBackend | None = None  # Docker networks
    execs: ExecBackend | None = None  # Docker exec instances of the Docker domain's containers
    events: EventsBackend | None = None  # the daemon's event bus: /events reads it, handlers publish on it
    builder: BuildBackend | None = None  # docker build on the Docker domain
    swarm: SwarmBackend | None = None  # Swarm mode
    pods: PodsBackend | None = None  # docker-shows-pods: kubelet's containers (the CRI domain's), read-mostly
    pod_io: ContainerIOBackend | None = None  # kubelet's containers' attach, logs, stats, top (docker-shows-pods)
    pod_execs: ExecBackend | None = None  # exec instances in kubelet's containers (docker-shows-pods)


BACKENDS = web.AppKey("backends", Backends)

T = TypeVar("T")


def backends(request: web.Request) -> Backends:
    return request.app[BACKENDS]


def need(value: T | None, what: str) -> T:
    if value is None:
        raise errors.NotImplementedYet(f"{what} is not available in this daemon")
    return value
