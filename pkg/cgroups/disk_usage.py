"""Bytes and inodes used by a directory tree: a container's writable layer (the snapshot's upper dir).

Counted as allocated blocks (``st_blocks * 512``, what ``du`` shows), each
hard-linked inode once, without crossing into other filesystems.  The walk
can take a while on a big layer, so it runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pkg import errors


@dataclass(frozen=True)
class DiskUsage:
    bytes: int
    inodes: int


def directory_usage_sync(path: str | Path) -> DiskUsage:
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        raise errors.NotFound(f"directory {path} not found") from None
    if not stat.S_ISDIR(top.st_mode):
        raise errors.InvalidArgument(f"{path} is not a directory")
    seen: set[int] = set()
    total, inodes = top.st_blocks * 512, 1
    stack = [os.fspath(path)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # changed under us (the container is running): count what is there
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_dev != top.st_dev:
                continue
            if st.st_nlink > 1:
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512
            inodes += 1
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return DiskUsage(bytes=total, inodes=inodes)


async def directory_usage(path: str | Path) -> DiskUsage:
    """Usage of the tree at ``path``; NotFound when it does not exist."""
    return await asyncio.to_thread(directory_usage_sync, path)
