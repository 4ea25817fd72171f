"""The one libc binding: mount(2), umount2(2), unshare(2), setns(2), without a subprocess on the hot path of
pod start and stop (namespace pins in pkg.cni.netns, /dev/shm of a sandbox, cleanup's unmounts).

``sys_*`` raise OSError with the errno (callers that translate it themselves); ``mount``/``umount`` raise the
pkg error taxonomy."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
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
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
# Every pointer argument is a NUL-terminated string or NULL (None): fstype and data may be NULL for a bind.
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def sys_mount(source: str, target: Path, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), str(target).encode(), fstype.encode() if fstype is not None else None,
                       flags, data.encode() if data else None), f"mount {source} on {target}")


def sys_umount(target: Path, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(str(target).encode(), flags), f"umount {target}")


def unshare(flags: int) -> None:
    """Only the calling thread moves (pkg.cni.netns runs it on a thread of its own)."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    try:
        sys_mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise errors.Internal(f"mount {source} on {target} ({fstype}): {os.strerror(exc.errno or 0)}") from None


def umount(target: Path) -> None:
    """Lazily unmount; a path that is not mounted (or is gone) is fine."""
    try:
        sys_umount(target)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point; gone
            raise errors.Internal(f"umount {target}: {os.strerror(exc.errno or 0)}") from None


def _mount_points() -> list[str]:
    """Mount points of /proc/self/mountinfo (a space in a path is written \\040 there)."""
    try:
        with open("/proc/self/mountinfo") as info:
            return [line.split()[4].replace("\\040", " ") for line in info]
    except OSError:
        return []


def is_mounted(target: Path) -> bool:
    needle = str(target)
    return needle in _mount_points()


def mounts_under(prefix: Path) -> list[Path]:
    base = str(prefix).rstrip("/") + "/"
    return [Path(p) for p in _mount_points() if p.startswith(base)]
