"""ContainerStatus and PodSandboxStatus with ``verbose``: the ``info`` containerd's CRI reports, for the
tools that read it (crictl inspect/inspectp print it; scripts read ``.info.pid`` or ``.info.runtimeSpec``).

containerd 1.6 answers one key, ``info``, holding a JSON object: for a container (``toCRIContainerInfo``)
``sandboxID``, ``pid``, ``removing``, ``snapshotKey``, ``snapshotter``, ``runtimeType``,
``runtimeOptions``, ``config``, ``runtimeSpec``; for a sandbox (``toCRISandboxInfo``) ``pid``,
``processStatus``, ``netNamespaceClosed``, ``image``, ``snapshotKey``, ``snapshotter``,
``runtimeHandler``, ``runtimeType``, ``runtimeOptions``, ``config``, ``runtimeSpec``. ``config`` here is
Narwhal's own model of the CRI config (snake_case fields like CRI's, not the protobuf itself). A sandbox
without an infra task (its PID namespace is not shared) has no pid and no image; its spec is the record's
placeholder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pkg.containerd import containers as ctr_containers
from pkg.model.codec import to_dict
from pkg.model.container import ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxMetadata, SandboxStatus
from pkg.model.state import SandboxState
from pkg.runtime import infra
from pkg.runtime.context import RuntimeContext


async def container_info(ctx: RuntimeContext, metadata: ContainerMetadata, status: ContainerStatus) -> dict[str, Any]:
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


async def sandbox_info(ctx: RuntimeContext, metadata: SandboxMetadata, status: SandboxStatus) -> dict[str, Any]:
    record = await ctr_containers.get(ctx.client, metadata.id)
    ready = status.state == SandboxState.READY
    return {
        "pid": status.infra_pid,
        "processStatus": ("running" if ready else "stopped") if metadata.infra else "",
        "netNamespaceClosed": bool(metadata.netns_path) and not Path(metadata.netns_path).exists(),
        "netNamespacePath": metadata.netns_path,  # Narwhal's own: where the pod's pinned netns is
        "image": infra.IMAGE_NAME if metadata.infra else "",
        "snapshotKey": record.snapshot_key,
        "snapshotter": record.snapshotter,
        "runtimeHandler": metadata.runtime_handler,
        "runtimeType": record.runtime,
        "runtimeOptions": record.runtime_options,
        "config": to_dict(metadata.config),
        "runtimeSpec": record.spec,
    }
