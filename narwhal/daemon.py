"""The daemon: owns containerd, builds the core services, serves CRI, Docker API and metrics."""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cri.container import ContainerHandlers
from cri.events import EventHandlers
from cri.exec import ExecHandlers
from cri.image import ImageService
from cri.runtime import RuntimeService
from cri.sandbox import SandboxHandlers
from cri.server import CRIServer
from cri.stats import StatsHandlers
from cri.streaming import StreamingHandlers
from narwhal import metrics_http
from narwhal.heap import trimmer
from narwhal.notify import Notifier
from narwhal.reload import reload as reload_config
from narwhal.runtime import Runtime, build_runtime
from pkg import errors, sockets
from pkg import metrics as metrics_mod
from pkg.aio import cancel_tasks, create_guarded_task, import_modules
from pkg.cni.manager import NetworkManager
from pkg.config import Config
from pkg.containerd.client import Client
from pkg.containerd.supervisor import START_TIMEOUT, Supervisor
from pkg.cri.stats import StatsService
from pkg.cri.stream_backend import RuntimeStreaming
from pkg.docker.networks.model import PREDEFINED, predefined_id
from pkg.events import EventBus
from pkg.health import HealthChecker
from pkg.images.mirror import ImageMirror, docker_users_guard
from pkg.images.service import ImageService as ImageCore
from pkg.logs.service_client import LogService
from pkg.metrics import CONTENT_TYPE_LATEST, Metrics
from pkg.runtime.container_io import log_stats_file
from pkg.streaming.server import StreamingServer
from pkg.system import SystemService

if TYPE_CHECKING:  # imported when needed: not at start on a node with no Docker state
    from narwhal.docker_face import DockerFace

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
        self.system: SystemService | None = None
        # The Docker face (narwhal.docker_face: engine, volumes, networks, swarm, the Docker API): loaded at start
        # when the Docker domain has state to bring back, else when the first client connects to its socket.
        self.docker: DockerFace | None = None
        self._lock: IO[str] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._cri: CRIServer | None = None
        self._docker_listener: sockets.FirstClient | None = None
        self._streaming: StreamingServer | None = None
        self._metrics_servers: list[asyncio.Server] = []

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
        self.client = Client(self.cfg.containerd_socket, self.cfg.containerd_namespace,
                             shim_state=self.cfg.shim_state)
        await self.client.wait_ready(START_TIMEOUT)
        version, _ = await self.client.version()
        log.info("containerd %s ready at %s", version, self.cfg.containerd_socket)
        self.metrics.containerd_up.set(1)

        self.system = SystemService(self.client, self.cfg)
        self.images = ImageCore(self.client, self.cfg)
        self.network = NetworkManager(self.cfg)
        if self.cfg.log_service:
            status("starting the log service")
            self.log_service = LogService(self.cfg.log_service_dir, self.cfg.state / "bin")
            await self.log_service.ensure_started()
            self._tasks.append(create_guarded_task(self.log_service.watch, "log-service-watch", restart_delay=1.0))
        self.runtime = build_runtime(self.cfg, self.client, self.images, self.network, bus=self.events,
                                     log_service=self.log_service, containerd=self.supervisor)
        self.docker_client = Client(self.cfg.containerd_socket, self.cfg.docker_namespace,
                                    shim_state=self.cfg.shim_state)
        self.docker_images = ImageCore(self.docker_client, self.cfg)
        status("recovering interrupted image pulls")  # their cut unpacks removed, partial blobs kept to resume
        await asyncio.gather(self.images.ensure_recovered(), self.docker_images.ensure_recovered())
        self.docker_runtime = build_runtime(self.cfg, self.docker_client, self.docker_images, self.network,
                                            domain=DOCKER_DOMAIN, bus=self.events, log_service=self.log_service)
        self._watch_metrics()
        health = HealthChecker(self.client, self.network.status)
        status("recovering CRI sandboxes and containers")
        self._tasks += await self.runtime.start()
        status("recovering Docker containers")
        self._tasks += await self.docker_runtime.start()
        ctx = self.docker_runtime.ctx
        reason = docker_state(self.cfg, bool(ctx.sandboxes.ids() or ctx.containers.ids()))
        if reason:
            log.info("Docker face loaded at start (%s)", reason)
            status("recovering Docker volumes and networks")
            await (await self._docker_face()).recover_stores()
        await self.network.start(self._all_sandbox_ids)
        await self._share_images()
        if self.docker is not None:
            status("restarting Docker containers by their restart policies")
            await self.docker.start_engine()  # after the network: recovery may restart containers

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
        await self.system.info()  # on a fresh root: <root>/engine-id, Docker's daemon ID (of a reload's event too)
        if self.docker is not None:
            await self.docker.serve()  # a node in a swarm before the restart is back in it; then the socket
        else:
            # Go's listeners (dockerd) use the kernel's somaxconn backlog, not 128: a burst of clients must queue.
            docker_sock = sockets.listen_unix(self.cfg.docker_socket, backlog=4096)
            self._docker_listener = sockets.FirstClient([docker_sock], self._serve_docker, "Docker API")
            self._docker_listener.arm()
            log.info("Docker API on %s (loaded at its first client)", self.cfg.docker_socket)
        if self.supervisor is not None:
            self._tasks.append(create_guarded_task(self._watchdog, "containerd-watchdog", restart_delay=1.0))
        log.info("narwhald ready")
        heap = trimmer()  # the start-up's freed heap now, and again after each burst of work (narwhal/heap.py)
        if heap is not None:
            heap.trim()
            self._tasks.append(create_guarded_task(heap.run, "heap-trim", restart_delay=1.0))
        self.notifier.ready(f"serving CRI on {self.cfg.cri_socket}, Docker API on {self.cfg.docker_socket}")

    async def _docker_face(self) -> DockerFace:
        """Import and build the Docker face (its modules are imported in a thread: the loop keeps serving CRI
        and metrics meanwhile)."""
        await import_modules("narwhal.docker_face")
        from narwhal.docker_face import DockerFace, Shared

        assert self.system is not None and self.network is not None and self.runtime is not None
        assert self.docker_client is not None and self.docker_images is not None and self.docker_runtime is not None
        self.docker = DockerFace(Shared(
            cfg=self.cfg, metrics=self.metrics, events=self.events, system=self.system, network=self.network,
            runtime=self.runtime, docker_client=self.docker_client, docker_images=self.docker_images,
            docker_runtime=self.docker_runtime))
        return self.docker

    async def _serve_docker(self, socks: list[socket.socket]) -> None:
        """The Docker API on the socket narwhald listens on; built now if nothing needed it at start."""
        docker = self.docker
        if docker is None:
            docker = await self._docker_face()
            await docker.recover_stores()
            await docker.start_engine()
        await docker.serve(socks[0])

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
        """/metrics over plain asyncio streams (narwhal.metrics_http): a scrape does not import aiohttp."""
        host, port = self.cfg.metrics_host_port()
        try:
            socks = sockets.listen_tcp(host, port)
        except OSError as exc:
            raise errors.Unavailable(f"metrics-address {host}:{port}: {exc.strerror}") from None
        self._metrics_servers = await metrics_http.serve(socks, self.metrics.render_async, CONTENT_TYPE_LATEST)
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
        if self._docker_listener is not None:
            await self._docker_listener.close()  # a Docker face still loading stops loading
        if self.docker is not None:
            await self.docker.close()  # swarm, execs, engine
        await cancel_tasks(self._tasks)
        if self.docker is not None:
            await self.docker.stop_networks()
        if self.network is not None:
            await self.network.stop()
        if self.docker is not None:
            await self.docker.stop_server()
        if self._docker_listener is not None:
            self.cfg.docker_socket.unlink(missing_ok=True)
        if self._cri is not None:
            await self._cri.stop()
        if self._streaming is not None:
            await self._streaming.stop()
        for server in self._metrics_servers:
            server.close()
        for client in (self.docker_client, self.client):
            if client is not None:
                await client.close()
        if self.supervisor is not None and self.cfg.stop_containerd_on_exit:
            await self.supervisor.stop()
        if self._lock is not None:
            self._lock.close()
        log.info("narwhald stopped")


def docker_state(cfg: Config, recovered: bool) -> str:
    """Why the Docker face must be loaded at start ("" when nothing of the Docker domain needs bringing back):
    its containers (restart policies, health checks, AutoRemove), their records, user-defined networks (bridges
    and isolation rules after a reboot), volumes (mounts to match their references), a swarm to rejoin, or a
    setting that shows kubelet's containers to Docker.  Images and the build cache need nothing at start."""
    if cfg.docker_shows_pods:
        return "docker-shows-pods"
    if recovered:  # the Docker domain's runtime found sandboxes or containers in its containerd namespace
        return "Docker containers in containerd"
    root = cfg.root / "docker"
    if _any_entry(root / "engine"):
        return "Docker container records"
    predefined = {f"{predefined_id(name, cfg.instance_id)}.json" for name in PREDEFINED}
    if any(p.name not in predefined for p in _entries(root / "networks") if p.suffix == ".json"):
        return "user-defined networks"
    if _any_entry(root / "volumes"):
        return "volumes"
    if _any_entry(root / "swarm") or _overlay_links(cfg.state / "docker" / "swarm" / "overlay-links.json"):
        return "swarm"
    return ""


def _overlay_links(path: Path) -> bool:
    """Overlay links recorded by a swarm's overlay networks (the file says ``[]`` once the face has run)."""
    try:
        return bool(json.loads(path.read_text()))
    except (OSError, ValueError):
        return False


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _any_entry(directory: Path) -> bool:
    return bool(_entries(directory))


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

