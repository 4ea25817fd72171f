"""One image, two namespaces: an image of the Docker domain made present in the CRI domain.

containerd 1.6 keeps image records, content metadata and snapshots per
namespace, but its content store is shared underneath (the default
``shared`` content policy): opening a writer for a digest another namespace
already holds links the blob into this namespace and answers AlreadyExists,
so no byte is copied.  Only if that policy is off does the blob stream over
(a copy, still correct).  The layers are then unpacked into this namespace's
snapshots (committed snapshots are per namespace in 1.6), the GC labels are
written as a pull writes them, and the records are named, all under one lease.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from pkg.containerd.client import Client
from pkg.containerd.leases import lease
from pkg.images import media
from pkg.images.commit import commit_image
from pkg.images.content import ContentStore, Source
from pkg.images.model import Descriptor, Image
from pkg.images.store import ImageStore
from pkg.images.unpack import Unpacker, chain_ids

log = logging.getLogger(__name__)


def _source(content: ContentStore, digest: str, streamed: list[int]) -> Source:
    """Read the blob from the other namespace from the offset containerd asks for: with shared content that
    offset is already the blob's size (nothing to send); ``streamed`` counts what did go over."""
    async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in content.stream(digest, offset):
                streamed[0] += len(chunk)
                yield chunk
        return offset, chunks()
    return source


class Sharer:
    """Brings images of another namespace's ImageStore into this one (``client``'s namespace)."""

    def __init__(self, client: Client, content: ContentStore, store: ImageStore, unpacker: Unpacker) -> None:
        self._client = client
        self._content = content
        self._store = store
        self._unpacker = unpacker

    async def share(self, src_content: ContentStore, src_store: ImageStore, image: Image, names: list[str],
                    labels: dict[str, str]) -> None:
        """Make ``image`` (of ``src_store``) present here under ``names`` (records with ``labels``): blobs
        linked, layers unpacked."""
        resolved = await src_store.resolve_target(image.target, image.id)
        manifest = resolved.parsed
        target_body = await src_content.read(image.target.digest, media.MAX_MANIFEST)
        manifest_body = (target_body if resolved.manifest.digest == image.target.digest
                         else await src_content.read(resolved.manifest.digest, media.MAX_MANIFEST))
        chains = chain_ids(resolved.config.diff_ids)
        async with lease(self._client, "share") as lease_id:
            await self._link(src_content, manifest.config, {}, lease_id)
            for i, layer in enumerate(manifest.layers):
                await self._link(src_content, layer, {media.LABEL_UNCOMPRESSED: resolved.config.diff_ids[i]},
                                 lease_id)
                await self._unpacker.apply_layer(layer, resolved.config.diff_ids[i], chains[i - 1] if i else "",
                                                 chains[i], lease_id)
            await commit_image(self._content, self._store, self._unpacker.snapshotter, target=image.target,
                               target_body=target_body, manifest_desc=resolved.manifest,
                               manifest_body=manifest_body, manifest=manifest,
                               top_chain=chains[-1] if chains else "", names=[], lease_id=lease_id)
            for name in names:  # the GC roots, while the lease still holds everything
                await self._store.put(name, image.target, image.id, extra_labels=labels)

    async def _link(self, src_content: ContentStore, desc: Descriptor, labels: dict[str, str], lease_id: str) -> None:
        info = await self._content.info(desc.digest)
        if info is not None:
            missing = {k: v for k, v in labels.items() if info.labels.get(k) != v}
            if missing:
                await self._content.update_labels(desc.digest, missing)
            await self._content.add_to_lease(desc.digest, lease_id)
            return
        streamed = [0]
        written = await self._content.write(f"narwhal-share-{desc.digest}", desc.digest, desc.size,
                                            _source(src_content, desc.digest, streamed), labels=labels,
                                            lease=lease_id)
        if not written:  # already ours meanwhile: make sure our lease holds it until the records do
            await self._content.add_to_lease(desc.digest, lease_id)
        log.debug("blob %s shared: %d of %d bytes streamed", desc.digest, streamed[0], desc.size)
