"""Disk usage of the image directories (CRI ImageFsInfo, Docker /system/df), and its short-lived cache.

Separate from pkg.images.service because it is a plain walk of the host's filesystem (blocks and inodes,
hard links counted once), run in a thread; it knows nothing of images, containerd or names.  kubelet asks
often and a walk of the snapshotter's dir is not cheap: a result serves for a few seconds, or until the
service says the images changed.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

FS_INFO_TTL = 5.0


@dataclass(frozen=True)
class FsUsage:
    """Disk usage of one directory tree (for CRI ImageFsInfo and Docker /system/df)."""

    mountpoint: str
    used_bytes: int
    inodes_used: int
    timestamp_ns: int


def usage(path: Path) -> FsUsage:
    """Bytes (allocated blocks) and inodes under ``path``, each inode once; a file gone mid-walk is skipped."""
    used = inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            used += st.st_blocks * 512
            inodes += 1
    return FsUsage(str(path), used, inodes, time.time_ns())


class UsageCache:
    """The last walk's result, for ``ttl`` seconds or until ``invalidate`` (a pull, import or removal)."""

    def __init__(self, ttl: float = FS_INFO_TTL) -> None:
        self._ttl = ttl
        self._cached: tuple[float, list[FsUsage]] | None = None

    def invalidate(self) -> None:
        self._cached = None

    async def get(self, dirs: list[Path]) -> list[FsUsage]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._ttl:
            return self._cached[1]
        result = await asyncio.to_thread(lambda: [usage(d) for d in dirs])
        self._cached = (now, result)
        return result
