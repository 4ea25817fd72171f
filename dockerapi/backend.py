"""What the Docker handlers reach in pkg (moby's backend.go): one holder, set up by the daemon.

Each handler module reads the service it needs from ``request.app[BACKENDS]``.
Fields are pkg services; a field stays None until the daemon wires it (unit
tests wire only what they exercise), and ``need()`` turns a missing one into
a clear 501 rather than an AttributeError.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiohttp import web

from dockerapi.swarm_backend import SwarmBackend
from pkg import errors
from pkg.docker.build.builder import Builder
from pkg.docker.engine.engine import Engine
from pkg.docker.engine.pods_view import PodsView
from pkg.docker.networks.service import NetworkService
from pkg.docker.views.exec import ExecManager
from pkg.docker.volumes.service import VolumeService
from pkg.events import EventBus
from pkg.images.service import ImageService
from pkg.metrics import Metrics
from pkg.runtime.containers import ContainerService
from pkg.runtime.sandboxes import SandboxService
from pkg.system import HostInfo, VersionInfo


class SystemBackend(Protocol):
    async def version(self) -> VersionInfo: ...

    async def info(self) -> HostInfo: ...


@dataclass
class Backends:
    system: SystemBackend
    metrics: Metrics
    # The Docker domain's core services (wired by narwhal/daemon.py).  Owners of a service not
    # built yet replace its ``Any`` with the concrete pkg type when they add it.
    images: ImageService | None = None        # on the Docker containerd namespace
    sandboxes: SandboxService | None = None   # the Docker domain's runtime
    containers: ContainerService | None = None
    engine: Engine | None = None  # pkg.docker.engine: Docker containers (names, restart policies) on that runtime
    volumes: VolumeService | None = None  # Docker volumes (local driver)
    networks: NetworkService | None = None  # Docker networks (pkg.docker.networks)
    execs: ExecManager | None = None  # Docker exec instances of the Docker domain's containers
    events: EventBus | None = None  # the daemon's event bus: /events reads it, services publish on it
    builder: Builder | None = None  # docker build (pkg.docker.build) on the Docker domain
    swarm: SwarmBackend | None = None  # Swarm mode (pkg.docker.swarm.api.SwarmAPI)
    pods: PodsView | None = None  # docker-shows-pods: kubelet's containers (the CRI domain's), read-mostly
    pod_containers: ContainerService | None = None  # docker-images-for-pods: rmi counts pods' containers as users
    pod_execs: ExecManager | None = None  # exec instances in kubelet's containers (docker-shows-pods)


BACKENDS = web.AppKey("backends", Backends)

T = TypeVar("T")


def backends(request: web.Request) -> Backends:
    return request.app[BACKENDS]


def need(value: T | None, what: str) -> T:
    if value is None:
        raise errors.NotImplementedYet(f"{what} is not available in this daemon")
    return value
