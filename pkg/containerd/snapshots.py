"""containerd snapshots: prepare a container's writable layer, mounts, usage, removal."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pkg import errors
from pkg.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pkg.containerd.client import Client
from pkg.containerd.errors import translate

DEFAULT_SNAPSHOTTER = "overlayfs"


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    options: list[str] = field(default_factory=list)


def _mounts(mounts: list[object]) -> list[Mount]:
    return [Mount(m.type, m.source, list(m.options)) for m in mounts]  # type: ignore[attr-defined]


GC_ROOT_LABEL = "containerd.io/gc.root"


def gc_root() -> dict[str, str]:
    """The label that keeps a snapshot from containerd's garbage collector while no container record or lease
    references it (containerd's metadata GC takes any labelled ``containerd.io/gc.root`` as a root)."""
    return {GC_ROOT_LABEL: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


async def prepare(
    client: Client, key: str, parent: str, labels: dict[str, str] | None = None,
    snapshotter: str = DEFAULT_SNAPSHOTTER,
) -> list[Mount]:
    request = pb.PrepareSnapshotRequest(snapshotter=snapshotter, key=key, parent=parent, labels=labels or {})
    with translate(f"prepare snapshot {key}"):
        resp = await client.snapshots.Prepare(request, timeout=60)
    return _mounts(list(resp.mounts))


async def view(client: Client, key: str, parent: str, snapshotter: str = DEFAULT_SNAPSHOTTER, *,
               metadata: Sequence[tuple[str, str]] = (), what: str = "") -> list[Mount]:
    """A read-only view of ``parent`` under ``key`` (``metadata``: e.g. the lease that holds it)."""
    request = pb.ViewSnapshotRequest(snapshotter=snapshotter, key=key, parent=parent)
    with translate(what or f"view of snapshot {parent}"):
        resp = await client.snapshots.View(request, metadata=metadata, timeout=60)
    return _mounts(list(resp.mounts))


async def mounts(client: Client, key: str, snapshotter: str = DEFAULT_SNAPSHOTTER) -> list[Mount]:
    with translate(f"mounts of snapshot {key}"):
        resp = await client.snapshots.Mounts(pb.MountsRequest(snapshotter=snapshotter, key=key), timeout=30)
    return _mounts(list(resp.mounts))


async def remove(client: Client, key: str, snapshotter: str = DEFAULT_SNAPSHOTTER) -> None:
    """Idempotent removal."""
    try:
        with translate(f"remove snapshot {key}"):
            await client.snapshots.Remove(pb.RemoveSnapshotRequest(snapshotter=snapshotter, key=key), timeout=60)
    except errors.NotFound:
        pass


async def usage(client: Client, key: str, snapshotter: str = DEFAULT_SNAPSHOTTER) -> tuple[int, int]:
    """(bytes, inodes) used by the snapshot's own layer."""
    with translate(f"usage of snapshot {key}"):
        resp = await client.snapshots.Usage(pb.UsageRequest(snapshotter=snapshotter, key=key), timeout=60)
    return int(resp.size), int(resp.inodes)


async def keys(client: Client, snapshotter: str = DEFAULT_SNAPSHOTTER) -> list[tuple[str, int]]:
    """(key, kind) of every snapshot; kind 1=view 2=active 3=committed."""
    result: list[tuple[str, int]] = []
    with translate("list snapshots"):
        async for resp in client.snapshots.List(pb.ListSnapshotsRequest(snapshotter=snapshotter), timeout=60):
            result.extend((info.name, int(info.kind)) for info in resp.info)
    return result
