"""What Docker's inspect and history show beyond ``Image``: the config's metadata, history and unpacked sizes
(and the verbose debug detail of CRI's ImageStatus).

Docker reports sizes of the unpacked layers (what the snapshots take on
disk), not of the compressed blobs, so sizes come from the snapshotter's
``Usage`` of each chain ID.  Committed snapshots never change, so their usage
is cached by chain ID.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc

from pkg import errors
from pkg.containerd.api.services.snapshots.v1 import snapshots_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import from_grpc
from pkg.images import media
from pkg.images.content import ContentStore
from pkg.images.model import Descriptor, Image
from pkg.images.store import ImageStore
from pkg.images.unpack import chain_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryEntry:
    """One step of an image's history (the config's ``history``), newest last."""

    created: str  # RFC 3339, "" when unknown
    created_by: str
    comment: str
    empty_layer: bool
    size: int  # unpacked size of the layer this step made; 0 for an empty layer


@dataclass(frozen=True)
class ImageDetail:
    image: Image
    author: str
    comment: str
    docker_version: str
    variant: str
    os_version: str
    container_config: dict[str, Any]  # the config's "config" object, verbatim (Docker's Config)
    history: list[HistoryEntry]
    manifest: Descriptor  # the platform manifest the image resolves to
    layers: list[Descriptor]
    unpacked_size: int
    labels: dict[str, str] = field(default_factory=dict)
    parent: str = ""  # the image a commit was made on (the config's "parent"), "" otherwise


class Describer:
    def __init__(self, client: Client, content: ContentStore, store: ImageStore, snapshotter: str) -> None:
        self._client = client
        self._content = content
        self._store = store
        self._snapshotter = snapshotter
        self._usage: dict[str, int] = {}

    async def snapshot_size(self, chain_id: str) -> int | None:
        """Bytes the committed snapshot ``chain_id`` adds on disk; None when it is not unpacked."""
        cached = self._usage.get(chain_id)
        if cached is not None:
            return cached
        try:
            resp = await self._client.snapshots.Usage(
                snapshots_pb2.UsageRequest(snapshotter=self._snapshotter, key=chain_id), timeout=60)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise from_grpc(err, f"snapshot usage {chain_id}") from err
        self._usage[chain_id] = int(resp.size)
        return int(resp.size)

    async def _layer_sizes(self, img: Image) -> tuple[list[int], bool]:
        """Each layer's unpacked size (0 when not unpacked) and whether all of them are unpacked."""
        sizes = [await self.snapshot_size(c) for c in chain_ids(img.diff_ids)]
        return [s or 0 for s in sizes], all(s is not None for s in sizes)

    async def unpacked_size(self, img: Image) -> int:
        """The image's size as Docker shows it: its unpacked layers, else (not unpacked) its blobs."""
        sizes, unpacked = await self._layer_sizes(img)
        return sum(sizes) if unpacked else img.size

    async def layers_size(self, images: list[Image]) -> int:
        """Bytes of the unpacked layers of ``images``, each layer (chain ID) once however many images share it:
        Docker's ``LayersSize``.  Only this namespace's snapshots: another namespace's copy of the same layer
        (an image shared with the CRI store) is that namespace's to count."""
        chains = {chain for img in images for chain in chain_ids(img.diff_ids)}
        return sum([await self.snapshot_size(chain) or 0 for chain in sorted(chains)])

    async def verbose(self, img: Image) -> dict[str, Any]:
        """Debug detail (CRI verbose ImageStatus, Docker inspect): the raw config and where things live."""
        resolved = await self._store.resolve_target(img.target, img.id)
        raw = await self._content.read(resolved.parsed.config.digest, media.MAX_MANIFEST)
        return {
            "imageSpec": json.loads(raw),
            "chainID": img.chain_id,
            "snapshotter": img.snapshotter,
            "target": {"mediaType": img.target.media_type, "digest": img.target.digest, "size": img.target.size},
            "manifest": resolved.manifest.digest,
        }

    async def describe(self, img: Image) -> ImageDetail:
        resolved = await self._store.resolve_target(img.target, img.id)
        raw = await self._content.read(resolved.parsed.config.digest, media.MAX_MANIFEST)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise errors.InvalidArgument(f"image {img.id}: config is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise errors.InvalidArgument(f"image {img.id}: config is not a JSON object")
        layer_sizes, unpacked = await self._layer_sizes(img)
        history = _history(doc.get("history"), layer_sizes)
        container_config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        return ImageDetail(
            image=img,
            author=str(doc.get("author") or ""),
            comment=str(doc.get("comment") or ""),
            docker_version=str(doc.get("docker_version") or ""),
            variant=str(doc.get("variant") or ""),
            os_version=str(doc.get("os.version") or ""),
            container_config=dict(container_config or {}),
            history=history,
            manifest=resolved.manifest,
            layers=list(resolved.parsed.layers),
            unpacked_size=sum(layer_sizes) if unpacked else img.size,
            labels=dict(img.config.labels),
            parent=str(doc.get("parent") or ""),
        )


def _history(raw: Any, layer_sizes: list[int]) -> list[HistoryEntry]:
    """The config's history with each non-empty step's layer size; one step per layer when it has none."""
    entries: list[HistoryEntry] = []
    layer = 0
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        empty = bool(item.get("empty_layer"))
        size = 0
        if not empty:
            size = layer_sizes[layer] if layer < len(layer_sizes) else 0
            layer += 1
        entries.append(HistoryEntry(str(item.get("created") or ""), str(item.get("created_by") or ""),
                                    str(item.get("comment") or ""), empty, size))
    # Layers the history does not account for (no history at all, or a short one).
    entries += [HistoryEntry("", "", "", False, size) for size in layer_sizes[layer:]]
    return entries
