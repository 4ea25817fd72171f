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
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
import tarfile
from typing import IO

_KINDS = {errno.ENOENT: "not_found", errno.ENOTDIR: "not_found", errno.EROFS: "permission_denied",
          errno.EACCES: "permission_denied", errno.EPERM: "permission_denied", errno.ENOSPC: "resource_exhausted"}


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
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if info.isdir() and os.path.abspath(path) not in skip:
                children = sorted(os.listdir(path), reverse=True)
                stack.extend((os.path.join(path, name), f"{arcname}/{name}") for name in children)


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
        os.chroot(root)
        os.chdir("/")
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
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(_KINDS.get(exc.errno or 0, "internal"), f"{exc.strerror}{where}")
        return 2
    return 0


def _fail(kind: str, message: str) -> None:
    sys.stderr.write(json.dumps({"kind": kind, "message": message}) + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
