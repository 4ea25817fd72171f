"""Tar helper run as a subprocess chrooted into a container's filesystem (docker cp, export).

Why a chrooted subprocess: inside the chroot every symlink (absolute ones
included) resolves within the container, so neither a crafted archive nor a
container's own links can make narwhald read or write host files (moby's
chrootarchive does the same); and the tar work stays off the event loop.

Stdlib only, run as ``python -I rootfs_tar.py``::

    tar ROOT DIR BASE REBASE [--skip PATH]...   # write a tar of DIR/BASE (named REBASE) to stdout
    export ROOT [--skip PATH]...                # the whole tree, entries named without a leading "./"
    untar ROOT DEST [--no-overwrite-dir-non-dir] [--chown UID:GID]   # extract stdin into DEST

``--skip`` keeps a directory's own entry but not its contents (a live
container's /proc, /sys, /dev).  Failures exit 2 with one JSON line on stderr:
{"kind": pkg.errors kind, "message": ...}.

Nothing of the container may run as this (host root) process: owners are
numbers only (no ``pwd``/``grp`` lookup, which would load the container's
``libnss_*.so`` through its nsswitch.conf: CVE-2019-14271), every module is
imported before the chroot and file-based imports are switched off after it
(a container's ``/usr/lib/python3.11/lzma.py`` is never read), and the
process first moves to fresh network/IPC/UTS namespaces and keeps only the
file capabilities the copy needs (no CAP_SYS_ADMIN, CAP_NET_ADMIN,
CAP_SYS_CHROOT...).  Regular files are opened ``O_NOFOLLOW|O_NONBLOCK`` and
checked by ``fstat`` (read) or created ``O_CREAT|O_EXCL|O_NOFOLLOW`` (write),
so a device node or FIFO swapped in by the container is never read, written
or waited on.
"""
from __future__ import annotations

import bz2  # noqa: F401  -- tarfile imports the decompressors lazily: do it before the chroot
import ctypes
import encodings.ascii  # noqa: F401
import encodings.latin_1  # noqa: F401
import encodings.utf_8  # noqa: F401
import errno
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import shutil
import stat
import sys
import tarfile
import zlib  # noqa: F401
from importlib import machinery
from typing import IO

# Never resolve owners by name: glibc would consult the container's nsswitch.conf and load its NSS modules.
tarfile.pwd = None  # type: ignore[attr-defined]
tarfile.grp = None  # type: ignore[attr-defined]

_CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWNET = 0x04000000, 0x08000000, 0x40000000
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_SET_KEEPCAPS = 24, 38, 8
_CAP_LAST = 63
# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID, CAP_MKNOD: reading and writing
# files of any owner, with their owners, modes and device nodes -- nothing else.
_KEEP_CAPS = (0, 1, 2, 3, 4, 27)
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_DEVNULL = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)  # the container's /dev/null is not ours to open

_KINDS = {errno.ENOENT: "not_found", errno.ENOTDIR: "not_found", errno.EROFS: "permission_denied",
          errno.EACCES: "permission_denied", errno.EPERM: "permission_denied", errno.ENOSPC: "resource_exhausted",
          errno.EEXIST: "conflict", errno.ELOOP: "conflict"}


class Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _write_tree(out: IO[bytes], start: list[tuple[str, str]], skip: set[str]) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        stack = list(reversed(start))
        while stack:
            path, arcname = stack.pop()
            info = tar.gettarinfo(path, arcname)
            if info is None:  # sockets are not archived
                continue
            if info.isreg():
                _add_regular(tar, path, arcname)
            else:
                tar.addfile(info)
            if info.isdir() and os.path.abspath(path) not in skip:
                children = sorted(os.listdir(path), reverse=True)
                stack.extend((os.path.join(path, name), f"{arcname}/{name}") for name in children)


def _add_regular(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    """Archive a file that lstat called regular, from what was opened: a device node or FIFO swapped in
    meanwhile is skipped, never read (nor waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return  # removed or swapped for a symlink/socket since it was listed
        raise
    with os.fdopen(fd, "rb") as f:
        info = tar.gettarinfo(arcname=arcname, fileobj=f)
        if info is None or not info.isreg():
            return
        tar.addfile(info, f)


def cmd_tar(directory: str, base: str, rebase: str, skip: set[str]) -> None:
    os.chdir(directory)
    _write_tree(sys.stdout.buffer, [(base, rebase)], skip)


def cmd_export(skip: set[str]) -> None:
    os.chdir("/")
    _write_tree(sys.stdout.buffer, [("/" + name, name) for name in sorted(os.listdir("/"))], skip)


def _clean(name: str) -> str:
    """An archive member's path relative to the extraction point; refuses one that climbs out of it."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise Refused("invalid_argument", f"invalid archive member {name!r}: it leaves the destination")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def _extract_regular(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    """Create the file anew (O_EXCL|O_NOFOLLOW): never write through a symlink, device node or FIFO the
    container put there after the old file was unlinked."""
    os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused("conflict", f"{target} is not a regular file")
        source = tar.extractfile(member)
        if source is not None:
            shutil.copyfileobj(source, out, 1024 * 1024)
        out.flush()
        os.fchown(fd, member.uid, member.gid)  # numeric: names are never looked up
        os.fchmod(fd, member.mode & 0o7777)
        os.utime(fd, (member.mtime, member.mtime))


def cmd_untar(dest: str, no_overwrite_dir_non_dir: bool, chown: tuple[int, int] | None) -> None:
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        raise Refused("not_found", f"Could not find the file {dest} in container") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Refused("invalid_argument", "extraction point is not a directory")
    dirs: list[tarfile.TarInfo] = []
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
        for member in tar:
            name = _clean(member.name)
            if not name:
                continue
            member.name = name
            if member.islnk():
                member.linkname = _clean(member.linkname)
            target = os.path.join(dest, name)
            try:
                existing = os.lstat(target)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                is_dir = stat.S_ISDIR(existing.st_mode)
                if no_overwrite_dir_non_dir and is_dir and not member.isdir():
                    raise Refused("invalid_argument",
                                  f'cannot overwrite directory "{target}" with non-directory "{name}"')
                if no_overwrite_dir_non_dir and not is_dir and member.isdir():
                    raise Refused("invalid_argument",
                                  f'cannot overwrite non-directory "{target}" with directory "{name}"')
                if is_dir and not member.isdir():
                    shutil.rmtree(target)
                elif not is_dir:
                    os.unlink(target)  # never write through an existing file or symlink
            if chown is not None:
                member.uid, member.gid = chown
            if member.isreg():
                _extract_regular(tar, member, target)
            else:
                tar.extract(member, dest, numeric_owner=True, filter="fully_trusted")
            if member.isdir():
                dirs.append(member)
    # Directory times last: extracting their children changed them.
    for member in reversed(dirs):
        path = os.path.join(dest, member.name)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def main(argv: list[str]) -> int:
    try:
        command, root, rest = argv[0], argv[1], argv[2:]
        skip = {os.path.normpath(rest[i + 1]) for i, arg in enumerate(rest[:-1]) if arg == "--skip"}
        _isolate()
        os.chroot(root)
        os.chdir("/")
        _drop_privileges()
        if command == "tar":
            cmd_tar(rest[0], rest[1], rest[2], skip)
        elif command == "export":
            cmd_export(skip)
        elif command == "untar":
            chown = None
            if "--chown" in rest:
                uid, gid = rest[rest.index("--chown") + 1].split(":")
                chown = (int(uid), int(gid))
            cmd_untar(rest[0], "--no-overwrite-dir-non-dir" in rest, chown)
        else:
            raise Refused("invalid_argument", f"unknown command {command!r}")
        sys.stdout.flush()
    except Refused as exc:
        _fail(exc.kind, str(exc))
        return 2
    except tarfile.TarError as exc:
        _fail("invalid_argument", f"invalid tar archive: {exc}")
        return 2
    except BrokenPipeError:
        # The reader went away (client disconnected): nothing to report, and no second error at exit.
        os.dup2(_DEVNULL, sys.stdout.fileno())
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(_KINDS.get(exc.errno or 0, "internal"), f"{exc.strerror}{where}")
        return 2
    return 0


def _isolate() -> None:
    """Leave the host's network, IPC and UTS namespaces: even code that did run here could not see or touch
    the host's interfaces."""
    if _libc.unshare(_CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EPERM, errno.EINVAL):  # an unprivileged test run: nothing to leave
            raise OSError(err, os.strerror(err), "unshare")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_privileges() -> None:
    """After the chroot: no module from the container's tree can be imported, and only the file
    capabilities of _KEEP_CAPS remain (in the bounding set too), with no_new_privs."""
    sys.path[:] = []
    sys.path_importer_cache.clear()
    sys.meta_path[:] = [f for f in sys.meta_path if f in (machinery.BuiltinImporter, machinery.FrozenImporter)]
    if os.geteuid() != 0:
        return
    for cap in range(_CAP_LAST + 1):
        if cap not in _KEEP_CAPS and _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the kernel's last capability
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "PR_CAPBSET_DROP")
    mask = sum(1 << cap for cap in _KEEP_CAPS)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)(_CapData(mask, mask, 0), _CapData(0, 0, 0))
    if _libc.capset(ctypes.byref(header), data) != 0 or _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "capset")


def _fail(kind: str, message: str) -> None:
    sys.stderr.write(json.dumps({"kind": kind, "message": message}) + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
