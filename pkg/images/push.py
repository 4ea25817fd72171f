"""Push: upload a local image's blobs (skipping those the registry has) and then its manifest(s).

Manifests go up byte for byte, so the pushed digest is the local one.  When
the local target is an index whose platform manifests are not all present,
only this platform's manifest is pushed under the tag.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from pkg import errors
from pkg.images import media
from pkg.images.content import ContentStore
from pkg.images.model import Descriptor, Progress
from pkg.images.reference import Reference
from pkg.images.registry import Endpoint, RegistrySession
from pkg.images.store import ImageStore

log = logging.getLogger(__name__)

ProgressSink = Callable[[Progress], None]


class Pusher:
    def __init__(self, content: ContentStore, store: ImageStore, uploads: int = 3) -> None:
        self._content = content
        self._store = store
        self._uploads = uploads

    async def push(self, ref: Reference, target: Descriptor, session: RegistrySession,
                   progress: ProgressSink | None, config_digest: str = "") -> str:
        """Push ``target`` as ``ref``; returns the digest the registry now serves for the tag."""
        def emit(desc: Descriptor, status: str, current: int = 0) -> None:
            if progress is not None:
                try:
                    progress(Progress(str(ref), desc.digest, desc.media_type, status, current, desc.size))
                except Exception:
                    log.exception("progress sink failed")

        manifests: list[tuple[Descriptor, bytes]] = []  # in upload order: children before their index
        body = await self._content.read(target.digest, media.MAX_MANIFEST)
        top = target
        if media.media_type_of(body, target.media_type) in media.INDEXES:
            children = [e.descriptor for e in media.parse_index(body)]
            present = [c for c in children if await self._content.info(c.digest) is not None]
            if len(present) == len(children):
                for child in children:
                    manifests.append((child, await self._content.read(child.digest, media.MAX_MANIFEST)))
                manifests.append((target, body))
            else:
                resolved = await self._store.resolve_target(target, config_digest)
                top = resolved.manifest
                manifests.append((top, await self._content.read(top.digest, media.MAX_MANIFEST)))
        else:
            manifests.append((target, body))

        blobs: dict[str, Descriptor] = {}
        for desc, data in manifests:
            if desc.media_type in media.MANIFESTS or media.media_type_of(data, desc.media_type) in media.MANIFESTS:
                parsed = media.parse_manifest(data, desc.media_type)
                for blob in (parsed.config, *parsed.layers):
                    blobs.setdefault(blob.digest, blob)

        ep = await self._endpoint(session)
        semaphore = asyncio.Semaphore(self._uploads)

        async def upload(blob: Descriptor) -> None:
            async with semaphore:
                if await session.blob_exists(ep, blob.digest):
                    emit(blob, "exists", blob.size)
                    return
                if await self._content.info(blob.digest) is None:
                    raise errors.FailedPrecondition(f"blob {blob.digest} of {ref} is not in the local store")
                emit(blob, "uploading", 0)
                await session.upload_blob(ep, blob.digest, blob.size, self._counted(blob, emit))
                emit(blob, "pushed", blob.size)

        await asyncio.gather(*(upload(b) for b in blobs.values()))
        for desc, data in manifests:
            kind = media.media_type_of(data, desc.media_type)
            is_top = desc.digest == top.digest
            await session.put_manifest(ep, (ref.tag or desc.digest) if is_top else desc.digest, kind, data)
            emit(desc, "pushed", desc.size)
        emit(top, "done", top.size)
        return top.digest

    async def _counted(self, blob: Descriptor, emit: Callable[[Descriptor, str, int], None]) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._content.stream(blob.digest):
            sent += len(chunk)
            emit(blob, "uploading", sent)
            yield chunk

    @staticmethod
    async def _endpoint(session: RegistrySession) -> Endpoint:
        """The upstream (mirrors are for pulls); for an insecure host the first scheme that answers."""
        upstream = [e for e in session.endpoints if not e.mirror]
        last: errors.NarwhalError | None = None
        for ep in upstream:
            try:
                resp = await session.request(ep, "GET", ep.url(""))
                resp.release()
                return ep
            except errors.Unavailable as exc:
                last = exc
        assert last is not None
        raise last
