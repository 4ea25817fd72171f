"""The Docker face: the Docker domain's services (pkg.docker) and the Docker API (dockerapi, aiohttp) on them.

narwhald imports this module only when the Docker face is needed (narwhal.daemon): at start when the Docker
domain has state to bring back (containers, restart policies, networks, volumes, a swarm; see
``docker_state``), else when the first client connects to the Docker socket, which listens from the start.
The Docker domain's runtime (pkg.runtime on its containerd namespace) is the daemon's and recovers at start
either way; this is what only the Docker API needs on top of it.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockerapi import versions as docker_versions
from dockerapi.backend import Backends
from dockerapi.server import DockerServer, build_app
from narwhal.docker_backends import DomainArchive, DomainIO, ImageRemoval
from narwhal.runtime import Runtime
from pkg import errors
from pkg.aio import cancel_tasks, create_guarded_task
from pkg.cni.manager import NetworkManager
from pkg.config import Config
from pkg.containerd.client import Client
from pkg.docker.build.builder import Builder
from pkg.docker.engine.engine import Engine
from pkg.docker.engine.pods_view import PodsView
from pkg.docker.events import docker_events
from pkg.docker.networks.owners import DockerSandboxes
from pkg.docker.networks.service import NetworkService
from pkg.docker.swarm.api import SwarmAPI
from pkg.docker.swarm.cluster import Cluster
from pkg.docker.swarm.executor import Executor
from pkg.docker.swarm.overlay import ClusterView, OverlayNode
from pkg.docker.swarm.tls import TLSFiles
from pkg.docker.views.exec import ExecManager
from pkg.docker.views.rootfs_access import image_view, sweep_views
from pkg.docker.volumes.service import VolumeService
from pkg.events import EventBus
from pkg.images.service import ImageService
from pkg.metrics import Metrics
from pkg.model.state import ContainerState
from pkg.system import SystemService

log = logging.getLogger("narwhal")


@dataclass
class Shared:
    """What the Docker face takes from the daemon: config, metrics, the bus, both runtimes, the CNI manager."""

    cfg: Config
    metrics: Metrics
    events: EventBus
    system: SystemService
    network: NetworkManager
    runtime: Runtime  # CRI's (docker-shows-pods, image users)
    docker_client: Client
    docker_images: ImageService
    docker_runtime: Runtime


class DockerFace:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.volumes: VolumeService | None = None
        self.networks: NetworkService | None = None  # Docker networks (user-defined bridges, DNS)
        self.engine: Engine | None = None  # Docker containers on the Docker domain's runtime
        self.execs: ExecManager | None = None
        self.swarm: Cluster | None = None  # Swarm mode (pkg.docker.swarm): its etcd, manager and agent
        self.overlay: OverlayNode | None = None  # this node's side of the swarm's overlay networks
        self.server: DockerServer | None = None
        self._sandboxes: DockerSandboxes | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- start, in the daemon's order ----
    async def recover_stores(self) -> None:
        """Volumes and networks, after the Docker runtime recovered and before the CNI manager's start (its
        leak GC must know the named networks)."""
        await self._start_volumes()
        await self._start_networks()

    async def start_engine(self) -> None:
        """The engine on the recovered runtime; containers restarted by their policies (after the network)."""
        s = self.shared
        assert self.volumes is not None and self.networks is not None and self._sandboxes is not None
        rt = s.docker_runtime
        self.engine = Engine(rt.sandboxes, rt.containers, s.docker_images, s.docker_client, volumes=self.volumes,
                             endpoints=s.network.endpoints)
        self._sandboxes.engine = self.engine  # container names for DNS and network inspect
        self._network_events(self.engine)
        docker_events(rt.ctx.events).describe = _docker_event_attributes(self.engine)
        await self.engine.start_engine()

    async def serve(self, sock: socket.socket | None = None) -> None:
        """The swarm back (a node in a swarm before the restart is back in it), then the Docker API on ``sock``
        (the daemon's, listening since its start, when a client loaded the face) or on a socket bound now."""
        s = self.shared
        assert self.engine is not None and self.networks is not None
        docker_versions.configure(s.cfg.docker_min_api_version)
        host = await s.system.info()
        executor = Executor(self.engine, s.docker_images)
        executor.network_name = self._network_name
        cfg = s.cfg
        self.swarm = Cluster(cfg.root / "docker", cfg.state / "docker", executor,
                             external_endpoints=cfg.swarm_etcd_endpoints, engine_version=host.server_version,
                             ncpu=host.ncpu, mem_total=host.mem_total, instance_id=cfg.instance_id,
                             external_tls=swarm_etcd_tls(cfg))
        # overlay networks: wired before the swarm starts, so tasks adopted on rejoin find their networks
        self.overlay = OverlayNode(cfg, ClusterView(self.swarm), self.networks)
        s.network.attachment_hook = self.overlay.claim
        s.network.listeners.append(self.overlay)
        self.networks.remote_records = self.overlay.remote_names
        self.swarm.ingress_changed = self.overlay.wake  # the node's ingress endpoint onto its bridge at once
        await self.swarm.start()  # a node in a swarm before the restart is back in it
        self._tasks.append(create_guarded_task(self.overlay.run, "swarm-overlay", restart_delay=1.0))
        swarm_api = SwarmAPI(self.swarm, s.events)
        swarm_api.overlay = self.overlay
        rt = s.docker_runtime
        self.execs = ExecManager(rt.containers, rt.ctx.root / "execs")
        docker_io = DomainIO(rt.containers)
        pod_io = DomainIO(s.runtime.containers)
        image_users = [docker_io, pod_io] if cfg.docker_images_for_pods else [docker_io]
        backends = Backends(
            system=s.system, metrics=s.metrics, images=s.docker_images,
            image_removal=ImageRemoval(s.docker_images, image_users),
            engine=self.engine, io=docker_io, archive=DomainArchive(rt.containers),
            volumes=self.volumes,
            execs=self.execs,
            events=s.events,
            networks=self.networks,
            builder=Builder(s.docker_client, s.docker_images, self.engine, s.events, rt.ctx.root / "build"),
            swarm=swarm_api,
        )
        if cfg.docker_shows_pods:
            backends.pods = self.pods_view()
            backends.pod_io = pod_io
            backends.pod_execs = ExecManager(s.runtime.containers)
        self.server = DockerServer(cfg.docker_socket, build_app(backends))
        await self.server.start(sock)

    def pods_view(self) -> PodsView:
        """docker-shows-pods (off by default): kubelet's containers in the Docker API (pkg.docker.engine.pods_view),
        and in docker events."""
        s = self.shared
        pods = PodsView(s.runtime.sandboxes, s.runtime.containers, s.cfg.docker_may_stop_pods)
        events = docker_events(s.runtime.ctx.events)  # kubelet's containers in docker events
        events.describe, events.shown_to_docker = pods.describe, True
        return pods

    async def _network_name(self, ref: str) -> str:
        """A swarm task's network's name by ID (synced from the store first when not known here yet, e.g. a
        network created on a manager a moment ago); the ID when it still is not."""
        if self.networks is None:
            return ref
        for attempt in range(2):
            try:
                return self.networks.get(ref).name
            except errors.NarwhalError:
                if attempt == 0 and self.overlay is not None:
                    try:
                        await self.overlay.sync()
                    except errors.NarwhalError as exc:
                        log.warning("overlay sync for a task's network: %s", exc.message)
        return ref

    async def _start_networks(self) -> None:
        """Docker networks: named networks for the shared NetworkManager, before anything joins one."""
        s = self.shared
        self._sandboxes = DockerSandboxes(s.docker_runtime.sandboxes)
        self.networks = NetworkService(s.cfg, s.network, owners=self._sandboxes, sandboxes=self._sandboxes)
        events = s.events
        self.networks.event_hooks.append(lambda e: events.publish_docker(
            "network", e.action, e.network_id,
            {"name": e.network_name, "type": e.network_type, **({"container": e.container} if e.container else {})}))
        await self.networks.start()

    def _network_events(self, engine: Engine) -> None:
        """Network connect/disconnect events as moby logs them: at a container's start and exit (the engine
        asks), and at a connect/disconnect only while it runs (a create or a removal logs none)."""
        assert self.networks is not None
        store = self.shared.docker_runtime.ctx.containers

        def running(container_id: str) -> bool:
            found = store.find(container_id)
            return found is not None and found[1].state == ContainerState.RUNNING

        self.networks.running = running
        engine.lifecycle.network_events = self.networks.container_events

    async def _start_volumes(self) -> None:
        """Docker volumes (after the Docker runtime recovered, so references of gone containers are dropped)."""
        s = self.shared
        client, ctx = s.docker_client, s.docker_runtime.ctx
        self.volumes = VolumeService(ctx.root, lambda image: image_view(client, image), events=s.events)
        await self.volumes.start(m.id for m, _ in s.docker_runtime.containers.list())
        await asyncio.to_thread(sweep_views, ctx.state)

    # ---- shutdown ----
    async def close(self) -> None:
        """The swarm before the engine (the agent uses it); exec processes of this run end (their records
        stay, exited)."""
        if self.swarm is not None:
            await self.swarm.close()
        if self.execs is not None:
            await self.execs.close()
        if self.engine is not None:
            await self.engine.close()
        await cancel_tasks(self._tasks)

    async def stop_networks(self) -> None:
        if self.networks is not None:
            await self.networks.stop()

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()


def _docker_event_attributes(engine: Engine) -> Callable[[str], dict[str, str] | None]:
    """Docker's attributes of a container event: its labels, the image as the user named it, its name."""

    def describe(container_id: str) -> dict[str, str] | None:
        record = engine.registry.find(container_id)
        if record is None:
            return None
        return {**record.config.labels, "image": record.config.image, "name": record.name}

    return describe


def swarm_etcd_tls(cfg: Config) -> TLSFiles | None:
    """The client TLS files of an https:// external etcd (config.py checked that all three come together)."""
    if cfg.swarm_etcd_ca_file is None or cfg.swarm_etcd_cert_file is None or cfg.swarm_etcd_key_file is None:
        return None
    return TLSFiles(cfg.swarm_etcd_ca_file, cfg.swarm_etcd_cert_file, cfg.swarm_etcd_key_file)
