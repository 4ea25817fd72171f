"""The daemon: owns containerd, builds the core services, serves CRI, Docker API and metrics."""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from cri.container import ContainerHandlers
from cri.events import EventHandlers
from cri.exec import ExecHandlers
from cri.image import ImageService
from cri.runtime import RuntimeService
from cri.sandbox import SandboxHandlers
from cri.server import CRIServer
from cri.stats import StatsHandlers
from cri.streaming import StreamingHandlers
from dockerapi import versions as docker_versions
from dockerapi.backend import Backends
from dockerapi.server import DockerServer, build_app
from narwhal.docker_backends import DomainArchive, DomainIO, ImageRemoval
from narwhal.notify import Notifier
from narwhal.reload import reload as reload_config
from narwhal.runtime import Runtime, build_runtime
from pkg import errors
from pkg import metrics as metrics_mod
from pkg.aio import cancel_tasks, create_guarded_task
from pkg.cni.manager import NetworkManager
from pkg.config import Config
from pkg.containerd.client import Client
from pkg.containerd.supervisor import START_TIMEOUT, Supervisor
from pkg.cri.stats import StatsService
from pkg.cri.stream_backend import RuntimeStreaming
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
from pkg.docker.views.exec import ExecManager
from pkg.docker.views.rootfs_access import image_view, sweep_views
from pkg.docker.volumes.service import VolumeService
from pkg.events import EventBus
from pkg.health import HealthChecker
from pkg.images.mirror import ImageMirror, docker_users_guard
from pkg.images.service import ImageService as ImageCore
from pkg.logs.service_client import LogService
from pkg.metrics import CONTENT_TYPE_LATEST, Metrics
from pkg.model.state import ContainerState
from pkg.runtime.container_io import log_stats_file
from pkg.streaming.server import StreamingServer
from pkg.system import SystemService

log = logging.getLogger("narwhal")

DOCKER_DOMAIN = "docker"

WATCHDOG_INTERVAL = 2.0


class Daemon:
    def __init__(self, cfg: Config, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()  # systemd's Type=notify (no-op without NOTIFY_SOCKET)
        self.metrics = Metrics()
        metrics_mod.install(self.metrics)  # the core's call sites (containerd, CNI, pulls, lifecycle) report here
        self.events = EventBus()  # one bus for both domains: CRI GetContainerEvents and Docker /events
        self.supervisor = Supervisor(cfg) if cfg.owns_containerd else None
        self.client: Client | None = None
        self.images: ImageCore | None = None
        self.network: NetworkManager | None = None
        self.runtime: Runtime | None = None
        self.log_service: LogService | None = None  # log-service: one copier of every container's output
        # The Docker domain: its own containerd namespace, images, sandboxes and containers, so CRI
        # listings never show Docker's objects and `docker ps` never shows kubelet's pods.
        self.docker_client: Client | None = None
        self.docker_images: ImageCore | None = None
        self.docker_runtime: Runtime | None = None
        self.docker_execs: ExecManager | None = None
        self.engine: Engine | None = None  # Docker containers on the Docker domain's runtime
        self.docker_volumes: VolumeService | None = None
        self.docker_networks: NetworkService | None = None  # Docker networks (user-defined bridges, DNS)
        self.swarm: Cluster | None = None  # Swarm mode (pkg.docker.swarm): its etcd, manager and agent
        self.overlay: OverlayNode | None = None  # this node's side of the swarm's overlay networks
        self._lock: IO[str] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._cri: CRIServer | None = None
        self._docker: DockerServer | None = None
        self._streaming: StreamingServer | None = None
        self._metrics_runner: web.AppRunner | None = None

    # ---- start-up ----
    def _take_instance_lock(self) -> None:
        """One narwhald per root: a second one with the same dirs is refused, not corrupting."""
        self.cfg.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.cfg.state.mkdir(parents=True, exist_ok=True, mode=0o711)
        lock = open(self.cfg.root / "narwhald.lock", "a+")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise errors.AlreadyExists(f"another narwhald is running with root {self.cfg.root}") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    async def start(self) -> None:
        self._take_instance_lock()
        for sock in (self.cfg.cri_socket, self.cfg.docker_socket):
            _refuse_if_live(sock)
        status = self.notifier.status
        if self.supervisor is not None:
            status("starting containerd")
            self.supervisor.ensure_started()
        self.client = Client(self.cfg.containerd_socket, self.cfg.containerd_namespace)
        await self.client.wait_ready(START_TIMEOUT)
        version, _ = await self.client.version()
        log.info("containerd %s ready at %s", version, self.cfg.containerd_socket)
        self.metrics.containerd_up.set(1)

        system = SystemService(self.client, self.cfg)
        self.images = ImageCore(self.client, self.cfg)
        self.network = NetworkManager(self.cfg)
        if self.cfg.log_service:
            status("starting the log service")
            self.log_service = LogService(self.cfg.log_service_dir, self.cfg.state / "bin")
            await self.log_service.ensure_started()
            self._tasks.append(create_guarded_task(self.log_service.watch, "log-service-watch", restart_delay=1.0))
        self.runtime = build_runtime(self.cfg, self.client, self.images, self.network, bus=self.events,
                                     log_service=self.log_service)
        self.docker_client = Client(self.cfg.containerd_socket, self.cfg.docker_namespace)
        self.docker_images = ImageCore(self.docker_client, self.cfg)
        self.docker_runtime = build_runtime(self.cfg, self.docker_client, self.docker_images, self.network,
                                            domain=DOCKER_DOMAIN, bus=self.events, log_service=self.log_service)
        self._watch_metrics()
        health = HealthChecker(self.client, self.network.status)
        status("recovering CRI sandboxes and containers")
        self._tasks += await self.runtime.start()
        status("recovering Docker containers")
        self._tasks += await self.docker_runtime.start()
        status("recovering Docker volumes and networks")
        await self._start_volumes()
        await self._start_networks()
        await self.network.start(self._all_sandbox_ids)
        self.engine = Engine(self.docker_runtime.sandboxes, self.docker_runtime.containers, self.docker_images,
                             self.docker_client, volumes=self.docker_volumes, endpoints=self.network.endpoints)
        self._docker_sandboxes.engine = self.engine  # container names for DNS and network inspect
        self._network_events(self.engine)
        docker_events(self.docker_runtime.ctx.events).describe = _docker_event_attributes(self.engine)
        await self._share_images()
        status("restarting Docker containers by their restart policies")
        await self.engine.start_engine()  # after the network: recovery may restart containers

        await self._start_metrics()
        streaming_backend = RuntimeStreaming(self.runtime.sandboxes, self.runtime.containers)
        self._streaming = StreamingServer(streaming_backend, self.cfg.streaming_address)
        await self._streaming.start()
        runtime_service = RuntimeService(
            self.cfg, health,
            SandboxHandlers(self.runtime.sandboxes, self.runtime.containers),
            ContainerHandlers(self.runtime.containers),
            ExecHandlers(self.runtime.containers),
            StatsHandlers(StatsService(self.runtime.ctx)),
            StreamingHandlers(self._streaming, streaming_backend),
            EventHandlers(self.events, self.runtime.sandboxes, self.runtime.containers),
        )
        self._cri = CRIServer(self.cfg.cri_socket, runtime_service, ImageService(self.images), self.metrics)
        await self._cri.start()
        docker_versions.configure(self.cfg.docker_min_api_version)
        host = await system.info()
        executor = Executor(self.engine, self.docker_images)
        executor.network_name = self._network_name
        self.swarm = Cluster(self.cfg.root / "docker", self.cfg.state / "docker", executor,
                             external_endpoints=self.cfg.swarm_etcd_endpoints, engine_version=host.server_version,
                             ncpu=host.ncpu, mem_total=host.mem_total, instance_id=self.cfg.instance_id)
        assert self.docker_networks is not None and self.network is not None
        # overlay networks: wired before the swarm starts, so tasks adopted on rejoin find their networks
        self.overlay = OverlayNode(self.cfg, ClusterView(self.swarm), self.docker_networks)
        self.network.attachment_hook = self.overlay.claim
        self.network.listeners.append(self.overlay)
        self.docker_networks.remote_records = self.overlay.remote_names
        await self.swarm.start()  # a node in a swarm before the restart is back in it
        self._tasks.append(create_guarded_task(self.overlay.run, "swarm-overlay", restart_delay=1.0))
        swarm_api = SwarmAPI(self.swarm, self.events)
        swarm_api.overlay = self.overlay
        self.docker_execs = ExecManager(self.docker_runtime.containers, self.docker_runtime.ctx.root / "execs")
        docker_io = DomainIO(self.docker_runtime.containers)
        pod_io = DomainIO(self.runtime.containers)
        image_users = [docker_io, pod_io] if self.cfg.docker_images_for_pods else [docker_io]
        backends = Backends(
            system=system, metrics=self.metrics, images=self.docker_images,
            image_removal=ImageRemoval(self.docker_images, image_users),
            engine=self.engine, io=docker_io, archive=DomainArchive(self.docker_runtime.containers),
            volumes=self.docker_volumes,
            execs=self.docker_execs,
            events=self.events,
            networks=self.docker_networks,
            builder=Builder(self.docker_client, self.docker_images, self.engine, self.events,
                            self.docker_runtime.ctx.root / "build"),
            swarm=swarm_api,
        )
        if self.cfg.docker_shows_pods:
            backends.pods = self._pods_view()
            backends.pod_io = pod_io
            backends.pod_execs = ExecManager(self.runtime.containers)
        self._docker = DockerServer(self.cfg.docker_socket, build_app(backends))
        await self._docker.start()
        if self.supervisor is not None:
            self._tasks.append(create_guarded_task(self._watchdog, "containerd-watchdog", restart_delay=1.0))
        log.info("narwhald ready")
        self.notifier.ready(f"serving CRI on {self.cfg.cri_socket}, Docker API on {self.cfg.docker_socket}")

    async def _network_name(self, ref: str) -> str:
        """A swarm task's network's name by ID (synced from the store first when not known here yet, e.g. a
        network created on a manager a moment ago); the ID when it still is not."""
        if self.docker_networks is None:
            return ref
        for attempt in range(2):
            try:
                return self.docker_networks.get(ref).name
            except errors.NarwhalError:
                if attempt == 0 and self.overlay is not None:
                    try:
                        await self.overlay.sync()
                    except errors.NarwhalError as exc:
                        log.warning("overlay sync for a task's network: %s", exc.message)
        return ref

    async def _share_images(self) -> None:
        """docker-images-for-pods: Docker's image names mirrored into the CRI image store (pkg.images.mirror),
        and removal through either face refused while the other face's containers use the image."""
        if not self.cfg.docker_images_for_pods:
            return
        assert self.images is not None and self.docker_images is not None
        assert self.runtime is not None and self.docker_runtime is not None
        cri_containers, docker_containers = self.runtime.containers, self.docker_runtime.containers
        mirror = ImageMirror(self.docker_images, self.images,
                             lambda: {m.image_id for m, _ in cri_containers.list()})
        self.docker_images.store.watcher = mirror
        self.images.remove_guard = docker_users_guard(lambda: {m.id: m.image_id for m, _ in docker_containers.list()})
        await mirror.sync()

    def _pods_view(self) -> PodsView:
        """docker-shows-pods (off by default): kubelet's containers in the Docker API (pkg.docker.engine.pods_view),
        and in docker events."""
        assert self.runtime is not None
        pods = PodsView(self.runtime.sandboxes, self.runtime.containers, self.cfg.docker_may_stop_pods)
        events = docker_events(self.runtime.ctx.events)  # kubelet's containers in docker events
        events.describe, events.shown_to_docker = pods.describe, True
        return pods

    async def _start_networks(self) -> None:
        """Docker networks: named networks for the shared NetworkManager, before anything joins one."""
        assert self.docker_runtime is not None and self.network is not None
        self._docker_sandboxes = DockerSandboxes(self.docker_runtime.sandboxes)
        self.docker_networks = NetworkService(self.cfg, self.network, owners=self._docker_sandboxes,
                                              sandboxes=self._docker_sandboxes)
        events = self.events
        self.docker_networks.event_hooks.append(lambda e: events.publish_docker(
            "network", e.action, e.network_id,
            {"name": e.network_name, "type": e.network_type, **({"container": e.container} if e.container else {})}))
        await self.docker_networks.start()

    def _network_events(self, engine: Engine) -> None:
        """Network connect/disconnect events as moby logs them: at a container's start and exit (the engine
        asks), and at a connect/disconnect only while it runs (a create or a removal logs none)."""
        assert self.docker_runtime is not None and self.docker_networks is not None
        store = self.docker_runtime.ctx.containers

        def running(container_id: str) -> bool:
            found = store.find(container_id)
            return found is not None and found[1].state == ContainerState.RUNNING

        self.docker_networks.running = running
        engine.lifecycle.network_events = self.docker_networks.container_events

    async def _start_volumes(self) -> None:
        """Docker volumes (after the Docker runtime recovered, so references of gone containers are dropped)."""
        assert self.docker_runtime is not None and self.docker_client is not None
        client, ctx = self.docker_client, self.docker_runtime.ctx
        self.docker_volumes = VolumeService(ctx.root, lambda image: image_view(client, image),
                                            events=self.events)
        await self.docker_volumes.start(m.id for m, _ in self.docker_runtime.containers.list())
        await asyncio.to_thread(sweep_views, ctx.state)

    async def _all_sandbox_ids(self) -> set[str]:
        """Sandboxes of both domains: they share the CNI network, so its leak GC must know all of them."""
        assert self.runtime is not None and self.docker_runtime is not None
        return await self.runtime.sandbox_ids() | await self.docker_runtime.sandbox_ids()

    def _watch_metrics(self) -> None:
        """Values the metrics read at scrape time: objects by state per front end, the event bus."""
        assert self.runtime is not None and self.docker_runtime is not None
        for frontend, runtime in ((metrics_mod.CRI_FRONTEND, self.runtime),
                                  (metrics_mod.DOCKER_FRONTEND, self.docker_runtime)):
            self.metrics.watch_states(frontend, *_state_sources(runtime))
            self.metrics.watch_logs(frontend, _log_stats_files(runtime))
        self.metrics.watch_bus(lambda: self.events.published, lambda: self.events.subscribers)
        self.events.on_overflow = self.metrics.event_overflows.inc

    async def _start_metrics(self) -> None:
        host, port = self.cfg.metrics_host_port()

        async def handler(request: web.Request) -> web.Response:
            response = web.Response(body=await self.metrics.render_async())
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        app = web.Application()
        app.router.add_get("/metrics", handler)
        self._metrics_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._metrics_runner.setup()
        try:
            await web.TCPSite(self._metrics_runner, host, port).start()
        except OSError as exc:
            raise errors.Unavailable(f"metrics-address {host}:{port}: {exc.strerror}") from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    async def _watchdog(self) -> None:
        assert self.supervisor is not None and self.client is not None
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            if await self.supervisor.restart_if_dead():
                self.metrics.containerd_restarts.inc()
                await self.client.wait_ready(START_TIMEOUT)
            self.metrics.containerd_up.set(1 if await self.client.healthy() else 0)

    # ---- shutdown ----
    async def stop(self) -> None:
        self.notifier.stopping("stopping")
        if self.swarm is not None:
            await self.swarm.close()  # before the engine: the agent uses it
        if self.docker_execs is not None:
            await self.docker_execs.close()  # exec processes of this run end; their records stay, exited
        if self.engine is not None:
            await self.engine.close()
        await cancel_tasks(self._tasks)
        if self.docker_networks is not None:
            await self.docker_networks.stop()
        if self.network is not None:
            await self.network.stop()
        if self._docker is not None:
            await self._docker.stop()
        if self._cri is not None:
            await self._cri.stop()
        if self._streaming is not None:
            await self._streaming.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        for client in (self.docker_client, self.client):
            if client is not None:
                await client.close()
        if self.supervisor is not None and self.cfg.stop_containerd_on_exit:
            await self.supervisor.stop()
        if self._lock is not None:
            self._lock.close()
        log.info("narwhald stopped")


def _docker_event_attributes(engine: Engine) -> Callable[[str], dict[str, str] | None]:
    """Docker's attributes of a container event: its labels, the image as the user named it, its name."""

    def describe(container_id: str) -> dict[str, str] | None:
        record = engine.registry.find(container_id)
        if record is None:
            return None
        return {**record.config.labels, "image": record.config.image, "name": record.name}

    return describe


def _log_stats_files(runtime: Runtime) -> Callable[[], list[Path]]:
    ctx = runtime.ctx
    return lambda: [log_stats_file(ctx, cid) for cid in ctx.containers.ids()]


def _state_sources(runtime: Runtime) -> tuple[Callable[[], list[str]], Callable[[], list[str]]]:
    ctx = runtime.ctx
    return (lambda: [s.state.value for _, _, s in ctx.containers],
            lambda: [s.state.value for _, _, s in ctx.sandboxes])


def _refuse_if_live(path: Path) -> None:
    """A socket someone still answers on belongs to another daemon: refuse rather than steal it."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # stale
    else:
        raise errors.AlreadyExists(f"{path} is in use by another process")
    finally:
        probe.close()


async def run(daemon: Daemon, reload: Callable[[], Config] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reload is not None:
        # SIGHUP: re-read the config file, apply what is safe (narwhal/reload.py), as dockerd does.
        def on_sighup() -> None:
            daemon.notifier.reloading()
            try:
                daemon.cfg = reload_config(daemon.cfg, reload, daemon.events)
            finally:
                daemon.notifier.ready()  # systemd leaves "reloading" only on READY=1

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    # Pinged from the start: recovering many containers may take longer than the watchdog period.
    watchdog = create_guarded_task(daemon.notifier.watchdog, "sd-watchdog")
    try:
        await daemon.start()
        await stop.wait()
    except errors.NarwhalError as exc:
        daemon.notifier.status(f"failed: {exc.message}")
        raise
    finally:
        await daemon.stop()
        await cancel_tasks([watchdog])
        daemon.notifier.close()
