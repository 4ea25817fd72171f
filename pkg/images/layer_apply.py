"""A layer tar applied into an empty directory the way containerd 1.6's applier does it (issue 21).

pkg.images.stream_unpack extracts each layer while its blob streams in, into a staging directory that later
becomes the snapshot's upper dir; the tree must be the one containerd's ``Diff.Apply`` would have made
(archive/tar.go ``applyNaive`` + ``createTarFile``, archive/tar_opts_linux.go ``OverlayConvertWhiteout``,
diff/apply/apply_linux.go).  The upper dir of a fresh snapshot is empty and containerd resolves every path
inside it alone (``fs.RootPath`` scoped to the upper dir, never the merged view), so applying into an empty
staging dir resolves every name, symlink and hard link exactly as containerd's apply into the upper dir
would.  Two modes, as containerd's ``apply``: the first layer (a bind mount: whiteouts remove what they name,
opaque markers remove what this layer did not unpack) and every later one (an overlay: ``.wh.<name>`` is a
0:0 character device at ``<name>``, ``.wh..wh..opq`` is ``trusted.overlay.opaque=y`` on its directory).

Directories this layer implies without an entry are recorded: containerd copies their owner, mode, atime
and xattrs from the parent layers (``mkparent``), which are known only when the layer is installed.

Anything this module does not reproduce exactly raises ``Unsupported`` (a PAX global header, GNU sparse
files, unknown entry types); any error at all leaves the layer to containerd's own ``Diff.Apply``, which then
succeeds or fails as it would have anyway.
"""
from __future__ import annotations

import errno
import os
import stat
import tarfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Self

from pkg.rootpath import resolve_in_root

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
XATTR_PREFIX = "SCHILY.xattr."
MAX_LINKS = 255
DATA_CHUNK = 1 << 20
MAX_NS = (1 << 63) - 1


class Unsupported(Exception):
    """The layer holds something this applier does not reproduce: containerd's Diff.Apply applies it."""


# tarfile's header errors (not in its __all__): after the first member it takes them for the end of the archive,
# where Go's reader fails the archive.
_HEADER_ERRORS: tuple[type[Exception], ...] = (getattr(tarfile, "InvalidHeaderError"),  # noqa: B009
                                               getattr(tarfile, "TruncatedHeaderError"))  # noqa: B009


class _StrictInfo(tarfile.TarInfo):
    """A corrupt or cut header anywhere fails the layer, as in Go's archive/tar."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except _HEADER_ERRORS as exc:
            raise ValueError(f"invalid tar header: {exc}") from None


@dataclass
class Applied:
    """What an apply left for the install: the directories implied without an entry (parents first),
    and those of them a later entry of the layer described itself (their owner, mode and times are the
    entry's; containerd's copy-up still gave them the parents' xattrs)."""

    implied: list[str] = field(default_factory=list)
    described: set[str] = field(default_factory=set)
    # Directories something was created in: containerd's copy-up gave an implied one its parent's mtime, and
    # the creation of its entries then moved it; an implied directory nothing was created in keeps it.
    touched: set[str] = field(default_factory=set)


def go_clean(name: str) -> str:
    """Go's ``filepath.Clean``: lexical, "" -> ".", one leading slash at most, ".." folded."""
    if not name:
        return "."
    rooted = name.startswith("/")
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    text = "/".join(out)
    if rooted:
        return "/" + text
    return text or "."


def root_path(root: str, path: str) -> str:
    """continuity's ``fs.RootPath``: ``path`` resolved under ``root`` as if root were "/", following the
    symlinks met on the way (absolute targets from root, ".." never above it); a missing component ends the
    resolution of the rest lexically.  The walk is pkg.rootpath's, shared with secure_join."""
    resolved = resolve_in_root(root, path, limit=MAX_LINKS, loop_message="too many links")
    return os.path.join(root, *resolved) if resolved else root


def _pax_ns(member: tarfile.TarInfo, key: str, fallback: float) -> int:
    text = member.pax_headers.get(key)
    value = Decimal(text) if text is not None else Decimal(int(fallback))
    return int(value * 1_000_000_000)


def _bound(ns: int) -> int:
    return 0 if ns < 0 or ns > MAX_NS else ns


def _set_times(path: str, atime_ns: int, mtime_ns: int) -> None:
    """containerd's chtimes(path, boundTime(latestTime(atime, mtime)), boundTime(mtime)), never following."""
    os.utime(path, ns=(_bound(max(atime_ns, mtime_ns)), _bound(mtime_ns)), follow_symlinks=False)


def _remove_all(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    for entry in os.scandir(path):
        _remove_all(entry.path)
    os.rmdir(path)


class LayerApplier:
    """One layer's entries into ``root`` (empty at the start).  ``overlay``: the layer has parents (the
    snapshot is an overlay mount), so whiteouts are converted rather than applied."""

    def __init__(self, root: str, *, overlay: bool) -> None:
        self.root = os.path.normpath(root)
        self.overlay = overlay
        self.result = Applied()
        self._unpacked: set[str] = set()
        self._dirs: list[tuple[str, int, int]] = []  # (name, atime ns, mtime ns), set at the end
        # Parent dirs resolved so far: only a new symlink or hard link, or a removal, changes a resolution
        # (a directory or file made where a name resolved lexically resolves to the same path).
        self._resolved: dict[str, str] = {}
        self._implied: set[str] = set()
        self.stopped = False  # set by another thread: the entries still to come are not wanted

    def apply(self, stream: IO[bytes]) -> Applied:
        """Every entry of the (uncompressed) tar ``stream``; reads it up to the end-of-archive marker."""
        # Records of 10 KiB (its stream copies the rest of its buffer per read); headers read strictly.
        tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictInfo)
        for member in tar:
            if self.stopped:
                raise Unsupported("stopped")
            getattr(tar, "members").clear()  # noqa: B009 - tarfile keeps every member read (~1 KiB each): not needed
            if tar.pax_headers:
                raise Unsupported("a PAX global header (Python's tarfile applies it, Go's reader does not)")
            self._entry(tar, member)
        # tarfile ends at the first zero block; Go's reader reads the next one too: EOF or zeros end the
        # archive, a cut block or anything else is an invalid archive.
        after = getattr(tar, "fileobj").read(tarfile.BLOCKSIZE)  # noqa: B009
        if after and (len(after) < tarfile.BLOCKSIZE or after.count(0) != tarfile.BLOCKSIZE):
            raise ValueError("a zero block followed by a non-zero or cut block: invalid tar archive")
        for name, atime_ns, mtime_ns in self._dirs:
            _set_times(root_path(self.root, name), atime_ns, mtime_ns)
        return self.result

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.issparse():
            raise Unsupported(f"{member.name}: GNU sparse file")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                               tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            raise Unsupported(f"{member.name}: tar entry type {member.type!r}")
        name = go_clean(member.name)
        slash = name.rfind("/")
        parent_name, base = name[:slash + 1], name[slash + 1:]
        ppath = self._resolved.get(parent_name) or self._resolve(parent_name)
        path = os.path.join(ppath, go_clean("/" + base).lstrip("/")) if base else ppath
        path = os.path.normpath(path)
        if path == self.root:
            return
        if ppath != self.root:
            self._mkparent(ppath if base else os.path.dirname(path))
        if self._whiteout(member, path):
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not (stat.S_ISDIR(st.st_mode) and member.isdir()):
                self._resolved.clear()
                _remove_all(path)
        self._create(tar, member, path)
        self._touch(path)
        if member.isdir():
            self._dirs.append((name, _pax_ns(member, "atime", 0), _pax_ns(member, "mtime", member.mtime)))
            rel = self._rel(path)
            if rel in self._implied:
                self.result.described.add(rel)
        self._unpacked.add(path)

    def _resolve(self, parent_name: str) -> str:
        resolved = self._resolved[parent_name] = root_path(self.root, parent_name)
        return resolved

    def _rel(self, path: str) -> str:
        return path[len(self.root) + 1:] or "."

    def _mkparent(self, path: str) -> None:
        """containerd's mkparent: the missing directories up to ``path``, 0755, recorded for the copy-up of
        their parents' attributes at install."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "mkparent", path)
            return
        up = os.path.dirname(path)
        if len(up) > len(self.root):
            self._mkparent(up)
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
        self._touch(path)
        self.result.implied.append(self._rel(path))
        self._implied.add(self._rel(path))

    def _touch(self, path: str) -> None:
        self.result.touched.add(self._rel(os.path.dirname(path)))

    def _whiteout(self, member: tarfile.TarInfo, path: str) -> bool:
        """containerd's validateWhiteout and its whiteout conversion; True when the entry is consumed."""
        base, parent = os.path.basename(path), os.path.dirname(path)
        if base == WHITEOUT_OPAQUE:
            if self.overlay:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
                return True
            os.lstat(parent)
            self._remove_not_unpacked(parent)
            return True
        if not base.startswith(WHITEOUT_PREFIX):
            return False
        original = os.path.normpath(os.path.join(parent, base[len(WHITEOUT_PREFIX):]))
        if not original.startswith(parent.rstrip("/") + "/"):
            raise ValueError(f"invalid whiteout name: {base}: invalid archive")
        if self.overlay:
            os.mknod(original, stat.S_IFCHR, 0)
            os.chown(original, member.uid, member.gid)
            self._touch(original)
        else:
            self._resolved.clear()
            _remove_all(original)
        return True

    def _remove_not_unpacked(self, top: str) -> None:
        """The naive opaque marker: whatever this layer did not unpack under ``top`` goes (Go's Walk)."""
        self._resolved.clear()
        try:
            entries = sorted(os.listdir(top))
        except FileNotFoundError:
            return
        for entry in entries:
            path = os.path.join(top, entry)
            if path not in self._unpacked:
                _remove_all(path)
            elif os.path.isdir(path) and not os.path.islink(path):
                self._remove_not_unpacked(path)

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        """containerd's createTarFile."""
        mode = member.mode & 0o7777
        if member.isdir():
            try:
                st = os.lstat(path)
                exists = stat.S_ISDIR(st.st_mode)
            except FileNotFoundError:
                exists = False
            if not exists:
                os.mkdir(path, mode)
                os.chmod(path, mode)
        elif member.isreg():
            # O_NOFOLLOW: nothing is at ``path`` now (removed above); never write through a link of the layer's
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
            try:
                os.chmod(path, mode)
                source = tar.extractfile(member)
                assert source is not None
                while data := source.read(DATA_CHUNK):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(path, mode | kind, os.makedev(member.devmajor, member.devminor))
        elif member.islnk():
            os.link(self._hardlink_target(member.linkname), path, follow_symlinks=False)
            self._resolved.clear()  # the link may be a symlink's
        else:
            os.symlink(member.linkname, path)
            self._resolved.clear()
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                self._setxattr(path, key[len(XATTR_PREFIX):], value.encode("utf-8", "surrogateescape"))
        if not stat.S_ISLNK(os.lstat(path).st_mode):  # containerd's lchmod: a hard link to a symlink included
            os.chmod(path, mode)
        _set_times(path, _pax_ns(member, "atime", 0), _pax_ns(member, "mtime", member.mtime))

    def _hardlink_target(self, linkname: str) -> str:
        """containerd's hardlinkRootPath: the link's directory resolved under root, its name as is."""
        slash = linkname.rfind("/")
        target = os.path.join(root_path(self.root, linkname[:slash + 1]), linkname[slash + 1:])
        return target if target.startswith(self.root) else self.root

    @staticmethod
    def _setxattr(path: str, key: str, value: bytes) -> None:
        if key.startswith("trusted."):
            return  # containerd refuses admin attributes from an archive (ENOTSUP), and ignores the refusal
        try:
            os.setxattr(path, key, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENOTSUP:
                return
            if exc.errno == errno.EPERM and key.startswith("user."):
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                    return
            raise
