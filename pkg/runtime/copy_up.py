"""Seed a volume with what an image (or container) has at its mount path, without following any symlink.

Both trees may be changed while the copy runs: a volume can be shared with
a running container, which can swap a directory for a symlink to host
``/etc`` between two steps.  So nothing here takes a path below the two
roots: every step is relative to an open directory fd (``openat``,
``mkdirat``, ``fchown``...), every open is ``O_NOFOLLOW``, every creation
``O_EXCL``, and what was opened is checked by ``fstat`` before it is used.
A swap then makes the copy fail (ELOOP, ENOTDIR, EEXIST); it never reaches
outside the volume.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from pkg.runtime.user import secure_join

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


def seed_volume(rootfs: Path, dest: str, target: Path) -> None:
    """Copy ``rootfs``'s directory at ``dest`` (resolved inside ``rootfs``) into the directory ``target``."""
    src = secure_join(rootfs, dest)
    try:
        src_fd = os.open(src, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there, or not a directory: nothing to seed
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink since it was resolved
            return
        raise
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, src_fd)
        dst_fd = os.open(target, _DIR_FLAGS)
        stack.callback(os.close, dst_fd)
        _copy_dir(src_fd, dst_fd)
        _set_attrs(dst_fd, os.fstat(src_fd))


def _copy_dir(src_fd: int, dst_fd: int) -> None:
    for name in sorted(os.listdir(src_fd)):
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst_fd)
            child_src = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
            try:
                child_dst = os.open(name, _DIR_FLAGS, dir_fd=dst_fd)
                try:
                    _copy_dir(child_src, child_dst)
                    _set_attrs(child_dst, os.fstat(child_src))
                finally:
                    os.close(child_dst)
            finally:
                os.close(child_src)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(src_fd, dst_fd, name)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_fd, follow_symlinks=False)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(name, 0o600, dir_fd=dst_fd)
            # Opening a FIFO for reading without O_NONBLOCK would wait for a writer.
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_fd)
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    _set_attrs(fd, st)
            finally:
                os.close(fd)
        # Device nodes and sockets are not carried over.


def _copy_file(src_fd: int, dst_fd: int, name: str) -> None:
    fd_in = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        st = os.fstat(fd_in)
        if not stat.S_ISREG(st.st_mode):
            return  # swapped for a device node or FIFO since it was listed: never read one
        fd_out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dst_fd)
        try:
            while chunk := os.read(fd_in, _CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd_out, view):]
            _set_attrs(fd_out, st)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _set_attrs(fd: int, st: os.stat_result) -> None:
    """Owner first (chown clears set-id bits), then mode and times, all on the open fd."""
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
