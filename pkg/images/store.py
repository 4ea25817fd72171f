"""The image store: containerd image records grouped into Narwhal images.

containerd keeps one record per name (``docker.io/library/busybox:latest``,
``docker.io/library/busybox@sha256:…``), each pointing at a manifest or index.
An image, as CRI and Docker see it, is every record that resolves to the same
config digest (the image ID).  Records carry that digest as a label so listing
needs no content reads; the parsed manifest and config are cached by digest,
since content is immutable.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from pkg import errors
from pkg.containerd.api.services.images.v1 import images_pb2
from pkg.containerd.api.types import descriptor_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import from_grpc, translate
from pkg.images import media, reference
from pkg.images.content import ContentStore
from pkg.images.model import Descriptor, Image
from pkg.images.unpack import chain_ids

log = logging.getLogger(__name__)

LABEL_CONFIG = "io.narwhal.image.config"
LABEL_MANAGED = "io.cri-containerd.image"
LABEL_PINNED = "io.cri-containerd.pinned"


@dataclass(frozen=True)
class Record:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def config_digest(self) -> str:
        return self.labels.get(LABEL_CONFIG, "")


@dataclass(frozen=True)
class Resolved:
    """What a target (manifest or index) resolves to on this platform."""

    manifest: Descriptor
    parsed: media.Manifest
    config: media.ParsedConfig


class NameWatcher(Protocol):
    """Told of every name this store gives or takes (pkg.images.mirror: Docker's names into CRI's store)."""

    async def named(self, name: str, config_digest: str) -> None: ...

    async def unnamed(self, name: str) -> None: ...


class ImageStore:
    def __init__(self, client: Client, content: ContentStore, snapshotter: str) -> None:
        self._client = client
        self._content = content
        self.snapshotter = snapshotter
        self._resolved: dict[tuple[str, str], Resolved] = {}
        self.watcher: NameWatcher | None = None

    # ---- records ----
    async def records(self) -> list[Record]:
        with translate("list images"):
            resp = await self._client.images.List(images_pb2.ListImagesRequest(), timeout=60)
        return [_record(img) for img in resp.images]

    async def record(self, name: str) -> Record | None:
        try:
            resp = await self._client.images.Get(images_pb2.GetImageRequest(name=name), timeout=30)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise from_grpc(err, f"get image {name}") from err
        return _record(resp.image)

    async def put(self, name: str, target: Descriptor, config_digest: str, *, pinned: bool = False,
                  extra_labels: dict[str, str] | None = None) -> None:
        """Create or repoint the record ``name`` (a tag moves to the new image, as in Docker)."""
        await self._put(name, target, config_digest, pinned, extra_labels or {})
        if self.watcher is not None:
            await self.watcher.named(name, config_digest)

    async def _put(self, name: str, target: Descriptor, config_digest: str, pinned: bool,
                   extra_labels: dict[str, str]) -> None:
        labels = {**extra_labels, LABEL_CONFIG: config_digest, LABEL_MANAGED: "managed"}
        if pinned:
            labels[LABEL_PINNED] = "pinned"
        img = images_pb2.Image(name=name, labels=labels, target=descriptor_pb2.Descriptor(
            media_type=target.media_type, digest=target.digest, size=target.size,
            annotations=target.annotations))
        try:
            await self._client.images.Create(images_pb2.CreateImageRequest(image=img), timeout=30)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise from_grpc(err, f"create image {name}") from err
            existing = await self.record(name)
            if existing is not None and existing.labels.get(LABEL_PINNED) and not pinned:
                img.labels[LABEL_PINNED] = "pinned"
            with translate(f"update image {name}"):
                await self._client.images.Update(images_pb2.UpdateImageRequest(image=img), timeout=30)

    async def delete(self, name: str, sync: bool) -> None:
        try:
            await self._client.images.Delete(images_pb2.DeleteImageRequest(name=name, sync=sync), timeout=120)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise from_grpc(err, f"delete image {name}") from err
        if self.watcher is not None:
            await self.watcher.unnamed(name)

    # ---- content ----
    async def resolve_target(self, target: Descriptor, config_digest: str = "") -> Resolved:
        """Read (and cache) the manifest and config a target stands for.

        For an index: the present child whose config is ``config_digest`` (the platform it was pulled
        for), else this host's platform.
        """
        key = (target.digest, config_digest)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        manifest = target
        body = await self._content.read(target.digest, media.MAX_MANIFEST)
        if media.media_type_of(body, target.media_type) in media.INDEXES:
            entries = media.parse_index(body)
            manifest, body = await self._pick(entries, config_digest)
        parsed = media.parse_manifest(body, manifest.media_type)
        config = media.parse_config(await self._content.read(parsed.config.digest, media.MAX_MANIFEST))
        resolved = Resolved(manifest, parsed, config)
        self._resolved[key] = resolved
        return resolved

    async def _pick(self, entries: list[media.IndexEntry], config_digest: str) -> tuple[Descriptor, bytes]:
        if config_digest:
            for entry in entries:
                if entry.descriptor.media_type not in media.MANIFESTS or \
                        await self._content.info(entry.descriptor.digest) is None:
                    continue
                body = await self._content.read(entry.descriptor.digest, media.MAX_MANIFEST)
                if media.parse_manifest(body, entry.descriptor.media_type).config.digest == config_digest:
                    return entry.descriptor, body
        chosen = media.select_platform(entries)
        return chosen, await self._content.read(chosen.digest, media.MAX_MANIFEST)

    async def build(self, records: list[Record]) -> Image:
        """One Image from all the records that share a config digest."""
        primary = sorted(records, key=lambda r: ("@" in r.name, r.name))[0]
        resolved = await self.resolve_target(primary.target, primary.config_digest)
        tags: list[str] = []
        digests: set[str] = set()
        for rec in records:
            if reference.looks_like_id(rec.name):
                continue  # a record named by the image ID only keeps an unnamed image alive
            try:
                ref = reference.parse(rec.name, default_tag=False)
            except errors.InvalidArgument:
                continue  # e.g. a bare "sha256:…" ID record made by another client
            if ref.digest:
                digests.add(f"{ref.name}@{ref.digest}")
            elif ref.tag:
                tags.append(str(ref))
                digests.add(f"{ref.name}@{rec.target.digest}")
        cfg = resolved.config
        chains = chain_ids(cfg.diff_ids)
        return Image(
            id=resolved.parsed.config.digest,
            repo_tags=sorted(tags),
            repo_digests=sorted(digests),
            size=resolved.parsed.config.size + sum(layer.size for layer in resolved.parsed.layers),
            config=cfg.config,
            target=primary.target,
            diff_ids=list(cfg.diff_ids),
            chain_id=chains[-1] if chains else "",
            snapshotter=self.snapshotter,
            os=cfg.os,
            architecture=cfg.architecture,
            created=cfg.created,
            pinned=any(rec.labels.get(LABEL_PINNED) == "pinned" for rec in records),
        )

    async def groups(self) -> dict[str, list[Record]]:
        """Records grouped by image ID; records we did not label are resolved once and skipped if broken."""
        out: dict[str, list[Record]] = {}
        for rec in await self.records():
            config = rec.config_digest
            if not config:
                try:
                    config = (await self.resolve_target(rec.target)).parsed.config.digest
                except errors.NarwhalError as exc:
                    log.debug("skipping image record %s: %s", rec.name, exc)
                    continue
            out.setdefault(config, []).append(rec)
        return out


def _record(img: images_pb2.Image) -> Record:
    t = img.target
    return Record(img.name, Descriptor(t.media_type, t.digest, t.size, dict(t.annotations)), dict(img.labels))
