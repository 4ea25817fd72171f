"""What a container's spec needs from its image's files, kept per chain ID so the next container of the image
needs no view of its snapshot.

Building a spec reads the image's /etc/passwd and /etc/group (users, groups, the Merge policy's supplementary
groups) through a read-only mount of the freshly prepared snapshot.  A fresh snapshot of a chain ID holds exactly
the image's layers, which never change for that ID, so the files read once stand for every later container of
the image: its spec can then be built, and its record created, while Snapshots.Prepare is still on its way
(pkg.runtime.containers).  Images with VOLUMEs still need the view (their volumes are seeded from it), and files
that could not be read, or are large, are not kept: those containers take the mounted path, which reports the
error as before.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from pkg.errors import InvalidArgument
from pkg.runtime.user import ImageFiles, read_rootfs_file

MAX_IMAGES = 128  # chain IDs kept (least recently used goes first)
MAX_FILE_CHARS = 64 << 10  # a larger /etc/passwd or /etc/group is read from the view every time


def read(rootfs: Path) -> ImageFiles | None:
    """The two files of the view at ``rootfs``, or None when one cannot be read or is too large to keep."""
    try:
        passwd = read_rootfs_file(rootfs, "/etc/passwd")
        group = read_rootfs_file(rootfs, "/etc/group")
    except InvalidArgument:
        return None
    if any(text is not None and len(text) > MAX_FILE_CHARS for text in (passwd, group)):
        return None
    return ImageFiles(passwd=passwd, group=group)


class ImageFilesCache:
    """Per (snapshotter, chain ID): the image's files as ``read`` found them."""

    def __init__(self, capacity: int = MAX_IMAGES) -> None:
        self._capacity = capacity
        self._files: OrderedDict[tuple[str, str], ImageFiles] = OrderedDict()

    def get(self, snapshotter: str, chain_id: str) -> ImageFiles | None:
        key = (snapshotter, chain_id)
        files = self._files.get(key)
        if files is not None:
            self._files.move_to_end(key)
        return files

    def put(self, snapshotter: str, chain_id: str, files: ImageFiles | None) -> None:
        if files is None or not chain_id:
            return
        self._files[(snapshotter, chain_id)] = files
        self._files.move_to_end((snapshotter, chain_id))
        while len(self._files) > self._capacity:
            self._files.popitem(last=False)

    def __len__(self) -> int:
        return len(self._files)
