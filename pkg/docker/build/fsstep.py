"""Filesystem steps without a container (COPY, ADD, WORKDIR): the step's files become a layer directly.

The parent image is viewed read-only (a containerd View, mounted privately) so the planner can resolve every
destination inside it (symlinked directories followed, existing directories kept); the tar it writes, entry
names already resolved, is the layer: compressed, written to the content store under the build's lease and
applied on the parent's snapshot by the exporter.  Nothing is mounted writable and no snapshot is diffed.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from pkg import errors
from pkg.containerd.client import Client
from pkg.docker.build.exporter import Layer
from pkg.docker.views.rootfs_access import image_view
from pkg.images import media
from pkg.images.content import file_source
from pkg.images.model import Descriptor, Image
from pkg.images.service import ImageService

CHUNK = 1 << 20

# Blocking: (the parent's root filesystem, read-only; where to write the tar) -> the tar, or None: no change.
Planner = Callable[[Path, Path], Path | None]


@contextlib.asynccontextmanager
async def _parent_root(client: Client, parent: Image | None, scratch: Path) -> AsyncIterator[Path]:
    if parent is None or not parent.chain_id:
        empty = scratch / f"empty-{secrets.token_hex(6)}"
        await asyncio.to_thread(empty.mkdir, mode=0o755)
        try:
            yield empty
        finally:
            await asyncio.to_thread(shutil.rmtree, empty, True)
        return
    async with image_view(client, parent) as root:
        if root is None:
            raise errors.NotImplementedYet(f"cannot read the files of image {parent.id}")
        yield root


def _compress(tar_path: Path) -> tuple[Path, str, str, int]:
    """(gzip blob, diff ID, blob digest, blob size); the gzip header carries no time, so equal tars make equal
    blobs."""
    blob = tar_path.with_suffix(".tar.gz")
    plain = hashlib.sha256()
    with open(tar_path, "rb") as src, open(blob, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as dst:
        while chunk := src.read(CHUNK):
            plain.update(chunk)
            dst.write(chunk)
    packed = hashlib.sha256()
    size = 0
    with open(blob, "rb") as f:
        while chunk := f.read(CHUNK):
            packed.update(chunk)
            size += len(chunk)
    return blob, f"sha256:{plain.hexdigest()}", f"sha256:{packed.hexdigest()}", size


async def fs_step(client: Client, images: ImageService, parent: Image | None, lease_id: str, scratch: Path,
                  planner: Planner) -> Layer | None:
    """Run ``planner`` against ``parent``'s files; its tar, if any, as the step's layer in the content store."""
    out = scratch / f"step-{secrets.token_hex(6)}.tar"
    async with _parent_root(client, parent, scratch) as root:
        tar_path = await asyncio.to_thread(planner, root, out)
    if tar_path is None:
        return None
    blob = tar_path.with_suffix(".tar.gz")
    try:
        packed, diff_id, digest, size = await asyncio.to_thread(_compress, tar_path)
        fobj = await asyncio.to_thread(open, packed, "rb")
        try:
            await images.content.write(f"narwhal-build-{digest}", digest, size, file_source(fobj),
                                       labels={media.LABEL_UNCOMPRESSED: diff_id}, lease=lease_id)
            await images.content.add_to_lease(digest, lease_id)
        finally:
            await asyncio.to_thread(fobj.close)
    finally:
        await asyncio.to_thread(tar_path.unlink, True)
        await asyncio.to_thread(blob.unlink, True)
    return Layer(Descriptor(media.OCI_LAYER_GZIP, digest, size), diff_id)
