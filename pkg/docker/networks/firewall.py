"""Isolation between networks, as Docker's DOCKER-ISOLATION chains do.

The FORWARD accepts of each network (pkg/cni/netrules.py; the CNI firewall
plugin's per pod in an overlay's chain) take everything a pod sends, so without
more rules a container on one user-defined network could reach another network's
containers through the host.  One chain per instance (``NW-ISO-<instance>``,
jumped to first from FORWARD, before those accepts) drops traffic between two different bridges of
this instance, and for internal networks anything entering or leaving their
bridge from elsewhere.  The chain is rebuilt whole whenever the set of
networks changes, and removed with the last user-defined network.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass

from pkg import errors

log = logging.getLogger(__name__)

RUN_TIMEOUT = 60.0


@dataclass(frozen=True)
class BridgeRule:
    bridge: str
    internal: bool = False
    icc: bool = True  # containers on the bridge may talk to each other (enable_icc)


def chain_name(instance_id: str) -> str:
    return f"NW-ISO-{instance_id}"


def rules(default_bridge: str, bridges: list[BridgeRule]) -> list[list[str]]:
    """The chain's rules (iptables args after ``-A <chain>``)."""
    out: list[list[str]] = []
    names = [b.bridge for b in bridges]
    everyone = [default_bridge, *names] if default_bridge else names
    for b in bridges:
        if not b.icc:
            out.append(["-i", b.bridge, "-o", b.bridge, "-j", "DROP"])
        if b.internal:
            out.append(["-i", b.bridge, "!", "-o", b.bridge, "-j", "DROP"])
            out.append(["!", "-i", b.bridge, "-o", b.bridge, "-j", "DROP"])
            continue
        for other in everyone:
            if other != b.bridge:
                out.append(["-i", b.bridge, "-o", other, "-j", "DROP"])
                out.append(["-i", other, "-o", b.bridge, "-j", "DROP"])
    seen: set[tuple[str, ...]] = set()
    unique = []
    for rule in out:
        if tuple(rule) not in seen:
            seen.add(tuple(rule))
            unique.append(rule)
    return unique


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} did not finish within {RUN_TIMEOUT:g}s"
    return proc.returncode or 0, err.decode(errors="replace").strip()


class Isolation:
    def __init__(self, instance_id: str, default_bridge: str) -> None:
        self.chain = chain_name(instance_id)
        self.default_bridge = default_bridge
        self._lock = asyncio.Lock()

    async def sync(self, bridges: list[BridgeRule]) -> None:
        """Make the chain hold exactly the rules for ``bridges`` (none: no chain, no jump)."""
        if shutil.which("iptables") is None:
            if bridges:
                raise errors.FailedPrecondition("iptables is not installed: networks cannot be isolated")
            return
        async with self._lock:
            if not bridges:
                await self._remove()
                return
            await _run("iptables", "-w", "-N", self.chain)  # exists already: fine
            rc, err = await _run("iptables", "-w", "-F", self.chain)
            if rc != 0:
                raise errors.Internal(f"iptables: flush {self.chain}: {err}")
            for rule in rules(self.default_bridge, bridges):
                rc, err = await _run("iptables", "-w", "-A", self.chain, *rule)
                if rc != 0:
                    raise errors.Internal(f"iptables: add isolation rule {' '.join(rule)}: {err}")
            rc, _ = await _run("iptables", "-w", "-C", "FORWARD", "-j", self.chain)
            if rc != 0:
                rc, err = await _run("iptables", "-w", "-I", "FORWARD", "1", "-j", self.chain)
                if rc != 0:
                    raise errors.Internal(f"iptables: jump to {self.chain}: {err}")

    async def _remove(self) -> None:
        while (await _run("iptables", "-w", "-D", "FORWARD", "-j", self.chain))[0] == 0:
            pass
        await _run("iptables", "-w", "-F", self.chain)
        await _run("iptables", "-w", "-X", self.chain)
