"""The last step shared by pull and import: GC labels, manifests, names.

Order matters to containerd's GC: the config points at the top snapshot, the
manifest at config and layers, the index at the manifest, and only then do
image records (the GC roots) name the target — all while the caller's lease
still holds everything.
"""
from __future__ import annotations

from pkg.images import media
from pkg.images.content import ContentStore
from pkg.images.model import Descriptor
from pkg.images.store import ImageStore


async def commit_image(content: ContentStore, store: ImageStore, snapshotter: str, *, target: Descriptor,
                       target_body: bytes, manifest_desc: Descriptor, manifest_body: bytes,
                       manifest: media.Manifest, top_chain: str, names: list[str], lease_id: str,
                       pinned: bool = False) -> None:
    if top_chain:
        await content.update_labels(manifest.config.digest, {f"{media.LABEL_GC_SNAPSHOT}.{snapshotter}": top_chain})
    labels = {f"{media.LABEL_GC_CONTENT}.config": manifest.config.digest}
    labels.update({f"{media.LABEL_GC_CONTENT}.l.{i}": layer.digest for i, layer in enumerate(manifest.layers)})
    await content.write_bytes(f"narwhal-manifest-{manifest_desc.digest}", manifest_desc.digest, manifest_body,
                              labels, lease_id)
    if target.digest != manifest_desc.digest:
        await content.write_bytes(f"narwhal-manifest-{target.digest}", target.digest, target_body,
                                  {f"{media.LABEL_GC_CONTENT}.m.0": manifest_desc.digest}, lease_id)
    for name in names:
        await store.put(name, target, manifest.config.digest, pinned=pinned)
