"""Pinned IPC and UTS namespaces for pod sandboxes, so no pause process is needed.

``unshare --ipc=FILE --uts=FILE hostname NAME`` creates both namespaces, sets
the pod's hostname inside, and bind-mounts them onto FILE so they outlive the
process.  Containers of the pod join them by path.  (Network namespaces are
pinned by pkg.cni.netns the same way.)
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from pkg import errors
from pkg.mount import umount

UNSHARE_TIMEOUT = 10.0


async def pin(ipc: Path | None, uts: Path | None, hostname: str) -> None:
    if ipc is None and uts is None:
        return
    args = []
    for flag, path in (("--ipc", ipc), ("--uts", uts)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            args.append(f"{flag}={path}")
    command = ["hostname", hostname] if uts is not None and hostname else ["true"]
    proc = await asyncio.create_subprocess_exec(
        "unshare", *args, *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), UNSHARE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        await unpin(ipc, uts)
        raise errors.DeadlineExceeded("creating pod IPC/UTS namespaces timed out") from None
    if proc.returncode != 0:
        await unpin(ipc, uts)
        raise errors.InvalidArgument(f"creating pod IPC/UTS namespaces: {err.decode(errors='replace').strip()}")


async def unpin(ipc: Path | None, uts: Path | None) -> None:
    """Idempotent: unmount and delete the pin files."""
    for path in (ipc, uts):
        if path is not None:
            umount(path)
            path.unlink(missing_ok=True)
