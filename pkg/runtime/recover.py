"""Rebuild the stores from containerd after a (re)start — containerd is the truth.

Assumptions, as containerd's CRI ``restart.go`` documents its own:
- every sandbox and container has a containerd record labelled with its kind,
  carrying its metadata; the record is written before any other resource;
- a record without a status checkpoint is a creation that never finished
  (narwhald died mid-create): all its resources are released;
- a container whose sandbox is gone was caught mid-removal: it is released;
- running containers are reconciled with their tasks by the exit monitor
  as soon as it subscribes (exits that happened meanwhile become EXITED);
- files, pins and snapshots named by IDs that no record claims are leftovers
  of crashes and are removed.
Each item gets its own timeout so one wedged object cannot block start-up.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path

from pkg import errors
from pkg.aio import rmtree
from pkg.containerd import containers as ctr_containers
from pkg.containerd import snapshots as ctr_snapshots
from pkg.containerd import tasks as ctr_tasks
from pkg.model.codec import from_dict
from pkg.model.container import ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxMetadata, SandboxStatus
from pkg.model.state import ContainerState, SandboxState, transition
from pkg.mount import mounts_under, umount
from pkg.runtime import checkpoint, container_release, container_spec
from pkg.runtime import containers as containers_mod
from pkg.runtime import sandboxes as sandboxes_mod
from pkg.runtime.context import RuntimeContext

log = logging.getLogger(__name__)

ITEM_TIMEOUT = 10.0
_ID = re.compile(r"^[0-9a-f]{64}\Z")


async def recover(ctx: RuntimeContext) -> None:
    sandbox_records = await ctr_containers.list_kind(ctx.client, sandboxes_mod.KIND)
    container_records = await ctr_containers.list_kind(ctx.client, containers_mod.KIND)
    tasks = await ctr_tasks.list_all(ctx.client)
    for record in sandbox_records:
        await _bounded(f"sandbox {record.id[:12]}", _recover_sandbox(ctx, record, tasks))
    for record in container_records:
        await _bounded(f"container {record.id[:12]}", _recover_container(ctx, record, tasks))
    await _bounded("leftover files", _remove_leftovers(ctx), timeout=60)
    log.info("recovered %d sandboxes and %d containers", len(ctx.sandboxes), len(ctx.containers))


async def _bounded(what: str, work: object, timeout: float = ITEM_TIMEOUT) -> None:
    try:
        await asyncio.wait_for(work, timeout)  # type: ignore[arg-type]
    except (TimeoutError, errors.NarwhalError, OSError, ValueError, TypeError) as exc:
        log.error("recovering %s failed: %r", what, exc)


async def _recover_sandbox(ctx: RuntimeContext, record: ctr_containers.Record,
                           tasks: dict[str, ctr_tasks.TaskInfo]) -> None:
    metadata = from_dict(SandboxMetadata, record.metadata)
    status = checkpoint.read(ctx.sandbox_root(metadata.id), SandboxStatus)
    if status is None:
        log.warning("sandbox %s was never fully created; releasing it", metadata.id[:12])
        await sandboxes_mod.release_resources(ctx, metadata)
        return
    if status.state == SandboxState.READY:
        task = tasks.get(metadata.id)
        infra_gone = metadata.infra and (task is None or task.status != ctr_tasks.TaskStatus.RUNNING)
        netns_gone = bool(metadata.netns_path) and not Path(metadata.netns_path).exists()
        if infra_gone or netns_gone:
            status = transition(status, SandboxState.NOTREADY, f"recover sandbox {metadata.id}", infra_pid=0,
                                network_ready=False, message="")
            checkpoint.write(ctx.sandbox_root(metadata.id), status)
    ctx.sandboxes.add(metadata.id, metadata, status)
    ctx.shim_groups.adopt(metadata.id, record.spec)
    ctx.sandboxes.names.reserve(metadata.config.unique_name, metadata.id)


async def _recover_container(ctx: RuntimeContext, record: ctr_containers.Record,
                             tasks: dict[str, ctr_tasks.TaskInfo]) -> None:
    metadata = from_dict(ContainerMetadata, record.metadata)
    if metadata.user is None:
        metadata = dataclasses.replace(metadata, user=container_spec.process_user(record.spec))
    status = checkpoint.read(ctx.container_root(metadata.id), ContainerStatus)
    if status is None or ctx.sandboxes.find(metadata.sandbox_id) is None:
        log.warning("container %s was never fully created or its sandbox is gone; releasing it", metadata.id[:12])
        await container_release.release_resources(ctx, metadata)
        return
    if status.state == ContainerState.CREATED and metadata.id in tasks:
        # Died between task start and the RUNNING checkpoint: the monitor reconciles it.
        status = transition(status, ContainerState.UNKNOWN, f"recover container {metadata.id}",
                            pid=tasks[metadata.id].pid)
    ctx.containers.add(metadata.id, metadata, status)
    ctx.shim_groups.adopt(metadata.sandbox_id, record.spec)
    ctx.containers.names.reserve(metadata.unique_name, metadata.id)


async def _remove_leftovers(ctx: RuntimeContext) -> None:
    """Dirs, namespace pins and snapshots named by IDs nothing claims (crashes before the record)."""
    known = ctx.sandboxes.ids() | ctx.containers.ids()
    for base in (ctx.root / "sandboxes", ctx.state / "sandboxes",
                 ctx.root / "containers", ctx.state / "containers"):
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if _ID.match(entry.name) and entry.name not in known:
                log.warning("removing leftover %s", entry)
                for mount_point in sorted(mounts_under(entry), reverse=True):
                    umount(mount_point)
                await rmtree(entry)
    for key, kind in await ctr_snapshots.keys(ctx.client):
        if kind == 2 and _ID.match(key) and key not in known:  # active snapshot of no container
            log.warning("removing leftover snapshot %s", key[:12])
            await ctr_snapshots.remove(ctx.client, key)
