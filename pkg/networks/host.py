"""Host state a user-defined network holds besides its endpoints: its bridge and host-local's dir."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pkg import errors

log = logging.getLogger(__name__)

LINK_TIMEOUT = 30.0


def remove_ipam_dir(path: Path) -> None:
    """host-local's dir of a removed network: its lock and last-reserved files (no allocations left)."""
    try:
        entries = list(path.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        entry.unlink(missing_ok=True)
    try:
        path.rmdir()
    except OSError:
        pass


async def delete_bridge(name: str) -> None:
    """Remove a network's bridge (the bridge plugin never does); a missing one is fine."""
    if not name:
        return
    proc = await asyncio.create_subprocess_exec("ip", "link", "delete", name, "type", "bridge",
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), LINK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise errors.DeadlineExceeded(f"ip link delete {name} did not finish") from None
    text = err.decode(errors="replace").strip()
    if proc.returncode and "Cannot find device" not in text:
        log.warning("delete bridge %s: %s", name, text)

