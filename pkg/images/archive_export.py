"""Export of image archives (``docker save``): one tar stream, written from the content store.

Separate from pkg.images.archive (the import side) because it is the other direction and shares nothing with
it but the layout: no tar parsing, no content writes, no unpack; only blobs streamed out of the content store
with tar headers around them.  The tarball is both an OCI layout (``oci-layout``, ``index.json``,
``blobs/sha256/…`` with the original, compressed blobs) and Docker's ``manifest.json`` and ``repositories``
pointing at the same blobs, what ``docker save`` writes since Docker 25.  Manifests travel byte for byte, so
save → load → push keeps the manifest digest.
"""
from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.images import media, reference
from pkg.images.content import WRITE_CHUNK, ContentStore
from pkg.images.model import Image
from pkg.images.store import ImageStore

BLOCK = 512


def blob_path(digest: str) -> str:
    """Where an OCI layout (and a docker-archive written by Docker 25+) holds a blob."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def add_entry(entries: list[tuple[Image, list[str]]], image: Image, ref: str) -> None:
    """Add ``image``, asked for as ``ref``, to an export: a reference exports that name, an ID (or a digest
    reference) the image unnamed; an image asked for twice is exported once with every name."""
    names: list[str] = []
    if not reference.looks_like_id(ref) and not image.id.removeprefix("sha256:").startswith(ref):
        parsed = reference.parse(ref)
        names = [str(parsed)] if not parsed.digest else []
    for known, known_names in entries:
        if known.id == image.id:
            known_names.extend(n for n in names if n not in known_names)
            return
    entries.append((image, names))


def _tar_header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class Exporter:
    def __init__(self, content: ContentStore, store: ImageStore) -> None:
        self._content = content
        self._store = store

    async def export(self, entries: list[tuple[Image, list[str]]]) -> AsyncIterator[bytes]:
        """Stream a tarball of the given images, each with the names to record for it."""
        resolved = [(img, names, await self._store.resolve_target(img.target, img.id)) for img, names in entries]
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        yield _tar_header("oci-layout", len(layout)) + layout + _padding(len(layout))
        yield _tar_header("blobs", 0, True) + _tar_header("blobs/sha256", 0, True)
        written: set[str] = set()
        index_entries: list[dict[str, Any]] = []
        docker_manifest: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        for img, names, res in resolved:
            for desc in (res.parsed.config, *res.parsed.layers, res.manifest):
                if desc.digest in written:
                    continue
                written.add(desc.digest)
                yield _tar_header(blob_path(desc.digest), desc.size)
                sent = 0
                async for chunk in self._content.stream(desc.digest):
                    sent += len(chunk)
                    yield chunk
                if sent != desc.size:
                    raise errors.Internal(f"export: blob {desc.digest} is {sent} bytes, expected {desc.size}")
                yield _padding(desc.size)
            manifest_json = media.descriptor_json(res.manifest)
            tags: list[str] = []
            for name in names or [""]:
                entry = dict(manifest_json)
                if name:
                    ref = reference.parse(name)
                    entry["annotations"] = {media.ANNOTATION_IMAGE_NAME: str(ref),
                                            media.ANNOTATION_REF_NAME: ref.tag or ref.digest}
                    if ref.tag:
                        tags.append(ref.familiar())
                        repositories.setdefault(ref.familiar().rsplit(":", 1)[0], {})[ref.tag] = \
                            img.id.removeprefix("sha256:")
                index_entries.append(entry)
            docker_manifest.append({"Config": blob_path(res.parsed.config.digest), "RepoTags": tags or None,
                                    "Layers": [blob_path(layer.digest) for layer in res.parsed.layers]})
        for fname, doc in (("index.json", {"schemaVersion": 2, "mediaType": media.OCI_INDEX,
                                           "manifests": index_entries}),
                           ("manifest.json", docker_manifest), ("repositories", repositories)):
            data = json.dumps(doc).encode()
            yield _tar_header(fname, len(data)) + data + _padding(len(data))
        yield b"\0" * (2 * BLOCK)


async def write_stream(stream: AsyncIterator[bytes], dest: Path) -> None:
    """Write an export stream to a file without blocking the loop."""
    fobj = await asyncio.to_thread(open, dest, "wb")
    buffer = io.BytesIO()
    flush: Callable[[bytes], Any] = fobj.write
    try:
        async for chunk in stream:
            buffer.write(chunk)
            if buffer.tell() >= WRITE_CHUNK:
                await asyncio.to_thread(flush, buffer.getvalue())
                buffer = io.BytesIO()
        await asyncio.to_thread(flush, buffer.getvalue())
    finally:
        await asyncio.to_thread(fobj.close)
