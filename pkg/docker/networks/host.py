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


async def _ip(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("ip", *args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), LINK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise errors.DeadlineExceeded(f"ip {' '.join(args)} did not finish within {LINK_TIMEOUT:g}s") from None
    return proc.returncode or 0, err.decode(errors="replace").strip()


async def link_exists(name: str) -> bool:
    rc, _ = await _ip("link", "show", "dev", name)
    return rc == 0


async def ensure_bridge(name: str, gateway: str, prefix_len: int) -> None:
    """The network's bridge, up, with its gateway address, as Docker makes it at network create.  Made
    before any container joins, its route tells other instances (and Docker) the subnet is taken; the
    CNI bridge plugin finds it as it would have made it."""
    rc, err = await _ip("link", "add", name, "type", "bridge")
    if rc != 0 and "File exists" not in err:
        raise errors.Internal(f"create bridge {name}: {err}")
    for args in (("addr", "replace", f"{gateway}/{prefix_len}", "dev", name), ("link", "set", name, "up")):
        rc, err = await _ip(*args)
        if rc != 0:
            raise errors.Internal(f"ip {' '.join(args)}: {err}")


async def delete_bridge(name: str) -> None:
    """Remove a network's bridge (the bridge plugin never does); a missing one is fine."""
    if not name:
        return
    rc, text = await _ip("link", "delete", name, "type", "bridge")
    if rc and "Cannot find device" not in text:
        log.warning("delete bridge %s: %s", name, text)


class Bridges:
    """The host operations on network bridges (a seam: unit tests use a fake)."""

    async def exists(self, name: str) -> bool:
        return await link_exists(name)

    async def ensure(self, name: str, gateway: str, prefix_len: int) -> None:
        await ensure_bridge(name, gateway, prefix_len)

    async def delete(self, name: str) -> None:
        await delete_bridge(name)
