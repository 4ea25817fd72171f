"""Disk usage of the image directories (CRI ImageFsInfo, Docker /system/df).

Separate from pkg.images.service because it is a plain walk of the host's filesystem (blocks and inodes,
hard links counted once), run in a thread; it knows nothing of images, containerd or names.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


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
