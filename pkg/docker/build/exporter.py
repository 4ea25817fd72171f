"""Step results as images in the Docker domain's image store (moby's ImageExportedByBuildkit and
ImageNamedByBuildkit hooks, in-process).

Every step's result is an image: the parent's config document with the new runtime config and one more history
entry, and the parent's layers plus the step's layer (if it made one), written to the content store with the
same GC labels as commit and load.  Results are unnamed; an image record (named by the ID) exists only while a
step runs a container from it (``Holds``) or, for the final image, as its tags.  The build cache's leases keep
the content and snapshots of unnamed results.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pkg import errors
from pkg.events import EventBus
from pkg.images import media, reference
from pkg.images.commit import commit_image
from pkg.images.model import Descriptor, Image
from pkg.images.service import ImageService
from pkg.images.store import LABEL_CONFIG, Record
from pkg.images.unpack import chain_ids


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Exporter:
    def __init__(self, images: ImageService, events: EventBus | None) -> None:
        self.images = images
        self.events = events

    async def document(self, image: Image | None) -> dict[str, Any]:
        """The image's config document (an empty linux one for ``scratch``)."""
        if image is None:
            host_os, arch, _ = media.host_platform()
            return {"architecture": arch, "os": host_os, "config": {}, "rootfs": {"type": "layers", "diff_ids": []},
                    "history": []}
        resolved = await self.images.store.resolve_target(image.target, image.id)
        doc = json.loads(await self.images.content.read(resolved.parsed.config.digest, media.MAX_MANIFEST))
        if not isinstance(doc, dict):
            raise errors.InvalidArgument(f"image {image.id}: config is not a JSON object")
        return doc

    async def layers(self, image: Image | None) -> list[Descriptor]:
        if image is None:
            return []
        return list((await self.images.store.resolve_target(image.target, image.id)).parsed.layers)

    async def write(self, parent: Image | None, config: dict[str, Any], created_by: str, layer: Layer | None,
                    lease_id: str) -> Image:
        """A new image: ``parent`` + ``layer`` (None: a metadata-only step) with the runtime ``config``."""
        doc = await self.document(parent)
        base_layers = await self.layers(parent)
        diff_ids = list(parent.diff_ids) if parent is not None else []
        now = _now()
        history = list(doc.get("history") or [])
        entry: dict[str, Any] = {"created": now, "created_by": created_by}
        if layer is None:
            entry["empty_layer"] = True
        else:
            diff_ids.append(layer.diff_id)
        history.append(entry)
        doc.update(created=now, config=config, rootfs={"type": "layers", "diff_ids": diff_ids}, history=history)
        doc.pop("container", None)
        doc.pop("container_config", None)
        if parent is not None:
            doc["parent"] = parent.id
        else:
            doc.pop("parent", None)
        body = json.dumps(doc, separators=(",", ":")).encode()
        config_desc = Descriptor(media.DOCKER_CONFIG, media.sha256(body), len(body))
        content = self.images.content
        await content.write_bytes(f"narwhal-build-{config_desc.digest}", config_desc.digest, body, lease=lease_id)
        new = [] if layer is None else [Descriptor(media.DOCKER_LAYER_GZIP if layer.descriptor.media_type ==
                                                   media.OCI_LAYER_GZIP else layer.descriptor.media_type,
                                                   layer.descriptor.digest, layer.descriptor.size)]
        layers = [*base_layers, *new]
        manifest_doc: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": media.DOCKER_MANIFEST,
            "config": media.descriptor_json(config_desc),
            "layers": [media.descriptor_json(d) for d in layers],
        }
        manifest_body = json.dumps(manifest_doc, separators=(",", ":")).encode()
        manifest_desc = Descriptor(media.DOCKER_MANIFEST, media.sha256(manifest_body), len(manifest_body))
        manifest = media.parse_manifest(manifest_body, media.DOCKER_MANIFEST)
        for held in base_layers:
            await content.add_to_lease(held.digest, lease_id)
        chains = chain_ids(diff_ids)
        if layer is not None:
            await self.images.unpacker.apply_layer(layer.descriptor, layer.diff_id,
                                                   chains[-2] if len(chains) > 1 else "", chains[-1], lease_id)
        await commit_image(content, self.images.store, self.images.snapshotter, target=manifest_desc,
                           target_body=manifest_body, manifest_desc=manifest_desc, manifest_body=manifest_body,
                           manifest=manifest, top_chain=chains[-1] if chains else "", names=[], lease_id=lease_id)
        return await self.image(config_desc.digest, manifest_desc)

    async def image(self, image_id: str, manifest: Descriptor) -> Image:
        """The Image of an unnamed result (no record needed)."""
        return await self.images.store.build([Record(image_id, manifest, {LABEL_CONFIG: image_id})])

    async def name(self, image: Image, tags: list[str]) -> list[str]:
        """The final image: tagged (the names it displaces stay as dangling images, as Docker does) or, without
        tags, kept by its ID; ``image`` events published as moby's build hooks do (``create``, then ``tag`` for
        each name).  Returns the familiar names."""
        if self.events is not None:
            self.events.publish_docker("image", "create", image.id, {"name": image.id})
        if not tags:
            await self.images.keep_by_id(image)
            return []
        familiar = []
        async with self.images.keeping_displaced(tags):
            for tag in tags:
                await self.images.store.put(tag, image.target, image.id)
                name = reference.parse(tag).familiar()
                familiar.append(name)
                if self.events is not None:
                    self.events.publish_docker("image", "tag", image.id, {"name": name})
        return familiar


class Holds:
    """Image records for unnamed results while a container is made from them (the engine looks images up by
    name), counted across concurrent builds; a record this class created goes when its last user is done."""

    def __init__(self, images: ImageService) -> None:
        self.images = images
        self._count: dict[str, int] = {}
        self._created: set[str] = set()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def hold(self, image: Image) -> AsyncIterator[None]:
        async with self._lock:
            self._count[image.id] = self._count.get(image.id, 0) + 1
            if self._count[image.id] == 1 and await self.images.store.record(image.id) is None:
                await self.images.store.put(image.id, image.target, image.id)
                self._created.add(image.id)
        try:
            yield
        finally:
            async with self._lock:
                self._count[image.id] -= 1
                if not self._count[image.id]:
                    del self._count[image.id]
                    if image.id in self._created:
                        self._created.discard(image.id)
                        await self.images.store.delete(image.id, sync=False)
