"""mount(2)/umount2(2) through libc: no subprocess on the hot path of pod start and stop."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from pkg import errors

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    rc = _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, data.encode() or None)
    if rc != 0:
        err = ctypes.get_errno()
        raise errors.Internal(f"mount {source} on {target} ({fstype}): {os.strerror(err)}")


def umount(target: Path) -> None:
    """Lazily unmount; a path that is not mounted (or is gone) is fine."""
    rc = _libc.umount2(str(target).encode(), MNT_DETACH)
    if rc != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise errors.Internal(f"umount {target}: {os.strerror(err)}")


def is_mounted(target: Path) -> bool:
    needle = str(target)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == needle for line in info)


def mounts_under(prefix: Path) -> list[Path]:
    base = str(prefix).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as info:
        return [Path(p) for p in (line.split()[4] for line in info) if p.startswith(base)]
