"""COPY and ADD planning (blocking, run in a thread): which source files, where they land, as a tar to extract
at the image root.

Sources resolve inside their root (the context, or another stage's or image's filesystem) with every symlink
kept inside it; wildcards match as Go's filepath.Match, per path component.  The destination follows moby's
rules: a trailing "/" (or an existing directory) receives files by their base name, a directory source copies
its contents, several sources need a directory destination.  Context files are owned by root unless --chown;
files from another stage keep their owners.  ADD extracts local tar archives (any compression) instead of
copying them.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from pkg import errors
from pkg.runtime.user import resolve_user, secure_join

WILDCARDS = "*?["


@dataclass(frozen=True)
class Source:
    path: Path  # on the host, inside ``root``
    name: str  # as written (relative to the root)
    wildcard: bool


@dataclass(frozen=True)
class CopySpec:
    sources: list[Source]
    dest: str  # expanded, as written
    workdir: str
    chown: str  # "" or user[:group]
    chmod: int | None
    from_context: bool
    extract_archives: bool  # ADD


def resolve_sources(root: Path, patterns: list[str], what: str) -> list[Source]:
    out: list[Source] = []
    for pattern in patterns:
        clean = posixpath.normpath("/" + pattern).lstrip("/") or "."
        if any(c in clean for c in WILDCARDS):
            matches = _glob(root, clean)
            if not matches:
                raise errors.InvalidArgument(f"{what} failed: no source files were specified")
            out += [Source(secure_join(root, m), m, True) for m in matches]
            continue
        host = secure_join(root, clean)
        if not os.path.lexists(host):
            raise errors.InvalidArgument(f"{what} failed: file not found in build context or excluded by "
                                         f".dockerignore: stat {pattern}: file does not exist")
        out.append(Source(host, clean, False))
    return out


def _glob(root: Path, pattern: str) -> list[str]:
    parts = pattern.split("/")
    found = [""]
    for i, part in enumerate(parts):
        nxt: list[str] = []
        for prefix in found:
            base = secure_join(root, prefix) if prefix else root
            if not any(c in part for c in WILDCARDS):
                candidate = f"{prefix}/{part}" if prefix else part
                if os.path.lexists(secure_join(root, candidate)):
                    nxt.append(candidate)
                continue
            try:
                names = sorted(os.listdir(base))
            except (NotADirectoryError, FileNotFoundError):
                continue
            nxt += [f"{prefix}/{n}" if prefix else n for n in names if fnmatch.fnmatchcase(n, part)
                    and (i == len(parts) - 1 or os.path.isdir(secure_join(root, f"{prefix}/{n}" if prefix else n)))]
        found = nxt
    return found


def _ids(rootfs: Path, chown: str) -> tuple[int, int] | None:
    if not chown:
        return None
    user, sep, group = chown.partition(":")
    try:
        ids = resolve_user(rootfs, f"{user}:{group if sep else user}")
    except errors.InvalidArgument:
        if sep:
            raise
        ids = resolve_user(rootfs, user)  # no group of the user's name: the user's primary group
    return ids.uid, ids.gid


def is_dir(rootfs: Path, path: str) -> bool:
    try:
        return os.path.isdir(secure_join(rootfs, path))
    except OSError:
        return False


def _is_archive(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def inside(rootfs: Path, path: str, follow_last: bool = True) -> str:
    """``path`` in the image at ``rootfs`` with its symlinks resolved inside it (the last one only when
    ``follow_last``): where the classic builder's chrooted copy would write."""
    clean = posixpath.normpath("/" + path)
    if clean == "/":
        return "/"
    if not follow_last:
        parent, base = posixpath.split(clean)
        return posixpath.join(inside(rootfs, parent), base)
    host = secure_join(rootfs, clean)
    return "/" + os.path.relpath(host, rootfs) if host != rootfs else "/"


class Writer:
    """A layer tar: entry names are resolved in the parent image (``rootfs``), so the layer puts files where a
    copy into the running image would, through its symlinked directories (merged /usr and the like)."""

    def __init__(self, out: Path, ids: tuple[int, int] | None, chmod: int | None, keep_owner: bool,
                 rootfs: Path | None = None) -> None:
        self.rootfs = rootfs
        self.tar = tarfile.open(out, "w", format=tarfile.PAX_FORMAT)
        self.ids = ids
        self.chmod = chmod
        self.keep_owner = keep_owner
        self.count = 0

    def _owner(self, info: tarfile.TarInfo, st: os.stat_result | None) -> None:
        if self.ids is not None:
            info.uid, info.gid = self.ids
        elif self.keep_owner and st is not None:
            info.uid, info.gid = st.st_uid, st.st_gid
        else:
            info.uid = info.gid = 0
        info.uname = info.gname = ""

    def _place(self, name: str, follow_last: bool) -> str:
        return inside(self.rootfs, name, follow_last) if self.rootfs is not None else name

    def dir(self, name: str, mode: int = 0o755, st: os.stat_result | None = None) -> None:
        info = tarfile.TarInfo(self._place(name, True).lstrip("/") + "/")
        info.type = tarfile.DIRTYPE
        info.mode = self.chmod if self.chmod is not None else mode
        info.mtime = int(st.st_mtime) if st is not None else int(time.time())
        self._owner(info, st)
        self.tar.addfile(info)
        self.count += 1

    def entry(self, host: Path, name: str) -> None:
        st = os.lstat(host)
        if stat.S_ISDIR(st.st_mode):
            self.dir(name, stat.S_IMODE(st.st_mode), st)
            return
        info = tarfile.TarInfo(self._place(name, False).lstrip("/"))
        info.mtime = int(st.st_mtime)
        info.mode = self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)
        self._owner(info, st)
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(host)
            self.tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            info.size = st.st_size
            with open(host, "rb") as f:
                self.tar.addfile(info, f)
        else:
            return  # sockets, devices, FIFOs are not copied
        self.count += 1

    def tree(self, host: Path, dest: str) -> None:
        for dirpath, dirnames, filenames in os.walk(host):
            rel = os.path.relpath(dirpath, host)
            base = dest if rel == "." else posixpath.join(dest, rel)
            for name in sorted(dirnames):
                full = Path(dirpath) / name
                if full.is_symlink():
                    self.entry(full, posixpath.join(base, name))
                else:
                    self.dir(posixpath.join(base, name), stat.S_IMODE(os.lstat(full).st_mode), os.lstat(full))
            for name in sorted(filenames):
                self.entry(Path(dirpath) / name, posixpath.join(base, name))

    def archive(self, host: Path, dest: str) -> None:
        """ADD of a local archive: its members under ``dest`` (names that climb out are refused)."""
        with tarfile.open(host, "r:*") as src:
            for member in src:
                clean = posixpath.normpath("/" + member.name).lstrip("/")
                if not clean or clean == ".":
                    continue
                if member.name.startswith("..") or "/../" in f"/{member.name}/":
                    raise errors.InvalidArgument(f"ADD failed: archive member {member.name!r} leaves the destination")
                if member.ischr() or member.isblk() or member.isfifo():
                    continue
                member.name = self._place(posixpath.join(dest, clean), member.isdir()).lstrip("/")
                if member.islnk():
                    link = posixpath.join(dest, posixpath.normpath("/" + member.linkname).lstrip("/"))
                    member.linkname = self._place(link, False).lstrip("/")
                self.tar.addfile(member, src.extractfile(member) if member.isreg() else None)
                self.count += 1

    def close(self) -> None:
        self.tar.close()


def build_tar(spec: CopySpec, rootfs: Path, out: Path, what: str) -> Path:
    """Blocking: the tar (at ``out``) that puts the sources where ``spec`` says, inside ``rootfs``."""
    dest = spec.dest
    if not dest.startswith("/"):
        dest = posixpath.join(spec.workdir or "/", dest)
    dir_dest = spec.dest.endswith("/") or spec.dest in (".", "") or spec.dest.endswith("/.")
    clean = posixpath.normpath(dest)
    multiple = len(spec.sources) > 1 or any(s.wildcard for s in spec.sources)
    existing_dir = is_dir(rootfs, clean)
    if multiple and not (dir_dest or existing_dir):
        raise errors.InvalidArgument(f"When using {what} with more than one source file, the destination must be "
                                     "a directory and end with a /")
    ids = _ids(rootfs, spec.chown)
    writer = Writer(out, ids, spec.chmod, keep_owner=not spec.from_context, rootfs=rootfs)
    try:
        make_parents(writer, rootfs, clean if (dir_dest or existing_dir or multiple) else posixpath.dirname(clean))
        for source in spec.sources:
            st = os.stat(source.path) if os.path.exists(source.path) else os.lstat(source.path)
            if stat.S_ISDIR(st.st_mode):
                if not is_dir(rootfs, clean):
                    writer.dir(clean, 0o755)
                writer.tree(source.path, clean)
            elif spec.extract_archives and stat.S_ISREG(st.st_mode) and _is_archive(source.path):
                if not is_dir(rootfs, clean):
                    writer.dir(clean, 0o755)
                writer.archive(source.path, clean)
            else:
                target = posixpath.join(clean, posixpath.basename(source.name)) \
                    if (dir_dest or existing_dir or multiple) else clean
                writer.entry(source.path, target)
    finally:
        writer.close()
    return out


def make_parents(writer: Writer, rootfs: Path, path: str) -> None:
    """Directory entries for the missing directories of ``path`` (0755; --chown's owner when given)."""
    parts = [p for p in path.split("/") if p]
    current = ""
    for part in parts:
        current = f"{current}/{part}"
        if not is_dir(rootfs, current):
            writer.dir(current, 0o755)
