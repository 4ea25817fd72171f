"""ImageService: the one image core behind CRI's ImageService and Docker's /images.

``pull`` fetches and unpacks (so ``Image.chain_id`` is a committed snapshot);
``get`` accepts any name an operator types (short or full reference, full or
short ID, ``name@digest``); ``remove`` deletes every name of an image and lets
containerd's GC free its content and snapshots synchronously.  Its helpers with a job of their own:
pkg.images.lookup (which image a name means), remote (registry queries that store nothing), disk_usage
(ImageFsInfo's walk), detail (inspect/history), archive + archive_export (load/save), recovery.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkg import errors
from pkg.aio import import_modules
from pkg.config import Config
from pkg.containerd.client import Client
from pkg.images import lookup, media, reference, remote
from pkg.images.content import ContentStore
from pkg.images.detail import Describer, ImageDetail
from pkg.images.disk_usage import FsUsage, UsageCache
from pkg.images.ingest_direct import IngestFiles
from pkg.images.model import Descriptor, Distribution, Image, ImageConfig, RegistryAuth
from pkg.images.recovery import Interrupted, clear_staging
from pkg.images.share import Sharer
from pkg.images.store import ImageStore, Record
from pkg.images.unpack import Unpacker, chain_ids

if TYPE_CHECKING:  # the registry client (aiohttp) is imported at the first pull, push or login, not at start;
    # archives, docker import and commit (tarfile, the diff service's stubs) at their first use
    from pkg.images.archive import Importer
    from pkg.images.archive_export import Exporter
    from pkg.images.login import SearchResult
    from pkg.images.pull import ProgressSink, Puller
    from pkg.images.push import Pusher
    from pkg.images.snapshot_commit import CommitRequest, SnapshotCommitter

log = logging.getLogger(__name__)

SNAPSHOTTER = "overlayfs"


class ImageService:
    def __init__(self, client: Client, cfg: Config, *, snapshotter: str = SNAPSHOTTER) -> None:
        self._client = client
        self._cfg = cfg
        self.snapshotter = snapshotter
        ingests = IngestFiles(cfg.content_root) if cfg.content_root is not None else None
        self.content = ContentStore(client, ingests)
        self.store = ImageStore(client, self.content, snapshotter)
        self.unpacker = Unpacker(client, snapshotter)
        self._downloads = asyncio.Semaphore(cfg.max_concurrent_downloads)
        self._puller_: Puller | None = None
        self._pusher_: Pusher | None = None
        self._importer_: Importer | None = None
        self._exporter_: Exporter | None = None
        self._describer = Describer(client, self.content, self.store, snapshotter)
        self._committer_: SnapshotCommitter | None = None
        self._sharer = Sharer(client, self.content, self.store, self.unpacker)
        # Refuses the removal of an image something outside this service still uses (the daemon wires it:
        # CRI RemoveImage of an image a Docker container runs from, when images are shared).
        self.remove_guard: Callable[[Image], None] | None = None
        self._fs_usage = UsageCache()
        self._interrupted = Interrupted(client, self.content, self.unpacker)
        # stream-unpack's staging dirs (pkg.images.stream_unpack): beside the snapshotter's dir of the containerd
        # narwhald runs (a rename into a snapshot must not cross filesystems), one tree per namespace.
        self._staging: Path | None = None
        if cfg.owns_containerd and snapshotter == "overlayfs":
            self._staging = cfg.staging_root / client.namespace
        self._staging_lock = asyncio.Lock()
        self._staging_cleared = False

    @property
    def _puller(self) -> Puller:
        if self._puller_ is None:
            from pkg.images.pull import Puller
            staging = None
            if self._cfg.stream_unpack and self._staging is not None:
                from pkg.images.stream_unpack import StagingArea
                staging = StagingArea(self._staging)
            self._puller_ = Puller(self._client, self.content, self.store, self.unpacker, self._downloads,
                                   staging=staging)
        return self._puller_

    @property
    def _pusher(self) -> Pusher:
        if self._pusher_ is None:
            from pkg.images.push import Pusher
            self._pusher_ = Pusher(self.content, self.store, self._cfg.max_concurrent_downloads)
        return self._pusher_

    # Archives (docker save/load, import) and commits are Docker's and the builder's: their modules are
    # imported at the first such call (``await _archive_tools()`` first), not at start (idle RSS).
    @property
    def _importer(self) -> Importer:
        if self._importer_ is None:
            from pkg.images.archive import Importer
            self._importer_ = Importer(self._client, self.content, self.store, self.unpacker)
        return self._importer_

    @property
    def _exporter(self) -> Exporter:
        if self._exporter_ is None:
            from pkg.images.archive_export import Exporter
            self._exporter_ = Exporter(self.content, self.store)
        return self._exporter_

    @property
    def _committer(self) -> SnapshotCommitter:
        if self._committer_ is None:
            from pkg.images.snapshot_commit import SnapshotCommitter
            self._committer_ = SnapshotCommitter(self._client, self.content, self.store, self.unpacker)
        return self._committer_

    async def ensure_recovered(self) -> None:
        """Recover what operations of a previous narwhald killed mid-way left (pkg.images.recovery), once,
        before this process creates leases of its own: narwhald's start calls it, and so does every operation
        that makes a lease."""
        await self._interrupted.recover()
        async with self._staging_lock:
            if not self._staging_cleared and self._staging is not None:
                await asyncio.to_thread(clear_staging, self._staging)
            self._staging_cleared = True

    # ---- pull ----
    async def pull(self, ref: str, auth: RegistryAuth | None = None, progress: ProgressSink | None = None,
                   *, pinned: bool = False, platform: str | None = None) -> Image:
        """Pull ``ref``; ``platform`` ("os/arch[/variant]", e.g. Docker's --platform) picks a manifest list
        entry other than this host's."""
        parsed = reference.parse(ref)
        wanted = media.parse_platform(platform) if platform else None
        await self.ensure_recovered()
        session = await remote.session(parsed, self._cfg, auth, read_timeout=self._cfg.image_pull_progress_timeout)
        async with session:
            image_id = await self._puller.pull(parsed, session, progress, pinned=pinned, platform=wanted)
        self._fs_usage.invalidate()
        image = await self.get(image_id)
        if self._interrupted.pending:
            await self._release_taken_over(image)
        return image

    async def _release_taken_over(self, image: Image) -> None:
        """After a pull, the leases an interrupted pull of the same blobs left (a retry) have nothing to keep."""
        resolved = await self.store.resolve_target(image.target, image.id)
        digests = {image.target.digest, resolved.manifest.digest, resolved.parsed.config.digest,
                   *(layer.digest for layer in resolved.parsed.layers)}
        await self._interrupted.release_taken_over(digests, set(chain_ids(resolved.config.diff_ids)))

    async def list_tags(self, repository: str, auth: RegistryAuth | None = None) -> builtins.list[str]:
        """The tags ``repository`` has in its registry (mirrors first), sorted."""
        return await remote.list_tags(self._cfg, repository, auth)

    async def distribution(self, ref: str, auth: RegistryAuth | None = None) -> Distribution:
        """The registry's manifest (or index) for ``ref`` and its platforms, without pulling anything."""
        return await remote.distribution(self._cfg, ref, auth)

    # ---- push, import, export ----
    async def push(self, ref: str, auth: RegistryAuth | None = None, progress: ProgressSink | None = None) -> str:
        """Push the local image named ``ref`` to its registry; returns the pushed manifest digest."""
        parsed = reference.parse(ref)
        rec = await self.store.record(str(parsed))
        if rec is None:
            raise errors.NotFound(f"image {ref} not found (push needs a local image with that exact name)")
        async with await remote.session(parsed, self._cfg, auth, push=True) as session:
            return await self._pusher.push(parsed, rec.target, session, progress, rec.config_digest)

    async def import_archive(self, source: Path, name: str | None = None, *,
                             pinned: bool = False) -> builtins.list[Image]:
        """Load an OCI layout (directory or tar) or a docker-archive tar: content, snapshots, names.

        ``name`` names an image the archive leaves unnamed (e.g. narwhald's locally built pause image);
        ``pinned`` marks it as one the kubelet's image GC must keep (CRI Image.pinned).
        """
        await self.ensure_recovered()
        await _archive_tools()
        ids = await self._importer.import_archive(source, name, pinned)
        self._fs_usage.invalidate()
        return [await self.get(image_id) for image_id in dict.fromkeys(ids)]

    async def load(self, chunks: AsyncIterator[bytes]) -> builtins.list[tuple[Image, builtins.list[str]]]:
        """docker load: an OCI layout or docker-archive tarball, as uploaded; each image with the names the
        archive gave it (normalised references; none: loaded by ID only)."""
        await self.ensure_recovered()
        await _archive_tools()
        from pkg.images.archive import archive_names, spooled
        async with spooled(chunks, self._cfg.root / "tmp", "load-") as path:
            names = await asyncio.to_thread(archive_names, path)
            async with self.keeping_displaced(names):  # an image a loaded name leaves stays, dangling
                loaded = await self._importer.import_named(path)
        self._fs_usage.invalidate()
        merged: dict[str, builtins.list[str]] = {}
        for image_id, names in loaded:
            merged.setdefault(image_id, []).extend(n for n in names if n not in merged.get(image_id, []))
        return [(await self.get(image_id), names) for image_id, names in merged.items()]

    async def import_rootfs(self, chunks: AsyncIterator[bytes], *, config: ImageConfig, message: str = "",
                            names: tuple[str, ...] = (), platform: str | None = None) -> Image:
        """docker import: a filesystem tarball as a one-layer image (``platform``: its os/arch)."""
        host_os, host_arch, _ = media.host_platform()
        os_name, arch, _ = media.parse_platform(platform) if platform else (host_os, host_arch, "")
        await self.ensure_recovered()
        await _archive_tools()
        from pkg.images.archive import spooled
        from pkg.images.rootfs_import import import_rootfs
        async with spooled(chunks, self._cfg.root / "tmp", "import-") as path:
            image_id = await import_rootfs(self._client, self.content, self._committer, path, config=config,
                                           message=message, names=names, os=os_name, architecture=arch)
        self._fs_usage.invalidate()
        return await self.get(image_id)

    async def commit(self, req: CommitRequest) -> Image:
        """docker commit: a container's snapshot changes as a new image on top of its image."""
        await self.ensure_recovered()
        await _archive_tools()
        image_id = await self._committer.commit(req)
        self._fs_usage.invalidate()
        return await self.get(image_id)

    async def diff_snapshot(self, key: str, parent_chain: str, lease_id: str,
                            media_type: str = media.OCI_LAYER_GZIP) -> tuple[Descriptor, str]:
        """The changes of the active snapshot ``key`` over the committed ``parent_chain`` as a layer blob in the
        content store, held by ``lease_id``: (descriptor, diff ID).  The builder commits its steps with it."""
        await _archive_tools()
        return await self._committer._diff(key, parent_chain, media_type, lease_id)

    async def export(self, refs: builtins.list[str]) -> AsyncIterator[bytes]:
        """A tar stream (OCI layout + docker-archive manifest.json) of the named images.

        A reference exports that name; an ID exports the image unnamed.  Errors (unknown names) are
        raised before the first byte, so HTTP front ends can still answer with a status.
        """
        await _archive_tools()
        from pkg.images.archive_export import add_entry
        entries: builtins.list[tuple[Image, builtins.list[str]]] = []
        for ref in refs:
            add_entry(entries, await self.get(ref), ref)
        return self._exporter.export(entries)

    async def export_to(self, refs: builtins.list[str], dest: Path) -> None:
        stream = await self.export(refs)  # imports the archive tools
        from pkg.images.archive_export import write_stream
        await write_stream(stream, dest)

    # ---- registry accounts ----
    async def login(self, auth: RegistryAuth) -> str:
        """Check credentials against their registry (docker login); raises Unauthenticated when refused."""
        await remote.registry_client()
        from pkg.images.login import login

        return await login(self._cfg.registry, auth)

    async def search(self, term: str, limit: int = 25, auth: RegistryAuth | None = None) -> builtins.list[SearchResult]:
        await remote.registry_client()
        from pkg.images.login import search

        return await search(self._cfg.registry, term, limit, auth)

    # ---- lookup ----
    async def _group(self, ref_or_id: str) -> list[Record]:
        """Every record of the image ``ref_or_id`` names; NotFound when there is none (pkg.images.lookup)."""
        if not ref_or_id:
            raise errors.InvalidArgument("image reference is empty")
        return lookup.find_records(await self.store.groups(), ref_or_id)

    async def get(self, ref_or_id: str) -> Image:
        return await self.store.build(await self._group(ref_or_id))

    async def record(self, name: str) -> Record | None:
        """The record ``name`` points at (None when it names no image): a pull compares it before and after."""
        return await self.store.record(name)

    async def records_of(self, ref_or_id: str) -> builtins.list[Record]:
        """Every name (record) of the image ``ref_or_id`` names: Docker's rmi decides name by name."""
        return await self._group(ref_or_id)

    async def delete_names(self, names: builtins.list[str], *, collect: bool) -> None:
        """Delete these records; ``collect`` runs containerd's GC with the last (the image's last name)."""
        for i, name in enumerate(names):
            await self.store.delete(name, sync=collect and i == len(names) - 1)
        self._fs_usage.invalidate()

    @contextlib.asynccontextmanager
    async def keeping_displaced(self, names: builtins.list[str]) -> AsyncIterator[None]:
        """Docker semantics for names about to move to another image (tag, pull, commit, import): an image
        whose every name is among ``names`` stays, unnamed (dangling), instead of being collected.

        It gets a record named by its ID before the operation; afterwards that record goes again when the
        image still has a name (the operation failed, or named the same image).
        """
        wanted = set(names)
        kept: builtins.list[str] = []
        for image_id, records in (await self.store.groups()).items():
            named = [r for r in records if r.name != image_id]
            if named and len(named) == len(records) and all(r.name in wanted for r in named):
                await self.store.put(image_id, records[0].target, image_id)
                kept.append(image_id)
        try:
            yield
        finally:
            for image_id in kept:
                try:
                    records = await self._group(image_id)
                except errors.NotFound:
                    continue
                if any(r.name != image_id for r in records):
                    await self.store.delete(image_id, sync=False)

    async def keep_by_id(self, img: Image) -> None:
        """A record named by the image ID: keeps an image whose names all go (Docker's dangling image)."""
        await self.store.put(img.id, img.target, img.id)

    async def detail(self, img: Image) -> ImageDetail:
        """What Docker's inspect and history show: config metadata, history, unpacked sizes."""
        return await self._describer.describe(img)

    async def unpacked_size(self, img: Image) -> int:
        return await self._describer.unpacked_size(img)

    async def layers_size(self, images: builtins.list[Image]) -> int:
        """The unpacked layers of ``images`` in this namespace, each shared layer once (``docker system df``)."""
        return await self._describer.layers_size(images)

    async def inspect(self, img: Image) -> dict[str, Any]:
        """Debug detail (CRI verbose ImageStatus, Docker inspect): the raw config and where things live."""
        return await self._describer.verbose(img)

    async def list(self, ref_filter: str | None = None) -> list[Image]:
        groups = await self.store.groups()
        images: list[Image] = []
        for records in groups.values():
            try:
                images.append(await self.store.build(records))
            except errors.NarwhalError as exc:  # content gone under a stale record: skip, do not fail the list
                log.warning("image %s is unreadable: %s", records[0].name, exc)
        if ref_filter:
            images = [img for img in images if lookup.matches(img, ref_filter)]
        return sorted(images, key=lambda i: (i.repo_tags[:1], i.id))

    # ---- names ----
    async def tag(self, source: str, target: str) -> None:
        """Give the image ``source`` names the additional name ``target`` (moving it if taken)."""
        records = await self._group(source)
        ref = reference.parse(target)
        if ref.digest:
            raise errors.InvalidArgument(f"cannot tag with a digest reference: {target!r}")
        image = await self.store.build(records)
        await self.store.put(str(ref), image.target, image.id)

    async def untag(self, ref: str) -> bool:
        """Remove one name; returns True when that was the image's last name (it is then collected)."""
        name = str(reference.parse(ref))
        rec = await self.store.record(name)
        if rec is None:
            raise errors.NotFound(f"image {ref} not found")
        remaining = [r for r in (await self.store.groups()).get(rec.config_digest, []) if r.name != name]
        await self.store.delete(name, sync=not remaining)
        self._fs_usage.invalidate()
        return not remaining

    async def remove(self, ref_or_id: str) -> None:
        """Remove the image with all its names; idempotent.  The last delete runs containerd's GC."""
        try:
            records = await self._group(ref_or_id)
        except errors.NotFound:
            return
        if self.remove_guard is not None:
            self.remove_guard(await self.store.build(records))
        for i, rec in enumerate(records):
            await self.store.delete(rec.name, sync=i == len(records) - 1)
        self._fs_usage.invalidate()

    async def share_from(self, source: ImageService, image: Image, names: builtins.list[str],
                         labels: dict[str, str]) -> None:
        """Make ``image`` of ``source`` (another namespace) present here under ``names``, its blobs linked
        through containerd's shared content store rather than copied (pkg.images.share)."""
        await self.ensure_recovered()
        await self._sharer.share(source.content, source.store, image, names, labels)
        self._fs_usage.invalidate()

    # ---- disk usage ----
    async def fs_info(self) -> builtins.list[FsUsage]:
        """Usage of the snapshotter's and the content store's directories (cached for a few seconds,
        recomputed after every pull, import and removal)."""
        root = self._cfg.containerd_root
        return await self._fs_usage.get([root / f"io.containerd.snapshotter.v1.{self.snapshotter}",
                                         root / "io.containerd.content.v1.content"])


_ARCHIVE_TOOLS = ("pkg.images.archive", "pkg.images.archive_export", "pkg.images.rootfs_import",
                  "pkg.images.snapshot_commit")


async def _archive_tools() -> None:
    """Archives, docker import and commit are imported at their first use, not at start."""
    await import_modules(*_ARCHIVE_TOOLS)
