"""Docker volumes (local driver): create/get/list/remove/prune, and the mounts containers get.

The engine calls three things per container (moby keeps the same
reference-counting contract)::

    plan = await volumes.prepare(mount_specs, image)   # before creating the container
    ... create the core container with plan.runtime_mounts() ...
    await volumes.attach(plan, container_id)          # or volumes.discard(plan) if the create failed
    ...
    await volumes.release(container_id, remove_anonymous=rm_v)   # when the container is removed

``prepare`` creates named volumes on first use and an anonymous volume for
every image VOLUME (and ``-v /path``) not mounted otherwise, mounts volumes
that carry a filesystem (``type``/``device``/``o``), and seeds an empty volume
with what the image has at the mount path (Docker's copy-up).  From prepare
until release the volumes are in use: removing one is a Conflict naming its
containers.  Records (and who uses what) persist across restarts; ``start``
drops references of containers that no longer exist.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import posixpath
import secrets
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from pkg import errors, goregexp
from pkg.aio import CleanupStack
from pkg.docker.volumes import binds
from pkg.docker.volumes.local import LocalDriver, Record, validate_name, validate_options
from pkg.docker.volumes.model import (
    ANONYMOUS_LABEL,
    LOCAL_DRIVER,
    MountPlan,
    MountPoint,
    MountSpec,
    MountType,
    Volume,
    VolumeFilter,
    VolumeUsage,
)
from pkg.events import EventBus
from pkg.images.model import Image
from pkg.runtime.spec_mounts import _seed_volume as seed_from_rootfs

log = logging.getLogger(__name__)

# A read-only view of an image's root filesystem, for seeding volumes (None when it cannot be viewed).
ImageView = Callable[[Image], AbstractAsyncContextManager[Path | None]]


class VolumeService:
    def __init__(self, root: Path, image_view: ImageView | None = None, events: EventBus | None = None) -> None:
        """``root`` is the domain's persistent dir; volumes live in ``root/volumes``.  Volume events (create,
        destroy, prune) go to ``events`` for ``docker events``."""
        self._driver = LocalDriver(root / "volumes")
        self._image_view = image_view
        self._events = events
        self._records: dict[str, Record] = {}
        self._pending: dict[str, set[str]] = {}  # volume name -> prepare tokens not yet attached
        self._lock = asyncio.Lock()
        self._seed_locks: dict[str, asyncio.Lock] = {}  # one copy-up at a time per volume
        self._prune_running = False

    # ---------------- start-up ----------------
    async def start(self, known_containers: Iterable[str]) -> None:
        """Load the records; forget references of containers that are gone; (un)mount to match use."""
        known = set(known_containers)
        records = await asyncio.to_thread(self._driver.load_all)
        for record in records.values():
            stale = [cid for cid in record.refs if cid not in known]
            for cid in stale:
                del record.refs[cid]
            if stale:
                await asyncio.to_thread(self._driver.save, record)
            try:
                if record.refs:
                    await asyncio.to_thread(self._driver.mount, record.volume)
                else:
                    await asyncio.to_thread(self._driver.unmount, record.volume)
            except errors.NarwhalError as exc:
                log.warning("volume %s: %s", record.volume.name, exc.message)
        self._records = records
        log.info("%d volumes loaded from %s", len(records), self._driver.root)

    # ---------------- volumes ----------------
    async def create(self, name: str = "", driver: str = "", options: dict[str, str] | None = None,
                     labels: dict[str, str] | None = None) -> Volume:
        """Create a volume; an existing name returns the existing volume (as Docker)."""
        async with self._lock:
            return (await self._create_locked(name, driver, options or {}, labels or {})).volume

    async def _create_locked(self, name: str, driver: str, options: dict[str, str],
                             labels: dict[str, str]) -> Record:
        driver = driver or LOCAL_DRIVER
        if driver != LOCAL_DRIVER:
            raise errors.NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        if not name:
            name = secrets.token_hex(32)
            labels = {**labels, ANONYMOUS_LABEL: ""}
        validate_name(name)
        existing = self._records.get(name)
        if existing is not None:
            return existing
        validate_options(options)
        record = await asyncio.to_thread(self._driver.create, name, labels, options)
        self._records[name] = record
        log.info("volume %s created", name)
        self._publish("create", name, driver=record.volume.driver)
        return record

    def get(self, name: str) -> Volume:
        return self._record(name).volume

    def _record(self, name: str) -> Record:
        record = self._records.get(name)
        if record is None:
            raise errors.NotFound(f"get {name}: no such volume")
        return record

    def users(self, name: str) -> list[str]:
        """Containers using the volume (and creates in flight), sorted."""
        return sorted(set(self._record(name).refs) | self._pending.get(name, set()))

    def list(self, flt: VolumeFilter | None = None) -> list[Volume]:
        flt = flt or VolumeFilter()
        return [r.volume for name, r in sorted(self._records.items()) if self._matches(r, flt)]

    def _matches(self, record: Record, flt: VolumeFilter) -> bool:
        v = record.volume
        if flt.names and not any(_name_matches(term, v.name) for term in flt.names):
            return False
        if flt.drivers and v.driver not in flt.drivers:
            return False
        if flt.labels and not all(_label_matches(term, v.labels) for term in flt.labels):
            return False
        if flt.not_labels and any(_label_matches(term, v.labels) for term in flt.not_labels):
            return False
        in_use = bool(record.refs or self._pending.get(v.name))
        return flt.dangling is None or flt.dangling != in_use

    async def remove(self, name: str, force: bool = False) -> None:
        """Remove an unused volume and its data; ``force`` makes a missing volume a success."""
        async with self._lock:
            record = self._records.get(name)
            if record is None:
                if force:
                    return
                raise errors.NotFound(f"get {name}: no such volume")
            users = self.users(name)
            if users:
                raise errors.Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            await asyncio.to_thread(self._driver.remove, name)
            del self._records[name]
        log.info("volume %s removed", name)
        self._publish("destroy", name, driver=record.volume.driver)

    async def prune(self, flt: VolumeFilter | None = None, all_volumes: bool = False) -> tuple[builtins.list[str], int]:
        """Remove unused local volumes (only anonymous ones unless ``all_volumes``); skips volumes with mount
        options, as their data is not here.  Returns (names removed, bytes reclaimed)."""
        if self._prune_running:
            raise errors.Conflict("a prune operation is already running")
        self._prune_running = True
        try:
            flt = flt or VolumeFilter()
            removed: builtins.list[str] = []
            reclaimed = 0
            async with self._lock:
                for name, record in sorted(self._records.items()):
                    v = record.volume
                    if (v.driver != LOCAL_DRIVER or v.options or self.users(name) or not self._matches(record, flt)
                            or (not all_volumes and not v.anonymous)):
                        continue
                    size = await asyncio.to_thread(self._driver.size, v)
                    try:
                        await asyncio.to_thread(self._driver.remove, name)
                    except errors.NarwhalError as exc:
                        log.warning("prune: volume %s: %s", name, exc.message)
                        continue
                    del self._records[name]
                    removed.append(name)
                    reclaimed += max(size, 0)
                    self._publish("destroy", name, driver=v.driver)
            self._publish("prune", "", reclaimed=str(reclaimed))
            return removed, reclaimed
        finally:
            self._prune_running = False

    async def usage(self) -> dict[str, VolumeUsage]:
        """Size and reference count of every volume (``docker system df -v``)."""
        out: dict[str, VolumeUsage] = {}
        for name, record in list(self._records.items()):
            size = await asyncio.to_thread(self._driver.size, record.volume)
            out[name] = VolumeUsage(size=size, ref_count=len(record.refs) + len(self._pending.get(name, ())))
        return out

    # ---------------- container mounts ----------------
    async def prepare(self, mounts: Sequence[MountSpec], image: Image | None = None,
                      volumes: Iterable[str] = ()) -> MountPlan:
        """Resolve a container's mount requests into host mounts; see the module doc.

        Every VOLUME path of ``image`` and of ``volumes`` (the container's own Config.Volumes: ``-v /path``)
        not mounted by a request gets an anonymous volume.
        """
        specs = [binds.validate(m) for m in mounts]
        targets: set[str] = set()
        for spec in specs:
            if spec.target in targets:
                raise errors.InvalidArgument(f"Duplicate mount point: {spec.target}")
            targets.add(spec.target)
        for path in sorted({*(image.config.volumes if image is not None else ()), *volumes}):
            spec = binds.validate(MountSpec(type=MountType.VOLUME, target=path))
            if spec.target not in targets:
                specs.append(spec)
                targets.add(spec.target)
        plan = MountPlan(mounts=[], token=f"creating-{secrets.token_hex(8)}")
        async with contextlib.AsyncExitStack() as views, CleanupStack() as cleanup:
            cleanup.add("release prepared volumes", lambda: self.discard(plan))
            rootfs: list[Path | None] = []

            async def image_root() -> Path | None:
                if not rootfs:
                    view = self._image_view(image) if self._image_view is not None and image is not None else None
                    rootfs.append(await views.enter_async_context(view) if view is not None else None)
                return rootfs[0]

            for spec in sorted(specs, key=lambda s: s.target.count("/")):
                plan.mounts.append(await self._resolve(spec, plan, image_root))
            cleanup.commit()
        return plan

    async def _resolve(self, spec: MountSpec, plan: MountPlan,
                       image_root: Callable[[], Coroutine[Any, Any, Path | None]]) -> MountPoint:
        if spec.type is MountType.TMPFS:
            return MountPoint(type=MountType.TMPFS, destination=spec.target, mode=spec.mode, rw=not spec.read_only,
                              tmpfs_size=spec.tmpfs_size, tmpfs_mode=spec.tmpfs_mode)
        if spec.type is MountType.BIND:
            source = os.path.normpath(spec.source)
            await asyncio.to_thread(_check_bind_source, source, spec.create_host_path)
            return MountPoint(type=MountType.BIND, destination=spec.target, source=source, mode=spec.mode,
                              rw=not spec.read_only, propagation=spec.propagation or "rprivate")
        async with self._lock:
            record = await self._create_locked(spec.source, spec.volume_driver, dict(spec.volume_options),
                                               dict(spec.volume_labels))
            name = record.volume.name
            if not spec.source:
                plan.created.append(name)
            self._pending.setdefault(name, set()).add(plan.token)
            await asyncio.to_thread(self._driver.mount, record.volume)
        if not spec.no_copy:
            root = await image_root()
            if root is not None:
                async with self._seed_locks.setdefault(name, asyncio.Lock()):
                    await asyncio.to_thread(_seed_if_empty, root, spec.target, Path(record.volume.mountpoint))
        source = record.volume.mountpoint
        if spec.subpath:
            source = await asyncio.to_thread(check_subpath, Path(source), spec.subpath)
        return MountPoint(type=MountType.VOLUME, destination=spec.target, source=source, subpath=spec.subpath,
                          name=name, driver=record.volume.driver, mode=spec.mode, rw=not spec.read_only,
                          anonymous=not spec.source)

    async def attach(self, plan: MountPlan, container_id: str) -> None:
        """The container now exists: its references replace the plan's provisional one (persisted)."""
        async with self._lock:
            for mp in plan.mounts:
                record = self._records.get(mp.name) if mp.type is MountType.VOLUME else None
                if record is None:
                    continue
                record.refs[container_id] = mp.anonymous
                self._pending.get(mp.name, set()).discard(plan.token)
                await asyncio.to_thread(self._driver.save, record)

    async def discard(self, plan: MountPlan) -> None:
        """Undo a prepare whose container was not created: drop its references and its new anonymous volumes."""
        async with self._lock:
            # Every volume the plan's token holds, including one whose mount or copy-up failed halfway.
            held = {name for name, tokens in self._pending.items() if plan.token in tokens}
            for name in sorted(held | set(plan.created)):
                self._pending.get(name, set()).discard(plan.token)
                await self._drop_if_unused(name, remove=name in plan.created)

    async def release(self, container_id: str, remove_anonymous: bool = False) -> None:
        """The container is gone: drop its references; with ``remove_anonymous`` (``docker rm -v``) also remove
        the anonymous volumes it was given, unless another container uses them too.  Idempotent."""
        async with self._lock:
            for name, record in list(self._records.items()):
                if container_id not in record.refs:
                    continue
                anonymous = record.refs.pop(container_id)
                await asyncio.to_thread(self._driver.save, record)
                await self._drop_if_unused(name, remove=remove_anonymous and anonymous)

    async def _drop_if_unused(self, name: str, *, remove: bool) -> None:
        record = self._records.get(name)
        if record is None or record.refs or self._pending.get(name):
            return
        self._pending.pop(name, None)
        try:
            if remove:
                await asyncio.to_thread(self._driver.remove, name)
                del self._records[name]
                self._seed_locks.pop(name, None)
                log.info("volume %s removed with its container", name)
                self._publish("destroy", name, driver=record.volume.driver)
            else:
                await asyncio.to_thread(self._driver.unmount, record.volume)
        except errors.NarwhalError as exc:
            log.warning("volume %s: %s", name, exc.message)

    def _publish(self, action: str, name: str, **attributes: str) -> None:
        if self._events is not None:
            self._events.publish_docker("volume", action, name, attributes)


def _name_matches(term: str, name: str) -> bool:
    if term == name:
        return True
    return bool(goregexp.search(term, name))  # Go regexp semantics, linear time; invalid: no match


def _label_matches(term: str, labels: dict[str, str]) -> bool:
    key, sep, value = term.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _check_bind_source(source: str, create: bool) -> None:
    if os.path.lexists(source):
        return
    if not create:
        raise errors.InvalidArgument(
            f'invalid mount config for type "bind": bind source path does not exist: {source}')
    os.makedirs(source, mode=0o755, exist_ok=True)


def _seed_if_empty(rootfs: Path, target: str, data: Path) -> None:
    """Docker's copy-up: an empty volume gets what the image has at its mount path (owners and modes kept)."""
    if any(data.iterdir()):
        return
    seed_from_rootfs(rootfs, target, data)


def check_subpath(root: Path, subpath: str, must_exist: bool = True) -> str:
    """A volume's subdirectory to mount (VolumeOptions.Subpath), which must exist and stay inside the volume
    even through symlinks.  Checked at create (moby checks only at start, but the container's spec, made
    at create, would create a missing directory) and again at each start.  Blocking."""
    path = root / posixpath.normpath(subpath)
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise errors.InvalidArgument(f"subpath {subpath!r} leaves the volume")
    if must_exist and not resolved.exists():
        raise errors.InvalidArgument(f"cannot access path {path}: no such file or directory")
    return str(path)
