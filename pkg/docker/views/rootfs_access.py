"""Reach a container's (or an image's) files from the host: for docker cp, export, diff and volume copy-up.

A running container is reached through ``/proc/<pid>/root``: its own mount
namespace, volumes and binds included, and writes land where the container
would see them.  A stopped or created one gets its snapshot mounted under
``<state>/views`` with its bind mounts (volumes, binds, /etc/hosts...) on top,
as moby mounts a container's volumes for archive calls; the container's lock
is held meanwhile, so it cannot start (or be removed) under the view.  Export
reads the snapshot alone, read-only, with the writable layer stacked as a
lower layer, so it never mounts an upper dir a running container is using.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import posixpath
import secrets
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.containerd import containers as ctr_containers
from pkg.containerd import leases
from pkg.containerd import snapshots as ctr_snapshots
from pkg.containerd.client import Client
from pkg.images import content
from pkg.images.model import Image
from pkg.model.state import ContainerState
from pkg.mount import MS_BIND, MS_RDONLY, MS_REC, mount, mounts_under, umount
from pkg.runtime.container_spec import readonly_view
from pkg.runtime.context import RuntimeContext
from pkg.runtime.user import secure_join

log = logging.getLogger(__name__)

MS_REMOUNT = 0x20
VIEWS_DIR = "views"


@dataclass(frozen=True)
class SpecMount:
    """A mount of the container's OCI spec."""

    destination: str
    type: str
    source: str
    readonly: bool


@dataclass(frozen=True)
class RootfsView:
    root: Path  # the host path that is the container's "/"
    mounts: tuple[SpecMount, ...]
    live: bool  # True: the running container's own view (/proc/<pid>/root)
    readonly_rootfs: bool = False  # the container runs with a read-only root (docker run --read-only)

    def mount_at(self, container_path: str) -> SpecMount | None:
        """The innermost of the container's mounts holding ``container_path``."""
        best: SpecMount | None = None
        for m in self.mounts:
            dest = m.destination.rstrip("/") or "/"
            if container_path == dest or container_path.startswith(dest + "/"):
                if best is None or len(dest) >= len(best.destination):
                    best = m
        return best


def spec_mounts(spec: dict[str, Any]) -> tuple[SpecMount, ...]:
    out = []
    for m in spec.get("mounts") or ():
        options = m.get("options") or []
        out.append(SpecMount(destination=posixpath.normpath(str(m.get("destination", "/"))),
                             type=str(m.get("type") or ""), source=str(m.get("source") or ""),
                             readonly="ro" in options or "rro" in options))
    return tuple(out)


@contextlib.asynccontextmanager
async def image_view(client: Client, image: Image) -> AsyncIterator[Path | None]:
    """An image's root filesystem, read-only, for the duration (a containerd View under a short lease)."""
    key = f"narwhal-view-{secrets.token_hex(8)}"
    async with leases.lease(client, "view", expire=dt.timedelta(hours=1)) as lease_id:
        mounts = await ctr_snapshots.view(client, key, image.chain_id, image.snapshotter,
                                          metadata=content.lease_md(lease_id), what=f"view of image {image.id}")
        try:
            async with readonly_view(mounts) as root:
                yield root
        finally:
            await ctr_snapshots.remove(client, key, image.snapshotter)


def _pin_live_root(state: ContainerState, pid: int) -> int | None:
    """An O_PATH descriptor of the running container's root, or None when it is not running (any more).

    Held for the whole operation: a container that exits meanwhile (``docker cp`` right after a short
    command) takes its mount namespace, and ``/proc/<pid>/root`` with it, but not a root we hold open.
    """
    if state != ContainerState.RUNNING or pid <= 0:
        return None
    try:
        return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


@contextlib.asynccontextmanager
async def container_view(ctx: RuntimeContext, container_id: str, *, writable: bool) -> AsyncIterator[RootfsView]:
    """The container's filesystem as it sees it (see the module doc); ``writable`` for extracting into it."""
    metadata, status = ctx.containers.get(container_id)
    record = await ctr_containers.get(ctx.client, container_id)
    mounts = spec_mounts(record.spec)
    readonly = bool((record.spec.get("root") or {}).get("readonly"))
    pinned = _pin_live_root(status.state, status.pid)
    if pinned is None:
        async with ctx.containers.lock(container_id):
            metadata, status = ctx.containers.get(container_id)
            pinned = _pin_live_root(status.state, status.pid)
            if pinned is None:
                snapshot = await ctr_snapshots.mounts(ctx.client, metadata.snapshot_key)
                # Held under the container's lock, so nothing else mounts this snapshot's upper dir: mount it
                # writable even to read, and make the mount points runc would make (moby's mountVolumes does too).
                async with _mounted(ctx, snapshot, mounts, writable=True, writable_binds=writable) as view_root:
                    yield RootfsView(view_root, mounts, live=False, readonly_rootfs=readonly)
                return
    try:
        # The descriptor's path in narwhald's /proc: the tar helper (root, a child) resolves it too.
        yield RootfsView(Path(f"/proc/{os.getpid()}/fd/{pinned}"), mounts, live=True, readonly_rootfs=readonly)
    finally:
        os.close(pinned)


@contextlib.asynccontextmanager
async def snapshot_view(ctx: RuntimeContext, container_id: str) -> AsyncIterator[Path]:
    """The container's own root filesystem (image plus its changes, no volumes), read-only: for export."""
    metadata, _ = ctx.containers.get(container_id)
    snapshot = await ctr_snapshots.mounts(ctx.client, metadata.snapshot_key)
    async with _mounted(ctx, snapshot, (), writable=False, writable_binds=False) as root:
        yield root


@contextlib.asynccontextmanager
async def _mounted(ctx: RuntimeContext, snapshot: list[ctr_snapshots.Mount], mounts: tuple[SpecMount, ...],
                   *, writable: bool, writable_binds: bool) -> AsyncIterator[Path]:
    if len(snapshot) != 1:
        raise errors.NotImplementedYet(f"cannot view a snapshot of {len(snapshot)} mounts")
    target = ctx.state / VIEWS_DIR / secrets.token_hex(8)
    target.mkdir(parents=True, mode=0o700)
    stack: list[Path] = []
    try:
        _mount_snapshot(snapshot[0], target, writable=writable)
        stack.append(target)
        for m in sorted(mounts, key=lambda m: m.destination.count("/")):
            point = _bind_container_mount(target, m, writable=writable_binds, make_mount_point=writable)
            if point is not None:
                stack.append(point)
        yield target
    finally:
        for point in reversed(stack):
            try:
                umount(point)
            except errors.NarwhalError as exc:
                log.warning("view of a container: %s", exc.message)
        with contextlib.suppress(OSError):
            target.rmdir()


def _mount_snapshot(m: ctr_snapshots.Mount, target: Path, *, writable: bool) -> None:
    if m.type == "bind":
        mount(m.source, target, "", MS_BIND | MS_REC)
        if not writable or "ro" in m.options:
            mount("", target, "", MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT)
        return
    options = [o for o in m.options if o not in ("rw", "ro")]
    if writable:
        mount(m.source, target, m.type, 0, ",".join(options))
        return
    # Read-only: the upper dir becomes the top lower layer (whiteouts still apply); no upper, no work dir.
    upper = next((o.split("=", 1)[1] for o in options if o.startswith("upperdir=")), "")
    lower = next((o.split("=", 1)[1] for o in options if o.startswith("lowerdir=")), "")
    kept = [o for o in options if not o.startswith(("upperdir=", "workdir=", "lowerdir="))]
    layers = ":".join(p for p in (upper, lower) if p)
    if ":" not in layers:  # overlayfs needs two lower layers without an upper one
        mount(layers, target, "", MS_BIND)
        mount("", target, "", MS_BIND | MS_RDONLY | MS_REMOUNT)
        return
    mount(m.type, target, m.type, MS_RDONLY, ",".join([f"lowerdir={layers}", *kept]))


def _bind_container_mount(root: Path, m: SpecMount, *, writable: bool, make_mount_point: bool) -> Path | None:
    """Bind one of the container's bind mounts into the view; skipped when it cannot be placed.

    The mount point is opened component by component (``O_PATH|O_NOFOLLOW``) and mounted on through
    ``/proc/self/fd/N``: a directory of a shared volume swapped for a symlink after it was resolved makes
    the open fail, it never moves the mount onto a host path.
    """
    if m.type != "bind" and "bind" not in m.type:
        return None
    try:
        src = os.stat(m.source)
        point = secure_join(root, m.destination)
        if make_mount_point and not os.path.lexists(point):
            if stat.S_ISDIR(src.st_mode):
                os.makedirs(point, mode=0o755)
            else:
                os.makedirs(point.parent, mode=0o755, exist_ok=True)
                point.touch(mode=0o644)
        if point == root:
            return None
        parent_fd = _open_beneath(root, point.parent.relative_to(root).parts)
    except (OSError, ValueError):
        return None  # a source that is gone, or a mount point that cannot be made: nothing to show
    try:
        try:
            fd = os.open(point.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError:
            return None
        try:
            if stat.S_ISDIR(src.st_mode) != stat.S_ISDIR(os.fstat(fd).st_mode) or \
                    stat.S_ISLNK(os.fstat(fd).st_mode):
                return None
            mount(m.source, Path(f"/proc/self/fd/{fd}"), "", MS_BIND | MS_REC)
        finally:
            os.close(fd)
        if m.readonly or not writable:
            # Looked up again from the held parent: the name now crosses into the new mount.
            top = os.open(point.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            try:
                mount("", Path(f"/proc/self/fd/{top}"), "", MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT)
            finally:
                os.close(top)
    finally:
        os.close(parent_fd)
    return point


def _open_beneath(root: Path, parts: tuple[str, ...]) -> int:
    """An ``O_PATH`` fd of root/parts, refusing any symlink on the way (the path was already resolved)."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in parts:
        try:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def sweep_views(state: Path) -> None:
    """Unmount and remove views a crashed narwhald left behind (blocking; run at start-up in a thread)."""
    base = state / VIEWS_DIR
    if not base.is_dir():
        return
    for point in sorted(mounts_under(base), key=lambda p: len(str(p)), reverse=True):
        with contextlib.suppress(errors.NarwhalError):
            umount(point)
    # rmdir, never rmtree: a view still mounted must not have the container's files deleted through it.
    for entry in base.iterdir():
        with contextlib.suppress(OSError):
            entry.rmdir()
