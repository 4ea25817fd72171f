"""docker diff: what a container changed, read from its overlay upper dir (moby's OverlayChanges).

A whiteout (a 0/0 character device) is a deletion; anything else in the
upper dir is a modification when a lower layer has that path and an addition
otherwise.  A directory copied up only because something under it changed
(same type, mode and owner as below) is reported once, as the modified parent
of that change, as moby does.  Mount points the runtime creates at start (the files
Docker keeps in its init layer) are not the container's changes and are left
out.
"""
from __future__ import annotations

import asyncio
import enum
import os
import posixpath
import stat
from dataclasses import dataclass

from pkg import errors
from pkg.containerd import snapshots as ctr_snapshots
from pkg.runtime.context import RuntimeContext

# What Docker's init layer holds: created for the runtime, not by the container.
_RUNTIME_PATHS = frozenset({
    "/.dockerenv", "/dev", "/dev/console", "/dev/pts", "/dev/shm", "/dev/mqueue", "/proc", "/sys", "/sys/fs",
    "/sys/fs/cgroup", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/mtab",
})


class ChangeKind(enum.IntEnum):
    MODIFIED = 0
    ADDED = 1
    DELETED = 2


@dataclass(frozen=True)
class Change:
    path: str
    kind: ChangeKind


def _layers(mounts: list[ctr_snapshots.Mount]) -> tuple[str, list[str]]:
    if len(mounts) != 1:
        raise errors.NotImplementedYet(f"cannot read changes of a snapshot of {len(mounts)} mounts")
    m = mounts[0]
    if m.type == "bind":  # a snapshot with no parent: everything in it was added
        return m.source, []
    upper = next((o.split("=", 1)[1] for o in m.options if o.startswith("upperdir=")), "")
    lower = next((o.split("=", 1)[1] for o in m.options if o.startswith("lowerdir=")), "")
    if not upper:
        raise errors.FailedPrecondition("the container's snapshot has no writable layer")
    return upper, [p for p in lower.split(":") if p]


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lower_stat(lowers: list[str], rel: str) -> os.stat_result | None:
    for layer in lowers:
        try:
            return os.lstat(os.path.join(layer, rel.lstrip("/")))
        except OSError:
            continue
    return None


def _runtime_mount_point(path: str, st: os.stat_result) -> bool:
    if path not in _RUNTIME_PATHS:
        return False
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return st.st_size == 0 or stat.S_ISDIR(st.st_mode)
    return False


def overlay_changes(upper: str, lowers: list[str]) -> list[Change]:
    """Blocking: walks the upper dir depth-first in lexical order (the order ``docker diff`` shows)."""
    changes: list[Change] = []
    changed_dirs: set[str] = set()

    def visit(path: str, st: os.stat_result) -> None:
        lower = _lower_stat(lowers, path)
        if _is_whiteout(st):
            kind = ChangeKind.DELETED
        elif lower is None:
            if _runtime_mount_point(path, st):
                return
            kind = ChangeKind.ADDED
        else:
            if (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(lower.st_mode) and st.st_mode == lower.st_mode
                    and (st.st_uid, st.st_gid) == (lower.st_uid, lower.st_gid)):
                return  # copied up for a change below it (its mtime moved with it): reported as that parent
            kind = ChangeKind.MODIFIED
        if stat.S_ISDIR(st.st_mode):
            changed_dirs.add(path)
        parent = posixpath.dirname(path)
        if parent != "/" and parent not in changed_dirs:
            changes.append(Change(parent, ChangeKind.MODIFIED))
            changed_dirs.add(parent)
        changes.append(Change(path, kind))

    def walk(host_dir: str, path: str) -> None:
        try:
            names = sorted(os.listdir(host_dir))
        except OSError:
            return
        for name in names:
            host = os.path.join(host_dir, name)
            try:
                st = os.lstat(host)
            except OSError:
                continue
            child = posixpath.join(path, name)
            visit(child, st)
            if stat.S_ISDIR(st.st_mode):
                walk(host, child)

    walk(upper, "/")
    return changes


async def container_changes(ctx: RuntimeContext, container_id: str) -> list[Change]:
    metadata, _ = ctx.containers.get(container_id)
    mounts = await ctr_snapshots.mounts(ctx.client, metadata.snapshot_key)
    upper, lowers = _layers(mounts)
    return await asyncio.to_thread(overlay_changes, upper, lowers)
