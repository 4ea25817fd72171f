"""Wiring of the runtime core: context, services, recovery and the exit monitor."""
from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from typing import Any

from pkg.aio import create_guarded_task
from pkg.cni import netns
from pkg.config import Config
from pkg.containerd.client import Client
from pkg.containerd.supervisor import Supervisor
from pkg.docker.events import docker_events
from pkg.events import EventBus
from pkg.logs.binary import write_launcher
from pkg.logs.service_client import LogService
from pkg.runtime.containers import ContainerService
from pkg.runtime.context import Images, PodNetwork, RuntimeContext
from pkg.runtime.exec import reap_stale_execs
from pkg.runtime.monitor import ExitMonitor
from pkg.runtime.recover import recover
from pkg.runtime.sandboxes import SandboxService
from pkg.runtime.shim_prestart import ShimPrestarter

log = logging.getLogger("narwhal")


@dataclass
class Runtime:
    ctx: RuntimeContext
    sandboxes: SandboxService
    containers: ContainerService
    monitor: ExitMonitor

    async def start(self) -> list[asyncio.Task[Any]]:
        """Recover the stores from containerd, then follow task exits (reconciling on each connect)."""
        await recover(self.ctx)
        prestarter = self.ctx.shim_prestarter
        if prestarter is not None:  # idle shims of pods removed (or never finished) while no narwhald ran
            ctx = self.ctx
            reaped = await prestarter.gc(lambda g: g in ctx.sandboxes.ids() or ctx.shim_groups.has_members(g))
            if reaped:
                log.warning("reaped %d pre-started shims of pods that are gone", reaped)
        reaped = await reap_stale_execs(self.ctx.client, self.ctx.exec_dir)
        if reaped:
            log.warning("reaped %d exec processes left by a previous narwhald", reaped)
        tasks = [
            create_guarded_task(self.monitor.run, "exit-monitor", restart_delay=1.0),
            create_guarded_task(self.monitor.reconcile_loop, "reconcile", restart_delay=5.0),
        ]
        await asyncio.wait_for(self.monitor.connected.wait(), 30)
        return tasks

    async def sandbox_ids(self) -> set[str]:
        """Every sandbox the runtime knows, including those still being created (for network GC)."""
        return self.ctx.sandboxes.ids() | self.sandboxes.creating


def build_runtime(cfg: Config, client: Client, images: Images, network: PodNetwork, domain: str = "",
                  bus: EventBus | None = None, log_service: LogService | None = None,
                  containerd: Supervisor | None = None) -> Runtime:
    """One runtime domain: CRI's (``domain=""``) or Docker's (own containerd namespace, dirs, cgroup parent).
    Both domains publish on the daemon's one event bus, tagged with the domain, and share the instance's
    log service (``log-service: true``)."""
    ctx = RuntimeContext(cfg=cfg, client=client, network=network, netns_create=netns.create,
                         netns_remove=netns.remove, images=images, logger=write_launcher(cfg.state / "bin"),
                         log_service=log_service, domain=domain, events=(bus or EventBus()).domain(domain))
    if containerd is not None and not domain:  # the CRI domain on the containerd narwhald owns
        ctx.shim_prestarter = ShimPrestarter(
            ctx.state / "shims", str(cfg.containerd_socket), cfg.containerd_namespace,
            shutil.which(containerd.binary) or containerd.binary, lambda: containerd.pid)
    docker_events(ctx.events)  # Docker's container events from the core's facts (inert in CRI's but for shown pods)
    sandboxes = SandboxService(ctx)
    containers = ContainerService(ctx)
    sandboxes.containers = containers
    return Runtime(ctx, sandboxes, containers, ExitMonitor(containers, sandboxes))
