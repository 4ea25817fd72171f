"""docker commit: a container's changes (its active snapshot against the image's top snapshot) as a new image.

containerd's diff service compares a read-only view of the parent chain with
the container's snapshot and writes the difference as a gzip layer into the
content store (labelled with its uncompressed digest).  containerd 1.6's
differ writes only OCI layer types, so the diff is asked for as an OCI gzip
layer and, when the parent's manifest is Docker schema 2, described with
Docker's gzip layer type (the bytes are the same; a manifest keeps one family
of media types, as moby's and containerd's commits do).  The new config is the
parent's with the given runtime config, one more diff ID and one more history
step; the manifest is the parent's layers plus the new one.  The layer is
then unpacked like a pulled one, so containers can start from the new image
right away.  Everything is written under one lease: a failed commit leaves
nothing behind.
"""
from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from typing import Any

import grpc

from pkg import errors
from pkg.aio import run_to_completion
from pkg.containerd.api.services.diff.v1 import diff_pb2
from pkg.containerd.api.services.snapshots.v1 import snapshots_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import from_grpc, translate
from pkg.containerd.leases import lease
from pkg.images import media
from pkg.images.commit import commit_image
from pkg.images.content import ContentStore, lease_md
from pkg.images.model import Descriptor, Image, ImageConfig
from pkg.images.store import ImageStore
from pkg.images.unpack import Unpacker, chain_ids

DIFF_TIMEOUT = 600.0


@dataclass(frozen=True)
class CommitRequest:
    snapshot_key: str  # the container's active snapshot (the core container ID)
    parent: Image  # the image the container was created from
    config: ImageConfig  # the new image's runtime config (the container's, with any changes applied)
    author: str = ""
    comment: str = ""
    created_by: str = ""  # the history step's text (Docker leaves it empty for commits)
    names: tuple[str, ...] = ()  # normalised references; none: the image is kept by its ID


@dataclass(frozen=True)
class Base:
    """What a new image builds on: the parent's config document, layers and diff IDs (all empty: none)."""

    doc: dict[str, Any]
    layers: list[Descriptor]
    diff_ids: list[str]
    docker_media: bool = False


def _config_json(base: dict[str, Any], cfg: ImageConfig) -> dict[str, Any]:
    """The parent's config object with the new runtime fields (fields we do not model are kept)."""
    out = dict(base)
    for key, value in (("Cmd", cfg.cmd), ("Entrypoint", cfg.entrypoint), ("Env", cfg.env)):
        if value:
            out[key] = list(value)
        else:
            out.pop(key, None)
    for key, text in (("WorkingDir", cfg.working_dir), ("User", cfg.user), ("StopSignal", cfg.stop_signal)):
        if text:
            out[key] = text
        else:
            out.pop(key, None)
    for key, items in (("ExposedPorts", cfg.exposed_ports), ("Volumes", cfg.volumes)):
        if items:
            out[key] = {item: {} for item in items}
        else:
            out.pop(key, None)
    if cfg.labels:
        out["Labels"] = dict(cfg.labels)
    else:
        out.pop("Labels", None)
    return out


class SnapshotCommitter:
    def __init__(self, client: Client, content: ContentStore, store: ImageStore, unpacker: Unpacker) -> None:
        self._client = client
        self._content = content
        self._store = store
        self._unpacker = unpacker

    async def commit(self, req: CommitRequest) -> str:
        """Make the image; returns its ID (config digest)."""
        parent = req.parent
        resolved = await self._store.resolve_target(parent.target, parent.id)
        docker_media = resolved.manifest.media_type == media.DOCKER_MANIFEST
        base_doc = json.loads(await self._content.read(resolved.parsed.config.digest, media.MAX_MANIFEST))
        if not isinstance(base_doc, dict):
            raise errors.InvalidArgument(f"image {parent.id}: config is not a JSON object")
        base = Base(base_doc, list(resolved.parsed.layers), list(parent.diff_ids), docker_media)
        async with lease(self._client, "commit") as lease_id:
            layer, diff_id = await self._diff(req.snapshot_key, parent.chain_id, media.OCI_LAYER_GZIP, lease_id)
            if docker_media:
                layer = Descriptor(media.docker_layer_type(layer.media_type), layer.digest, layer.size)
            return await self.write_image(base, layer, diff_id, lease_id, config=req.config, author=req.author,
                                          comment=req.comment, created_by=req.created_by, names=req.names,
                                          parent_id=parent.id)

    async def write_image(self, base: Base, layer: Descriptor, diff_id: str, lease_id: str, *, config: ImageConfig,
                          author: str = "", comment: str = "", created_by: str = "",
                          names: tuple[str, ...] = (), parent_id: str = "") -> str:
        """``base`` plus one layer (already in the content store, under ``lease_id``) as a named image;
        ``parent_id`` is recorded as the config's ``parent``, as moby's commit does (inspect's Parent)."""
        diff_ids = [*base.diff_ids, diff_id]
        chains = chain_ids(diff_ids)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        doc = dict(base.doc)
        doc.update(created=now, config=_config_json(dict(base.doc.get("config") or {}), config),
                   rootfs={"type": "layers", "diff_ids": diff_ids})
        history = list(base.doc.get("history") or [])
        step: dict[str, Any] = {"created": now, "created_by": created_by}
        if comment:
            step["comment"] = comment
        history.append(step)
        doc["history"] = history
        for key, value in (("author", author), ("comment", comment)):
            if value:
                doc[key] = value
            else:
                doc.pop(key, None)
        doc.pop("container", None)
        doc.pop("container_config", None)
        if parent_id:
            doc["parent"] = parent_id
        else:
            doc.pop("parent", None)
        config_body = json.dumps(doc, separators=(",", ":")).encode()
        config_desc = Descriptor(media.DOCKER_CONFIG if base.docker_media else media.OCI_CONFIG,
                                 media.sha256(config_body), len(config_body))
        await self._content.write_bytes(f"narwhal-commit-{config_desc.digest}", config_desc.digest, config_body,
                                        lease=lease_id)
        manifest_doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media.DOCKER_MANIFEST if base.docker_media else media.OCI_MANIFEST,
            "config": media.descriptor_json(config_desc),
            "layers": [media.descriptor_json(d) for d in (*base.layers, layer)],
        }
        manifest_body = json.dumps(manifest_doc, separators=(",", ":")).encode()
        manifest_desc = Descriptor(manifest_doc["mediaType"], media.sha256(manifest_body), len(manifest_body))
        manifest = media.parse_manifest(manifest_body, manifest_desc.media_type)
        for held in base.layers:  # the parent's blobs, for the manifest's GC references
            await self._content.add_to_lease(held.digest, lease_id)
        await self._unpacker.apply_layer(layer, diff_id, chains[-2] if len(chains) > 1 else "", chains[-1],
                                         lease_id)
        await commit_image(self._content, self._store, self._unpacker.snapshotter, target=manifest_desc,
                           target_body=manifest_body, manifest_desc=manifest_desc, manifest_body=manifest_body,
                           manifest=manifest, top_chain=chains[-1], names=list(names) or [config_desc.digest],
                           lease_id=lease_id)
        return config_desc.digest

    async def _diff(self, key: str, parent_chain: str, media_type: str, lease_id: str) -> tuple[Descriptor, str]:
        """The container snapshot's changes over ``parent_chain`` as a layer blob: (descriptor, diff ID)."""
        snapshotter = self._unpacker.snapshotter
        md = lease_md(lease_id)
        try:
            right = (await self._client.snapshots.Mounts(
                snapshots_pb2.MountsRequest(snapshotter=snapshotter, key=key), timeout=30)).mounts
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.NotFound(f"container snapshot {key} not found") from None
            raise from_grpc(err, f"mounts of snapshot {key}") from err
        view = f"commit-view-{secrets.token_hex(8)}"
        left = []
        if parent_chain:
            with translate(f"view snapshot {parent_chain}"):
                left = list((await self._client.snapshots.View(
                    snapshots_pb2.ViewSnapshotRequest(snapshotter=snapshotter, key=view, parent=parent_chain),
                    metadata=md, timeout=60)).mounts)
        try:
            with translate(f"diff of snapshot {key}"):
                resp = await self._client.diff.Diff(
                    diff_pb2.DiffRequest(left=left, right=list(right), media_type=media_type,
                                         ref=f"narwhal-commit-{secrets.token_hex(8)}"),
                    metadata=md, timeout=DIFF_TIMEOUT)
        finally:
            if parent_chain:
                try:
                    await run_to_completion(self._client.snapshots.Remove(
                        snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=view), timeout=60))
                except grpc.aio.AioRpcError:
                    pass  # held by the lease: collected with it
        blob = resp.diff
        info = await self._content.info(blob.digest)
        diff_id = info.labels.get(media.LABEL_UNCOMPRESSED, "") if info is not None else ""
        if not diff_id:
            raise errors.Internal(f"diff {blob.digest}: containerd did not record its uncompressed digest")
        return Descriptor(blob.media_type or media_type, blob.digest, blob.size), diff_id
