"""Removing cgroups in every hierarchy, and finding leftovers under a parent (for leak GC).

runc removes a container's cgroups on delete, but a crash between steps (or
a sandbox cgroup made by narwhald itself) can leave empty directories in
some hierarchies.  Removal is idempotent and refuses, with
FailedPrecondition, a cgroup that still holds processes.
"""
from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from pkg import errors
from pkg.cgroups.fs import Hierarchies, _join, host

_BUSY_RETRIES = 25
_BUSY_DELAY = 0.02


def _remove_tree(path: Path) -> None:
    """rmdir ``path`` and its child cgroups, deepest first (cgroup files vanish with their directory)."""
    if not path.is_dir():
        return
    for dirpath, dirnames, _ in os.walk(path, topdown=False):
        for name in dirnames:
            _rmdir(Path(dirpath) / name)
    _rmdir(path)


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def cgroup_dirs(cgroup: str, h: Hierarchies | None = None) -> list[Path]:
    """The existing directories of ``cgroup`` across all hierarchies."""
    h = h or host()
    return [d for d in (_join(root, cgroup) for root in h.all_roots()) if d.is_dir()]


def cgroup_pids(cgroup: str, h: Hierarchies | None = None) -> set[int]:
    """Processes in ``cgroup`` or below, in any hierarchy."""
    pids: set[int] = set()
    for directory in cgroup_dirs(cgroup, h):
        for dirpath, _, filenames in os.walk(directory):
            if "cgroup.procs" in filenames:
                try:
                    pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
                except (FileNotFoundError, ValueError):
                    continue
    return pids


async def remove_cgroup(cgroup: str, h: Hierarchies | None = None) -> None:
    """Remove ``cgroup`` (and empty children) from every hierarchy; a missing cgroup is success.

    Processes that just exited can keep a cgroup busy for a moment, so EBUSY
    is retried briefly before FailedPrecondition.
    """
    h = h or host()
    if cgroup.strip("/") == "":
        raise errors.InvalidArgument("refusing to remove the root cgroup")
    for attempt in range(_BUSY_RETRIES):
        try:
            for directory in await asyncio.to_thread(cgroup_dirs, cgroup, h):
                await asyncio.to_thread(_remove_tree, directory)
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise errors.Internal(f"removing cgroup {cgroup}: {err}") from err
            if attempt == _BUSY_RETRIES - 1:
                pids = await asyncio.to_thread(cgroup_pids, cgroup, h)
                raise errors.FailedPrecondition(
                    f"cgroup {cgroup} is still in use (processes {sorted(pids)[:10]})"
                ) from err
            await asyncio.sleep(_BUSY_DELAY)


def list_children(parent: str, h: Hierarchies | None = None) -> list[str]:
    """Paths of the child cgroups of ``parent`` in any hierarchy (blocking; small directory scans)."""
    names: set[str] = set()
    for directory in cgroup_dirs(parent, h):
        with os.scandir(directory) as entries:
            names.update(e.name for e in entries if e.is_dir(follow_symlinks=False))
    base = "/" + parent.strip("/")
    return sorted(f"{base.rstrip('/')}/{name}" for name in names)
