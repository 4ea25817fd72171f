"""ContainerStatus(verbose=True)'s ``info``: what containerd's CRI reports there, for tools that read it.

containerd 1.6 (``toCRIContainerInfo``) answers one key, ``info``, holding a JSON object with
``sandboxID``, ``pid``, ``removing``, ``snapshotKey``, ``snapshotter``, ``runtimeType``,
``runtimeOptions``, ``config`` and ``runtimeSpec`` (the OCI spec runc runs). crictl inspect prints it and
scripts read ``.info.pid`` and ``.info.runtimeSpec`` from it. ``config`` here is Narwhal's own model of the
CRI ContainerConfig (snake_case fields like CRI's, not the protobuf itself).
"""
from __future__ import annotations

from typing import Any

from pkg.containerd import containers as ctr_containers
from pkg.model.codec import to_dict
from pkg.model.container import ContainerMetadata, ContainerStatus
from pkg.runtime.context import RuntimeContext


async def verbose_info(ctx: RuntimeContext, metadata: ContainerMetadata, status: ContainerStatus) -> dict[str, Any]:
    """The record's spec, snapshot and runtime come from containerd; a container removed meanwhile is NotFound."""
    record = await ctr_containers.get(ctx.client, metadata.id)
    return {
        "sandboxID": metadata.sandbox_id,
        "pid": status.pid,
        "removing": status.removing,
        "snapshotKey": record.snapshot_key,
        "snapshotter": record.snapshotter,
        "runtimeType": record.runtime,
        "runtimeOptions": record.runtime_options,
        "config": to_dict(metadata.config),
        "runtimeSpec": record.spec,
    }
