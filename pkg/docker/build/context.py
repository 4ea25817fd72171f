"""The build context: the uploaded tar streamed to disk, extracted safely into the build's scratch dir,
``.dockerignore`` applied, the Dockerfile read.

The upload is written to a file first (never held in memory); tarfile reads plain, gzip, bzip2 and xz by their
magic bytes.  Extraction refuses members that climb out (``..``) and writes nothing through a symlink: every
parent directory is checked to be a real directory inside the context.  Absolute member names are taken relative
to the context root; device nodes and FIFOs are skipped.  Symlinks are stored as they are and only ever resolved
inside the context root (``secure_join``).
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pkg import errors
from pkg.docker.build.dockerfile.ignore import Matcher, read_patterns
from pkg.runtime.user import secure_join

DEFAULT_DOCKERFILE = "Dockerfile"
IGNORE_FILE = ".dockerignore"
MAX_DOCKERFILE = 8 << 20
CHUNK = 1 << 20


def _member_name(name: str) -> str:
    clean = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    raw_parts = [p for p in name.split("/") if p not in ("", ".")]
    depth = 0
    for part in raw_parts:
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            raise errors.InvalidArgument(f"invalid build context: {name!r} is outside of the context")
    return clean


def _safe_parent(root: Path, rel: str) -> Path:
    """The member's path, after making sure each parent is a real directory under ``root`` (created if missing)."""
    parts = rel.split("/")
    current = root
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise errors.InvalidArgument(f"invalid build context: {rel!r} goes through a non-directory")
    return current / parts[-1]


def _clear(path: Path, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        shutil.rmtree(path)
    else:
        os.unlink(path)


def extract(archive: Path, root: Path) -> None:
    """Blocking: unpack the context tar at ``archive`` into the empty directory ``root``."""
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                rel = _member_name(member.name)
                if not rel:
                    continue
                target = _safe_parent(root, rel)
                if member.isdir():
                    _clear(target, keep_dir=True)
                    if not target.exists():
                        os.mkdir(target, 0o755)
                    os.chmod(target, (member.mode & 0o7777) | 0o700)
                elif member.isreg():
                    _clear(target, keep_dir=False)
                    src = tar.extractfile(member)
                    assert src is not None
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    os.chmod(target, member.mode & 0o7777)
                    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
                elif member.issym():
                    _clear(target, keep_dir=False)
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    source = _safe_parent(root, _member_name(member.linkname))
                    if not source.is_file() or source.is_symlink():
                        raise errors.InvalidArgument(f"invalid build context: hard link {rel!r} to "
                                                     f"{member.linkname!r}, which is not a file in the context")
                    _clear(target, keep_dir=False)
                    os.link(source, target)
                # devices, FIFOs: never created from a build context
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
            raise errors.InvalidArgument(f"invalid build context: {exc.strerror}") from None
        raise errors.InvalidArgument(f"invalid build context (not a tar archive?): {exc}") from None


@dataclass
class BuildContext:
    """An extracted context: its root, the Dockerfile text, and checksums of what COPY/ADD read."""

    root: Path
    dockerfile: str
    _sums: dict[str, str] = field(default_factory=dict)

    def resolve(self, rel: str) -> Path:
        return secure_join(self.root, rel)

    def checksum(self, path: Path) -> str:
        """Content hash of a file, symlink or tree (names, types, modes, contents; never times)."""
        key = str(path)
        cached = self._sums.get(key)
        if cached is None:
            cached = tree_checksum(path)
            self._sums[key] = cached
        return cached


def tree_checksum(path: Path) -> str:
    h = hashlib.sha256()

    def add(p: Path, rel: str) -> None:
        st = os.lstat(p)
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(p).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        elif stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(p)):
                add(p / name, f"{rel}/{name}")
        h.update(b"\1")

    add(path, ".")
    return "sha256:" + h.hexdigest()


def read_dockerfile(root: Path, name: str) -> str:
    """The Dockerfile named by the ``dockerfile`` parameter (relative to the context root)."""
    rel = name or DEFAULT_DOCKERFILE
    candidates = [rel]
    if not name:
        candidates.append(DEFAULT_DOCKERFILE.lower())
    for candidate in candidates:
        path = secure_join(root, candidate)
        if path.is_file():
            if path.stat().st_size > MAX_DOCKERFILE:
                raise errors.InvalidArgument(f"the Dockerfile ({candidate}) is larger than {MAX_DOCKERFILE} bytes")
            return path.read_text(errors="replace")
    raise errors.InvalidArgument(f"Cannot locate specified Dockerfile: {rel}")


def apply_ignore(root: Path) -> None:
    """Remove what .dockerignore excludes (the Dockerfile and .dockerignore too when they match)."""
    path = root / IGNORE_FILE
    if not path.is_file() or path.is_symlink():
        return
    matcher = Matcher(read_patterns(path.read_text(errors="replace")))
    if not matcher.patterns:
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        base = Path(dirpath)
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if matcher.matches(rel):
                os.unlink(base / name)
        for name in dirnames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = base / name
            if full.is_symlink():
                if matcher.matches(rel):
                    os.unlink(full)
            elif matcher.matches(rel) and not os.listdir(full):
                os.rmdir(full)


def prepare(archive: Path, root: Path, dockerfile: str) -> BuildContext:
    """Blocking: extract, read the Dockerfile, then apply .dockerignore."""
    root.mkdir(parents=True, exist_ok=True)
    extract(archive, root)
    text = read_dockerfile(root, dockerfile)
    apply_ignore(root)
    return BuildContext(root, text)
