"""docker cp and export on a container view: stat a path, stream a tar of it, extract a tar into it.

Paths resolve inside the container: every symlink as if the container's
root were "/" (never out of it), all but the last component for stat and
archive reads (so a symlink is copied as a symlink, as Docker does) and all
of them for the extraction point.  The tar work runs in ``rootfs_tar.py``,
chrooted into the view, streaming through pipes: the event loop never
blocks and a large copy never sits in memory.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import stat
import sys
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from pkg import errors
from pkg.docker.views.rootfs_access import RootfsView
from pkg.runtime.user import secure_join

HELPER = Path(__file__).with_name("rootfs_tar.py")
CHUNK = 256 * 1024
# A live container's kernel filesystems: their entries are archived, never their contents.
_LIVE_SKIP = ("/proc", "/sys", "/dev")
_KERNEL_FS = ("proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue")
_KINDS: dict[str, type[errors.NarwhalError]] = {
    "not_found": errors.NotFound, "invalid_argument": errors.InvalidArgument,
    "permission_denied": errors.PermissionDenied, "resource_exhausted": errors.ResourceExhausted,
    "conflict": errors.Conflict,
}
# The helper must take what a client sends and finish once it has it; one that stops (a FIFO, a hung
# filesystem the container set up) is killed rather than holding the request and a process forever.
HELPER_STALL_SECONDS = 120.0


@dataclass(frozen=True)
class PathStat:
    """What Docker's X-Docker-Container-Path-Stat header carries (``mode`` is the unix st_mode)."""

    name: str
    size: int
    mode: int
    mtime_ns: int
    link_target: str = ""  # for a symlink: the container path it finally resolves to


def _clean(path: str) -> tuple[str, bool]:
    """The absolute container path, and whether its last component is followed ("x/" and "x/." are)."""
    if not path:
        raise errors.InvalidArgument("path must not be empty")
    if "\0" in path:
        raise errors.InvalidArgument("path contains a NUL byte")
    clean = posixpath.normpath("/" + path.lstrip("/"))
    return clean, path.endswith(("/", "/.")) or clean == "/"


def _host_path(root: Path, clean: str, follow: bool) -> Path:
    if follow:
        return secure_join(root, clean)
    parent, base = posixpath.split(clean)
    return secure_join(root, parent) / base


def _container_path(root: Path, host: Path) -> str:
    return "/" + str(host.relative_to(root)) if host != root else "/"


def _not_found(path: str, container: str) -> errors.NotFound:
    return errors.NotFound(f"Could not find the file {path} in container {container}")


def _stat(root: Path, path: str, container: str) -> PathStat:
    clean, follow = _clean(path)
    try:
        host = _host_path(root, clean, follow)
        st = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, container) from None
    except OSError as exc:
        raise errors.InvalidArgument(f"stat {path}: {exc.strerror}") from None
    link_target = ""
    if stat.S_ISLNK(st.st_mode):
        link_target = _container_path(root, secure_join(root, clean))
    return PathStat(name=posixpath.basename(clean) or "/", size=st.st_size, mode=st.st_mode,
                    mtime_ns=st.st_mtime_ns, link_target=link_target)


async def stat_path(view: RootfsView, path: str, container: str) -> PathStat:
    """``container`` names the container in errors (Docker: "Could not find the file X in container Y")."""
    return await asyncio.to_thread(_stat, view.root, path, container)


def _skips(view: RootfsView) -> list[str]:
    if not view.live:
        return []
    paths = set(_LIVE_SKIP) | {m.destination for m in view.mounts if m.type in _KERNEL_FS}
    return [arg for p in sorted(paths) for arg in ("--skip", p)]


async def tar_path(view: RootfsView, path: str) -> AsyncGenerator[bytes, None]:
    """A tar of ``path`` (stat it first: that is where a missing path is reported), named as Docker names it:
    the path's last element, or "." for "dir/." (the directory's contents)."""
    clean, follow = _clean(path)
    host = await asyncio.to_thread(_host_path, view.root, clean, follow)
    inside = _container_path(view.root, host)
    directory, base = posixpath.split(inside) if inside != "/" else ("/", ".")
    rebase = "." if path.endswith("/.") or clean == "/" else posixpath.basename(clean)
    async with contextlib.aclosing(_run_reader(["tar", str(view.root), directory, base, rebase,
                                                *_skips(view)])) as chunks:
        async for chunk in chunks:
            yield chunk


def export(root: Path) -> AsyncGenerator[bytes, None]:
    """A tar of a whole (non-live) root filesystem, as ``docker export`` streams it."""
    return _run_reader(["export", str(root)])


async def _spawn(args: list[str], stdin: int | None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(HELPER), *args, stdin=stdin, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def _run_reader(args: list[str]) -> AsyncGenerator[bytes, None]:
    proc = await _spawn(args, asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
        await _check(proc)
    finally:
        await _reap(proc)


async def extract(view: RootfsView, path: str, container: str, body: AsyncIterable[bytes], *,
                  no_overwrite_dir_non_dir: bool = False, chown: tuple[int, int] | None = None) -> None:
    """Extract a tar stream into the directory ``path`` (followed through symlinks, within the container)."""
    clean, _ = _clean(path)

    def destination() -> str:
        try:
            host = secure_join(view.root, clean)
            st = os.stat(host)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(path, container) from None
        if not stat.S_ISDIR(st.st_mode):
            raise errors.InvalidArgument("extraction point is not a directory")
        return _container_path(view.root, host)

    inside = await asyncio.to_thread(destination)
    mount = view.mount_at(inside)
    if mount is not None and mount.type == "bind" and mount.readonly:
        raise errors.PermissionDenied("mounted volume is marked read-only")
    if (mount is None or mount.destination == "/") and view.readonly_rootfs:
        raise errors.PermissionDenied("container rootfs is marked read-only")
    args = ["untar", str(view.root), inside]
    if no_overwrite_dir_non_dir:
        args.append("--no-overwrite-dir-non-dir")
    if chown is not None:
        args += ["--chown", f"{chown[0]}:{chown[1]}"]
    proc = await _spawn(args, asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    try:
        try:
            async for chunk in body:
                proc.stdin.write(chunk)
                await asyncio.wait_for(proc.stdin.drain(), HELPER_STALL_SECONDS)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the helper stopped reading: its exit status says why
        except TimeoutError:
            raise errors.DeadlineExceeded("archive helper stopped reading the archive") from None
        try:
            await asyncio.wait_for(_check(proc), HELPER_STALL_SECONDS)
        except TimeoutError:
            raise errors.DeadlineExceeded("archive helper did not finish extracting") from None
    finally:
        await _reap(proc)


async def _check(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    err = await proc.stderr.read()
    code = await proc.wait()
    if code == 0:
        return
    try:
        report = json.loads(err.decode(errors="replace").strip().splitlines()[-1])
        kind, message = str(report["kind"]), str(report["message"])
    except (ValueError, KeyError, IndexError):
        raise errors.Internal(f"archive helper failed ({code}): {err.decode(errors='replace').strip()}") from None
    raise _KINDS.get(kind, errors.Internal)(message)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the helper (if it still runs) and wait for it, its pipes drained.

    Draining is what makes the wait end: asyncio (3.11) wakes ``wait()`` only once every pipe of the
    process saw EOF, and a stdout the caller stopped reading (a client gone mid-export) has its reading
    paused with a full buffer, so it never sees EOF; the handler then hung forever with the container's
    view mounted.  The helper is dead by then, so what is left is at most a pipe's capacity.
    """
    if proc.returncode is None:
        proc.kill()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):  # a pipe that failed is disconnected already
                while await stream.read(CHUNK):
                    pass
    await proc.wait()
