"""Removing a Docker container: marked REMOVING, then its core container, sandbox, volumes, record and log
released; and an AutoRemove container's network, released at its exit already.

Separate from pkg.docker.engine.engine because a removal is reached from several places (docker rm and prune
through the engine, AutoRemove from the lifecycle, recovery finishing what a crash interrupted, docker build's
RUN containers) and owns the one piece of state of its own: the network teardowns begun at an exit, which the
removal then waits for.
"""
from __future__ import annotations

import asyncio
import logging

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.docker.engine.lifecycle import Lifecycle
from pkg.docker.engine.model import EngineRecord
from pkg.docker.engine.registry import Registry
from pkg.docker.volumes.service import VolumeService
from pkg.model.state import ContainerState, DockerState
from pkg.runtime.containers import ContainerService
from pkg.runtime.sandboxes import SandboxService

log = logging.getLogger(__name__)


class Removal:
    """What ``Engine.remove_now`` and ``release`` do (docker rm's checks stay with the engine), and AutoRemove."""

    def __init__(self, registry: Registry, lifecycle: Lifecycle, sandboxes: SandboxService,
                 containers: ContainerService, volumes: VolumeService | None) -> None:
        self.registry = registry
        self.lifecycle = lifecycle
        self.sandboxes = sandboxes
        self.containers = containers
        self.volumes = volumes
        self.ctx = containers.ctx
        self._unwiring: dict[str, asyncio.Task[None]] = {}  # AutoRemove containers' network teardowns under way

    async def auto_remove(self, container_id: str) -> None:
        """AutoRemove (docker run --rm): the container goes with its anonymous volumes."""
        try:
            await self.remove_now(container_id, volumes=True)
        except errors.NotFound:
            pass

    async def remove_now(self, container_id: str, volumes: bool = False) -> None:
        """Marked REMOVING (a crash from here on leaves pieces recovery removes), then released."""
        async with self.registry.lock(container_id):
            record = self.registry.find(container_id)
            if record is None:
                return
            await self.lifecycle._resume_quietly(container_id)  # before REMOVING takes the place of paused
            await self.registry.transition(container_id, DockerState.REMOVING, remove_volumes=volumes)
            await self.release(record, volumes)
        log.info("docker container %s (%s) removed", container_id[:12], record.name)

    def exiting(self, container_id: str) -> None:
        """The core saw an exit: an AutoRemove container will not run again, so its own sandbox's network goes
        now (moby releases a container's network at its exit), side by side with the rest of the exit path and
        the removal, instead of after them; the removal waits for it (``release``)."""
        record = self.registry.find(container_id)
        if (record is None or not record.host_config.auto_remove or not record.owns_sandbox or not record.sandbox_id
                or container_id in self._unwiring or self._sandbox_shared(record.sandbox_id, container_id)):
            return
        sandbox_id = record.sandbox_id
        task = create_guarded_task(lambda: self.sandboxes.release_network(sandbox_id),
                                   f"engine-unwire-{container_id[:12]}")
        self._unwiring[container_id] = task
        task.add_done_callback(lambda t: self._unwiring.pop(container_id, None) if self._unwiring.get(
            container_id) is t else None)

    def _sandbox_shared(self, sandbox_id: str, container_id: str) -> bool:
        """Another container is in this sandbox (``--network container:<this>``)."""
        return any(r.sandbox_id == sandbox_id for r in self.registry if r.id != container_id) or any(
            m.sandbox_id == sandbox_id for cid, m, _ in self.ctx.containers if cid != container_id)

    async def release(self, record: EngineRecord, volumes: bool = False) -> None:
        """Core container and the sandbox once nothing uses it (side by side when only this stopped container
        does), then volumes, the record and log; idempotent."""
        container_id, sandbox_id = record.id, record.sandbox_id
        found = self.ctx.containers.find(container_id)
        exit_code = found[1].exit_code if found else 0
        unwiring = self._unwiring.pop(container_id, None)  # its network teardown, begun at the exit (exiting)
        stopped = found is not None and found[1].state in (ContainerState.CREATED, ContainerState.EXITED)
        if stopped and sandbox_id and record.owns_sandbox and not self._sandbox_shared(sandbox_id, container_id):
            # A stopped container and the sandbox only it uses go side by side (a sandbox's removal takes each
            # of its containers' locks, so it never overtakes what is left of the container's).
            outcomes = await asyncio.gather(self.containers.remove(container_id),
                                            self._remove_sandbox_after(unwiring, sandbox_id), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        else:
            await self.containers.remove(container_id)
            await self._remove_sandbox_after(unwiring, "")
            await self.remove_sandbox_if_unused(sandbox_id, exclude=container_id)
        if self.volumes is not None:
            await self.volumes.release(container_id, remove_anonymous=volumes)
        await self.registry.store.delete(container_id)
        self.registry.drop(container_id)
        self.lifecycle.removed(container_id, exit_code)

    async def _remove_sandbox_after(self, unwiring: asyncio.Task[None] | None, sandbox_id: str) -> None:
        """Once the network teardown begun at the exit (if any) is over, remove the sandbox (if named)."""
        if unwiring is not None:
            await asyncio.wait([unwiring])
        if sandbox_id:
            await self.sandboxes.remove(sandbox_id)

    async def remove_sandbox_if_unused(self, sandbox_id: str, exclude: str) -> None:
        if not sandbox_id:
            return
        in_use = any(m.sandbox_id == sandbox_id for _, m, _ in self.ctx.containers) or any(
            r.sandbox_id == sandbox_id for r in self.registry if r.id != exclude)
        if not in_use:
            await self.sandboxes.remove(sandbox_id)

    def close(self) -> list[asyncio.Task[None]]:
        """Shutting down: the network teardowns under way, handed back to cancel."""
        unwiring = list(self._unwiring.values())
        self._unwiring.clear()
        return unwiring
