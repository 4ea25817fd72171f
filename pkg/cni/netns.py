"""Network namespaces pinned by bind mounts, without touching narwhald's own namespace.

Linux namespaces belong to threads, not processes: a thread that calls
``unshare(CLONE_NEWNET)`` or ``setns`` moves alone.  So every namespace switch
happens on a *dedicated, short-lived* thread (never the event loop's, never a
pooled ``asyncio.to_thread`` worker that could be reused in the wrong netns),
which exits when done.  A namespace outlives that thread because its
``/proc/<pid>/task/<tid>/ns/net`` is bind-mounted onto a file under the state
dir, as containerd's ``pkg/netns`` does.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pkg import errors
from pkg import mount as sysmount

T = TypeVar("T")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _run_on_dedicated_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run ``fn`` on a fresh thread (which dies afterwards) and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, exc: BaseException | None) -> None:
        if future.cancelled():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=body, name=name, daemon=True).start()
    return future


def _lo_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace (ioctl: no netlink socket to manage)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    # O_EXCL: two sandboxes must never share a pin file.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        sysmount.unshare(sysmount.CLONE_NEWNET)
        source = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"
        sysmount.sys_mount(source, path, None, sysmount.MS_BIND)
        _lo_up()
    except BaseException:
        _remove(path)
        raise


def _remove(path: Path) -> None:
    for _ in range(8):  # a path may carry stacked mounts (e.g. pinned twice by a crashed create)
        if not sysmount.is_mounted(path):
            break
        try:
            sysmount.sys_umount(path)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise OSError(exc.errno, f"unmount netns {path}: {exc.strerror}") from None
    try:
        path.unlink()
    except FileNotFoundError:
        pass


async def create(path: Path) -> Path:
    """A new network namespace pinned at ``path`` with ``lo`` up; AlreadyExists if ``path`` exists."""
    try:
        await _run_on_dedicated_thread(lambda: _create(path), "netns-create")
    except FileExistsError:
        raise errors.AlreadyExists(f"network namespace {path} already exists") from None
    except OSError as exc:
        raise errors.Internal(f"create network namespace {path}: {exc.strerror or exc}") from None
    return path


async def remove(path: Path) -> None:
    """Unmount and delete a pinned namespace; a missing one is success."""
    try:
        await asyncio.to_thread(_remove, path)
    except OSError as exc:
        raise errors.Internal(f"remove network namespace {path}: {exc.strerror or exc}") from None


async def has_link(path: Path, ifname: str) -> bool:
    """Whether the namespace pinned at ``path`` has an interface ``ifname`` (False when it is gone)."""
    try:
        return await run_in_netns(path, lambda: _has_link(ifname))
    except errors.NarwhalError:
        return False


def _has_link(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def exists(path: Path) -> bool:
    """True when ``path`` is a pinned namespace (a bind mount), not just a leftover file."""
    return path.exists() and sysmount.is_mounted(path)


async def run_in_netns(path: Path, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a dedicated thread that has joined the namespace at ``path``.

    Sockets created by ``fn`` stay in that namespace after it returns, so a
    port-forward can ``run_in_netns(ns, lambda: socket.create_connection(...))``
    and use the socket from the event loop.
    """

    def body() -> T:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise errors.NotFound(f"network namespace {path} not found") from None
        try:
            try:
                sysmount.setns(fd, sysmount.CLONE_NEWNET)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    raise errors.NotFound(f"{path} is not a network namespace") from None
                raise errors.Internal(f"setns({path}): {os.strerror(exc.errno or 0)}") from None
        finally:
            os.close(fd)
        return fn()

    return await _run_on_dedicated_thread(body, "netns-run")
