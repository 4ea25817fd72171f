"""Rebuilding the engine after narwhald starts, once the Docker domain's runtime has recovered.

Assumptions: containerd is the truth for what exists; a record is written only after its sandbox and
container exist, and marked REMOVING before a removal starts.  So a record without its core container
is dropped, a REMOVING record's removal is finished, a directory without a record and every Docker-domain
sandbox or container no record covers are the leftovers of a create that was cut short, and are removed.
Running containers are followed again; stopped ones come back when their restart policy says so
(Docker: "always" even after a manual stop, "unless-stopped" unless stopped by hand), and AutoRemove
containers that exited meanwhile are removed.  Each container gets a bounded time.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pkg import errors
from pkg.docker.engine import translate
from pkg.docker.engine.model import EngineRecord, Phase, RestartPolicyName
from pkg.model.state import ContainerState

if TYPE_CHECKING:
    from pkg.docker.engine.engine import Engine

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT = 60.0  # per container


async def recover(engine: Engine) -> None:
    """Rebuild from the records after the runtime recovered: finish cut-short creates and removes,
    follow running containers, restart those their policy wants running, auto-remove exited ones."""
    records, broken = await engine.store.load_all()
    for container_id in broken:
        log.warning("docker container %s: create was cut short; removing its pieces", container_id[:12])
        await _release_orphan(engine, container_id)
    for record in records:
        engine.registry.add(record)
    for record in records:
        try:
            await asyncio.wait_for(_recover(engine, record), RECOVERY_TIMEOUT)
        except (errors.NarwhalError, TimeoutError) as exc:
            log.error("recovering docker container %s: %r", record.id[:12], exc)
    await _remove_orphan_sandboxes(engine)


async def _recover(engine: Engine, record: EngineRecord) -> None:
    container_id = record.id
    found = engine.ctx.containers.find(container_id)
    if record.state.phase == Phase.REMOVING or found is None:
        if found is None:
            log.warning("docker container %s lost its core container; removing it", container_id[:12])
        async with engine.registry.lock(container_id):
            await engine.release(record, record.state.remove_volumes)
        return
    _, status = found
    if status.state in (ContainerState.RUNNING, ContainerState.UNKNOWN):
        engine.lifecycle.watch(container_id)
        engine.lifecycle.health.start(container_id, record.config.healthcheck, resume=record.state.health)
        return
    if not record.state.started_once:
        return
    if record.host_config.auto_remove:
        await engine.remove_now(container_id)
        return
    policy = record.host_config.restart_policy.name
    if policy == RestartPolicyName.ALWAYS and record.state.manually_stopped:
        # Docker: "always" brings even a manually stopped container back when the daemon restarts.
        record = await engine.registry.update_state(container_id, manually_stopped=False)
    if record.state.restarting or engine.lifecycle.should_restart(record, status.exit_code):
        await engine.registry.update_state(container_id, restarting=True)
        engine.lifecycle.restart_soon(container_id)


async def _release_orphan(engine: Engine, container_id: str) -> None:
    found = engine.ctx.containers.find(container_id)
    sandbox_id = found[0].sandbox_id if found else ""
    await engine.containers.remove(container_id)
    await engine.remove_sandbox_if_unused(sandbox_id, exclude=container_id)
    if engine.volumes is not None:
        await engine.volumes.release(container_id, remove_anonymous=True)
    await engine.store.delete(container_id)


async def _remove_orphan_sandboxes(engine: Engine) -> None:
    """Engine sandboxes and containers no record covers: pieces of creates cut short before the record."""
    known = {r.id for r in engine.registry}
    for container_id, _, _ in engine.ctx.containers:
        if container_id not in known:
            log.warning("removing core container %s: no docker container owns it", container_id[:12])
            await engine.containers.remove(container_id)
            if engine.volumes is not None:  # the create may have got as far as taking its volumes
                await engine.volumes.release(container_id, remove_anonymous=True)
    sandboxes = {r.sandbox_id for r in engine.registry}
    for sandbox_id, metadata, _ in engine.ctx.sandboxes:
        if sandbox_id not in sandboxes and translate.ENGINE_LABEL in metadata.config.labels:
            log.warning("removing sandbox %s: no docker container owns it", sandbox_id[:12])
            await engine.sandboxes.remove(sandbox_id)
