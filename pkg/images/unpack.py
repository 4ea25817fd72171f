"""Unpack layers into committed snapshots named by their chain IDs (diff service Apply).

Each layer is applied on an active snapshot prepared from its parent chain
(keyed ``extract-<random> <chain_id>``, as containerd's own unpacker names them),
its uncompressed digest checked against the config's diff ID, and committed
as ``chain_id``.  Layers already committed (shared with another image) are
skipped: the Prepare names its target, and containerd refuses it when the
target exists, so a cold layer costs no separate Stat.  Every call carries
the pull's lease, so nothing is collected before the image record and the
config's ``containerd.io/gc.ref.snapshot.<name>`` label point at the top
snapshot.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pkg import errors
from pkg.aio import run_to_completion
from pkg.containerd.api.services.diff.v1 import diff_pb2
from pkg.containerd.api.services.leases.v1 import leases_pb2
from pkg.containerd.api.services.snapshots.v1 import snapshots_pb2
from pkg.containerd.api.types import descriptor_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import translate
from pkg.images.content import lease_md
from pkg.images.model import Descriptor

if TYPE_CHECKING:
    from pkg.images.stream_unpack import Extracted

log = logging.getLogger(__name__)

APPLY_TIMEOUT = 600.0
UNPACK_PREFIX = "extract-"  # an active snapshot a layer is (or was, if cut short) being unpacked into
LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n])."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class Prepared:
    """An active ``extract-`` snapshot waiting for its layer: its key, the chain ID it commits as, its mounts."""

    key: str
    chain_id: str
    mounts: list[Any]


class Unpacker:
    def __init__(self, client: Client, snapshotter: str) -> None:
        self._client = client
        self.snapshotter = snapshotter

    async def committed(self, key: str) -> bool:
        try:
            with translate(f"stat snapshot {key}"):
                resp = await self._client.snapshots.Stat(
                    snapshots_pb2.StatSnapshotRequest(snapshotter=self.snapshotter, key=key), timeout=30)
        except errors.NotFound:
            return False
        return bool(resp.info.kind == snapshots_pb2.COMMITTED)

    async def apply_layer(self, layer: Descriptor, diff_id: str, parent: str, chain_id: str,
                          lease: str | None) -> None:
        """Apply one layer on top of ``parent`` and commit it as ``chain_id`` (no-op when it exists)."""
        prepared = await self.prepare(layer, parent, chain_id, lease)
        if prepared is not None:
            await self.apply_prepared(prepared, layer, diff_id, lease)

    async def prepare(self, layer: Descriptor, parent: str, chain_id: str, lease: str | None) -> Prepared | None:
        """The active snapshot ``layer`` will be unpacked into (parent committed already); None when
        ``chain_id`` is committed already, then held by ``lease``.  A pull prepares it while the layer's
        blob may still be coming in, as containerd's unpacker does."""
        key = f"{UNPACK_PREFIX}{secrets.token_hex(8)} {chain_id}"
        try:
            with translate(f"prepare snapshot for layer {layer.digest}"):
                prepared = await self._client.snapshots.Prepare(
                    snapshots_pb2.PrepareSnapshotRequest(
                        snapshotter=self.snapshotter, key=key, parent=parent, labels={LABEL_SNAPSHOT_REF: chain_id}),
                    metadata=lease_md(lease), timeout=60)
        except errors.AlreadyExists:
            # With the snapshot.ref label, containerd answers AlreadyExists when the target is committed already
            # (another image's layer, or a concurrent pull of a shared layer won the race): that is our result.
            if await self.committed(chain_id):
                await self._hold(chain_id, lease)
                return None
            raise
        return Prepared(key, chain_id, list(prepared.mounts))

    async def apply_prepared(self, prepared: Prepared, layer: Descriptor, diff_id: str, lease: str | None,
                             extracted: Extracted | None = None) -> None:
        """Unpack the layer (its blob in the content store now) and commit it; on any failure the active
        snapshot goes.  ``extracted``: the layer applied already while it streamed in (stream-unpack), moved
        into the snapshot when its diff ID is the config's, else (or when the move fails) Diff.Apply."""
        md = lease_md(lease)
        key, chain_id = prepared.key, prepared.chain_id
        try:
            if extracted is None or not await self._install(prepared, extracted, diff_id):
                desc = descriptor_pb2.Descriptor(media_type=layer.media_type, digest=layer.digest, size=layer.size)
                with translate(f"apply layer {layer.digest}"):
                    applied = await self._client.diff.Apply(
                        diff_pb2.ApplyRequest(diff=desc, mounts=prepared.mounts), metadata=md,
                        timeout=APPLY_TIMEOUT)
                if applied.applied.digest != diff_id:
                    raise errors.InvalidArgument(
                        f"layer {layer.digest}: uncompressed digest {applied.applied.digest} does not match the "
                        f"image config's diff ID {diff_id}")
            try:
                with translate(f"commit snapshot {chain_id}"):
                    await self._client.snapshots.Commit(
                        snapshots_pb2.CommitSnapshotRequest(snapshotter=self.snapshotter, name=chain_id, key=key),
                        metadata=md, timeout=60)
            except errors.AlreadyExists:  # a concurrent unpack won the race
                await self.remove(key)
        except BaseException:
            await self.remove(key)
            raise

    async def _install(self, prepared: Prepared, extracted: Extracted, diff_id: str) -> bool:
        """Move a layer extracted while it streamed in into the prepared snapshot; False: Diff.Apply must do it
        (the upper dir emptied of whatever a failed move left)."""
        from pkg.images import stream_unpack
        from pkg.images.layer_apply import Unsupported
        if extracted.diff_id != diff_id:
            log.info("layer %s extracted as %s, not the diff ID %s: left to Diff.Apply",
                     prepared.chain_id, extracted.diff_id, diff_id)
            return False
        try:
            upper, lowers = stream_unpack.snapshot_dirs(prepared.mounts)
        except Unsupported as exc:
            log.info("snapshot %s: %s: its layer is left to Diff.Apply", prepared.key, exc)
            return False
        try:
            await asyncio.to_thread(stream_unpack.install, extracted, upper, lowers)
        except Exception as exc:
            log.info("snapshot %s: the extracted layer could not be moved in (%s): Diff.Apply", prepared.key, exc)
            await asyncio.to_thread(stream_unpack.empty, upper)
            return False
        return True

    async def _hold(self, chain_id: str, lease: str | None) -> None:
        """Add a committed snapshot to this operation's lease, whoever else referenced it so far."""
        if not lease:
            return
        with translate(f"lease snapshot {chain_id}"):
            await self._client.leases.AddResource(leases_pb2.AddResourceRequest(
                id=lease, resource=leases_pb2.Resource(id=chain_id, type=f"snapshots/{self.snapshotter}")),
                timeout=30)

    async def remove(self, key: str) -> None:
        """Remove a snapshot (gone already: fine); a failure is logged, not raised (cleanup paths)."""
        try:
            with translate(f"remove snapshot {key}"):
                await run_to_completion(self._client.snapshots.Remove(
                    snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key), timeout=60))
        except errors.NotFound:
            pass
        except errors.NarwhalError as exc:
            log.warning("%s", exc.message)
