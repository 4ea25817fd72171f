"""Pull: resolve → fetch blobs into the content store (in parallel, resumable) → unpack → name.

Everything happens under one lease, so containerd's GC cannot collect a blob
or snapshot before the image record points at it; the GC labels are written
before the lease goes.  Layers download in parallel (``max-concurrent-downloads``)
while earlier ones are already being applied, in order, into snapshots.
Blobs already in the store are skipped; a blob whose ingest was interrupted
(even by a killed narwhald) resumes where containerd left off.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.containerd.client import Client
from pkg.containerd.leases import lease
from pkg.images import media
from pkg.images.commit import commit_image
from pkg.images.content import ContentStore, Labels, Source
from pkg.images.model import Descriptor, Progress
from pkg.images.reference import Reference
from pkg.images.registry import Endpoint, RegistrySession
from pkg.images.store import ImageStore
from pkg.images.unpack import Unpacker, chain_ids

if TYPE_CHECKING:
    from pkg.images.stream_unpack import LayerStream, StagingArea

log = logging.getLogger(__name__)

ProgressSink = Callable[[Progress], None]
BLOB_ATTEMPTS = 5  # per endpoint, as long as each attempt gets further
BLOB_RETRY_DELAY = 0.5


class Puller:
    def __init__(self, client: Client, content: ContentStore, store: ImageStore, unpacker: Unpacker,
                 downloads: asyncio.Semaphore, *, staging: StagingArea | None = None) -> None:
        self._client = client
        self._content = content
        self._store = store
        self._unpacker = unpacker
        self._downloads = downloads
        self._staging = staging  # stream-unpack: layers applied while they stream in (None: Diff.Apply)
        self._inflight: dict[str, asyncio.Future[None]] = {}

    async def pull(self, ref: Reference, session: RegistrySession, progress: ProgressSink | None,
                   *, pinned: bool = False, platform: tuple[str, str, str] | None = None) -> str:
        """Pull ``ref``; returns the image ID (config digest)."""
        with metrics_mod.current().pull():
            return await self._pull(ref, session, progress, pinned=pinned, platform=platform)

    async def _pull(self, ref: Reference, session: RegistrySession, progress: ProgressSink | None,
                    *, pinned: bool, platform: tuple[str, str, str] | None) -> str:
        emit = _emitter(str(ref), progress)
        started = time.monotonic()
        async with lease(self._client, "pull") as lease_id:
            ep, target, body = await session.resolve()
            emit(target, "resolved", target.size, target.size)
            manifest_desc, manifest_body = target, body
            if target.media_type in media.INDEXES:
                manifest_desc = media.select_platform(media.parse_index(body), *(platform or ()))
                manifest_desc, manifest_body = await session.fetch_manifest(ep, manifest_desc.digest)
            manifest = media.parse_manifest(manifest_body, manifest_desc.media_type)
            if manifest.config.size > media.MAX_MANIFEST:
                raise errors.InvalidArgument(f"image config {manifest.config.digest} is too large")

            # The layers start streaming in beside the config (a pull's first bytes should not wait for the
            # config's round trips); their diff-ID labels, which only the config names, go with each blob's
            # commit, or right after it when the config was later (_fetch).  An image refused for its platform
            # (Docker's --platform on a single-platform image) is refused before its layers, as before: its
            # config comes first.
            loop = asyncio.get_running_loop()
            layer_labels: list[asyncio.Future[dict[str, str]]] = [loop.create_future() for _ in manifest.layers]
            downloads: list[asyncio.Future[None]] = []
            streams: list[LayerStream | None] = [None] * len(manifest.layers)
            early = not (platform and target.media_type not in media.INDEXES)
            try:
                if early:
                    downloads = self._start_layers(session, ep, manifest.layers, layer_labels, streams, lease_id,
                                                   emit)
                await self._fetch(session, ep, manifest.config, lease_id, {}, emit, bounded=False)
                config = media.parse_config(await self._content.read(manifest.config.digest, media.MAX_MANIFEST))
                if not early:
                    _check_platform(ref, config, platform or ("", "", ""))
                if len(config.diff_ids) != len(manifest.layers):
                    raise errors.InvalidArgument(f"image {ref}: {len(manifest.layers)} layers but "
                                                 f"{len(config.diff_ids)} diff IDs in its config")
                for future, diff_id in zip(layer_labels, config.diff_ids, strict=True):
                    future.set_result({media.LABEL_UNCOMPRESSED: diff_id})
                if not early:
                    downloads = self._start_layers(session, ep, manifest.layers, layer_labels, streams, lease_id,
                                                   emit)
                chains = chain_ids(config.diff_ids)
                await self._unpack(manifest.layers, config.diff_ids, chains, downloads, streams, lease_id, started,
                                   emit)
            finally:
                for task in downloads:
                    task.cancel()
                await asyncio.gather(*downloads, return_exceptions=True)
                await asyncio.gather(*(s.discard() for s in streams if s is not None))

            names = [str(ref.with_digest(target.digest))]
            if ref.tag and not ref.digest:
                names.insert(0, str(ref.with_tag(ref.tag)))
            await commit_image(self._content, self._store, self._unpacker.snapshotter, target=target,
                               target_body=body, manifest_desc=manifest_desc, manifest_body=manifest_body,
                               manifest=manifest, top_chain=chains[-1] if chains else "", names=names,
                               lease_id=lease_id, pinned=pinned)
            emit(target, "done", target.size, target.size)
            log.debug("pull %s: done at %.2f s", ref, time.monotonic() - started)
            return manifest.config.digest

    def _start_layers(self, session: RegistrySession, ep: Endpoint, layers: list[Descriptor],
                      labels: list[asyncio.Future[dict[str, str]]], streams: list[LayerStream | None],
                      lease_id: str, emit: Callable[[Descriptor, str, int, int], None]) -> list[asyncio.Future[None]]:
        for layer in layers:
            emit(layer, "waiting", 0, layer.size)
        return [asyncio.ensure_future(self._fetch(session, ep, layer, lease_id, future, emit, streams=(streams, i)))
                for i, (layer, future) in enumerate(zip(layers, labels, strict=True))]

    async def _unpack(self, layers: list[Descriptor], diff_ids: list[str], chains: list[str],
                      downloads: list[asyncio.Future[None]], streams: list[LayerStream | None], lease_id: str,
                      started: float, emit: Callable[[Descriptor, str, int, int], None]) -> None:
        """Each layer as soon as its blob and its parent are in, in order."""
        timeline: list[str] = []  # when each layer was in and when it was unpacked: where a pull waits
        for i, layer in enumerate(layers):
            # The snapshot is prepared while the blob may still be coming in (containerd's unpacker does the
            # same): its round trip is off the path from "blob in" to "layer unpacked".
            prepared = await self._unpacker.prepare(layer, chains[i - 1] if i else "", chains[i], lease_id)
            try:
                await downloads[i]
            except BaseException:
                if prepared is not None:
                    await self._unpacker.remove(prepared.key)
                raise
            fetched = time.monotonic() - started
            emit(layer, "extracting", 0, layer.size)
            stream = streams[i]
            if prepared is not None:
                extracted = await stream.result() if stream is not None else None
                await self._unpacker.apply_prepared(prepared, layer, diff_ids[i], lease_id, extracted)
            if stream is not None:
                await stream.discard()
            emit(layer, "extracted", layer.size, layer.size)
            timeline.append(f"{fetched:.2f}/{time.monotonic() - started:.2f}")
        log.debug("layers in/unpacked at %s s", " ".join(timeline))

    async def _fetch(self, session: RegistrySession, ep: Endpoint, desc: Descriptor, lease_id: str,
                     labels: dict[str, str] | asyncio.Future[dict[str, str]],
                     emit: Callable[[Descriptor, str, int, int], None], *, bounded: bool = True,
                     streams: tuple[list[LayerStream | None], int] | None = None) -> None:
        """One blob into the store, deduplicated across concurrent pulls of the same digest.  ``bounded``:
        counted against ``max-concurrent-downloads`` (a config is not: the unpack waits for it).

        ``labels`` as a future (a layer's, named by a config still on its way) go with the blob's commit when
        known by then, else are set once the blob is no longer claimed: a claim is never held waiting for a
        config, which might itself wait for a blob another pull claims (two images naming each other's config
        as a layer would otherwise hang both pulls).  ``streams``: where a layer downloaded here puts its
        extractor (stream-unpack), at its index."""
        sent = not isinstance(labels, asyncio.Future)

        def at_commit() -> dict[str, str]:
            nonlocal sent
            if not isinstance(labels, asyncio.Future):
                return labels
            if not labels.done():
                return {}
            sent = True
            return labels.result()

        while (existing := self._inflight.get(desc.digest)) is not None:
            await asyncio.shield(existing)
        # Claimed before the first await below, so no other pull can start the same blob meanwhile.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[desc.digest] = future
        try:
            info = await self._content.info(desc.digest)
            if info is not None:
                if info.size != desc.size:
                    raise errors.InvalidArgument(
                        f"blob {desc.digest}: stored size {info.size}, manifest says {desc.size}")
                await self._content.add_to_lease(desc.digest, lease_id)
                missing = {k: v for k, v in at_commit().items() if info.labels.get(k) != v}
                if missing:
                    await self._content.update_labels(desc.digest, missing)
                emit(desc, "exists", desc.size, desc.size)
            else:
                stream = None
                if streams is not None and self._staging is not None:
                    stream = self._staging.open(desc, overlay=streams[1] > 0)
                    streams[0][streams[1]] = stream
                if bounded:
                    async with self._downloads:
                        await self._download(session, ep, desc, lease_id, at_commit, emit, stream)
                else:
                    await self._download(session, ep, desc, lease_id, at_commit, emit, stream)
                metrics_mod.current().pull_bytes.inc(desc.size)
                emit(desc, "downloaded", desc.size, desc.size)
        finally:
            del self._inflight[desc.digest]
            future.set_result(None)
        if not sent and isinstance(labels, asyncio.Future):
            await self._content.update_labels(desc.digest, await asyncio.shield(labels))

    async def _download(self, session: RegistrySession, ep: Endpoint, desc: Descriptor, lease_id: str,
                        labels: Labels, emit: Callable[[Descriptor, str, int, int], None],
                        stream: LayerStream | None = None) -> None:
        ref = f"narwhal-pull-{desc.digest}"
        order = [ep, *(e for e in session.endpoints if e != ep)]

        def on_bytes(n: int) -> None:
            emit(desc, "downloading", n, desc.size)

        last: errors.NarwhalError | None = None
        for endpoint in order:
            source: Source = functools.partial(session.open_blob, endpoint, desc.digest)
            if stream is not None:
                from pkg.images.stream_unpack import tee
                source = tee(source, stream)
            progress = -1
            for attempt in range(BLOB_ATTEMPTS):
                try:
                    await self._content.write(ref, desc.digest, desc.size, source,
                                              labels=labels, lease=lease_id, on_bytes=on_bytes)
                    if stream is not None:
                        if stream.fed == desc.size:
                            stream.finish()
                        else:
                            stream.abandon(f"{stream.fed} of {desc.size} bytes seen")
                    return
                except errors.NotFound as exc:
                    last = exc  # this endpoint (a mirror) lacks the blob: try the next
                    break
                except errors.Unavailable as exc:
                    last = exc
                    # A stream cut mid-way resumes from what containerd holds (Range); an endpoint that
                    # makes no progress at all is left for the next one.
                    status = await self._content.status(ref)
                    if status is None or status <= progress or attempt == BLOB_ATTEMPTS - 1:
                        break
                    progress = status
                    log.info("blob %s: %s; resuming at byte %d", desc.digest, exc.message, status)
                    await asyncio.sleep(BLOB_RETRY_DELAY * (attempt + 1))
        assert last is not None
        raise last


def _check_platform(ref: Reference, config: media.ParsedConfig, wanted: tuple[str, str, str]) -> None:
    """A single-platform image asked for another platform (Docker's --platform): refused before its layers."""
    os_name, arch, variant = wanted
    if (config.os, config.architecture) != (os_name, arch) or (variant and config.variant not in ("", variant)):
        actual = "/".join(p for p in (config.os, config.architecture, config.variant) if p)
        asked = "/".join(p for p in wanted if p)
        raise errors.NotFound(f"image with reference {ref} was found but its platform ({actual}) does not match "
                              f"the specified platform ({asked})")


def _emitter(ref: str, sink: ProgressSink | None) -> Callable[[Descriptor, str, int, int], None]:
    def emit(desc: Descriptor, status: str, current: int, total: int) -> None:
        if sink is None:
            return
        try:
            sink(Progress(ref, desc.digest, desc.media_type, status, current, total))
        except Exception:  # a broken progress consumer must not fail the pull
            log.exception("progress sink failed")
    return emit

