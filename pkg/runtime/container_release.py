"""What a container leaves behind, released: its task, cgroup, containerd record, snapshot and files.

Separate from pkg.runtime.containers because more than a removal needs it: recovery releases what a crash left
half made (pkg.runtime.recover), and a sandbox's infra container leaves a cgroup too (pkg.runtime.infra).  Every
step is idempotent, so a release interrupted by a crash is simply run again.
"""
from __future__ import annotations

import logging

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.aio import rmtree
from pkg.cgroups.cleanup import remove_cgroup
from pkg.containerd import containers as ctr_containers
from pkg.containerd import snapshots as ctr_snapshots
from pkg.containerd import tasks as ctr_tasks
from pkg.model.container import ContainerMetadata
from pkg.runtime import container_io
from pkg.runtime.context import RuntimeContext

log = logging.getLogger(__name__)


async def release_resources(ctx: RuntimeContext, metadata: ContainerMetadata | None, container_id: str = "",
                            task_gone: bool = False) -> None:
    """Task, record, snapshot and files of a container; every step idempotent (used by recovery too).
    ``task_gone``: the caller knows there is no task (skips two round trips)."""
    cid = metadata.id if metadata else container_id
    if not task_gone:
        await ctr_tasks.kill(ctx.client, cid)
        await ctr_tasks.delete(ctx.client, cid)
    if metadata is not None and metadata.cgroups_path:
        await remove_cgroup_quietly(metadata.cgroups_path)
    await ctr_containers.delete(ctx.client, cid)
    await ctr_snapshots.remove(ctx.client, metadata.snapshot_key if metadata else cid)
    # The logger has exited with the task: its final log totals move into the metrics before the files go.
    metrics_mod.current().retire_logs(metrics_mod.frontend_of(ctx.domain), container_io.log_stats_file(ctx, cid))
    await rmtree(ctx.container_root(cid), ctx.container_state(cid))


async def remove_cgroup_quietly(cgroups_path: str) -> None:
    """runc deletes a task's cgroup, but gives up when the last processes are still being reaped
    (seen under load): remove what is left.  Still busy: logged, and GC-able later."""
    try:
        await remove_cgroup(cgroups_path)
    except errors.NarwhalError as exc:
        log.warning("cgroup %s: %s", cgroups_path, exc.message)
