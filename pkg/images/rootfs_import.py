"""docker import: a filesystem tarball (plain, gzip, bzip2 or xz) as a one-layer image.

The archive becomes the layer blob as it is when plain or gzip (its diff ID
is the digest of the uncompressed stream); bzip2 and xz, which image layers
cannot carry, are decompressed first.  The image is then written like a
commit on an empty base, under one lease, and unpacked.
"""
from __future__ import annotations

import asyncio
import bz2
import hashlib
import lzma
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pkg import errors
from pkg.containerd.client import Client
from pkg.containerd.leases import lease
from pkg.images import media
from pkg.images.content import WRITE_CHUNK, ContentStore, file_source
from pkg.images.model import Descriptor, ImageConfig
from pkg.images.snapshot_commit import Base, SnapshotCommitter


@dataclass(frozen=True)
class _Layer:
    path: Path
    media_type: str
    digest: str
    size: int
    diff_id: str


def _kind(path: Path) -> str:
    with open(path, "rb") as fobj:
        head = fobj.read(6)
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return "tar"


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fobj:
        while chunk := fobj.read(WRITE_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def _gunzip_digest(path: Path) -> str:
    h = hashlib.sha256()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as fobj:
        while chunk := fobj.read(WRITE_CHUNK):
            h.update(inflater.decompress(chunk))
            while inflater.unused_data:  # concatenated gzip members
                rest = inflater.unused_data
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                h.update(inflater.decompress(rest))
        h.update(inflater.flush())
    return f"sha256:{h.hexdigest()}"


def _check_tar(path: Path) -> None:
    try:
        with tarfile.open(path, "r|*") as tar:
            tar.next()
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise errors.InvalidArgument(f"the imported archive is not a (compressed) tarball: {exc}") from None


def prepare_layer(path: Path) -> _Layer:
    """Blocking: check, decompress when needed, and digest the archive."""
    _check_tar(path)
    kind = _kind(path)
    if kind in ("bzip2", "xz"):
        plain = path.with_suffix(".plain")
        src: IO[bytes] = bz2.open(path, "rb") if kind == "bzip2" else lzma.open(path, "rb")
        with src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, WRITE_CHUNK)
        plain.replace(path)
        kind = "tar"
    digest, size = _digest(path)
    if kind == "gzip":
        return _Layer(path, media.OCI_LAYER_GZIP, digest, size, _gunzip_digest(path))
    return _Layer(path, media.OCI_LAYER, digest, size, digest)


async def import_rootfs(client: Client, content: ContentStore, committer: SnapshotCommitter, path: Path, *,
                        config: ImageConfig, message: str, names: tuple[str, ...], os: str,
                        architecture: str) -> str:
    """Import the archive at ``path`` (removed by the caller); returns the image ID."""
    layer = await asyncio.to_thread(prepare_layer, path)
    async with lease(client, "import") as lease_id:
        fobj = await asyncio.to_thread(open, layer.path, "rb")
        try:
            await content.write(f"narwhal-import-{layer.digest}", layer.digest, layer.size, file_source(fobj),
                                labels={media.LABEL_UNCOMPRESSED: layer.diff_id}, lease=lease_id)
            await content.add_to_lease(layer.digest, lease_id)  # also when it was there already
        finally:
            await asyncio.to_thread(fobj.close)
        base = Base({"architecture": architecture, "os": os, "config": {}}, [], [])
        return await committer.write_image(base, Descriptor(layer.media_type, layer.digest, layer.size),
                                           layer.diff_id, lease_id, config=config, comment=message, names=names)
