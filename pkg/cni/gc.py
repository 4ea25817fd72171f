"""Leak GC: release network state that belongs to no known sandbox.

Runs at start (after a crash, whatever a killed narwhald left half-done) and
periodically.  In order:

1. cached attachments of unknown sandboxes are DELeted with their cached
   config and result (this releases IPs, veths, portmap/masquerade chains);
2. network namespaces pinned under this instance's netns dir are removed;
3. host-local allocations under this instance's IPAM dir are released;
4. iptables rules and chains tagged for this instance's default network (and
   its named networks, see NetworkManager.named_networks), and firewall rules
   for their pod IPs that no live sandbox holds, are removed.

Only this instance's dirs and its own (instance-named) network are touched,
never another instance's or another runtime's.  A sandbox is alive when it is
known to the caller, in flight in the manager, or has state newer than the
start of this GC (so a sandbox created meanwhile is never collected).
"""
from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pkg import errors
from pkg.cni import defaults, iptables, netns
from pkg.cni.cache import AttachmentCache
from pkg.cni.config import NetworkConfigList
from pkg.config import Config

log = logging.getLogger(__name__)


@dataclass
class Allocation:
    path: Path
    ip: str
    sandbox_id: str
    mtime: float


def _mtime(path: Path) -> float | None:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


def scan_ipam(root: Path) -> list[Allocation]:
    """host-local's files: ``<dataDir>/<network>/<ip>`` holding ``<container id>\\n<ifname>``."""
    found: list[Allocation] = []
    try:
        networks = [d for d in root.iterdir() if d.is_dir()]
    except FileNotFoundError:
        return found
    for net_dir in networks:
        for entry in net_dir.iterdir():
            try:
                ip = str(ipaddress.ip_address(entry.name))
            except ValueError:
                continue  # "lock", "last_reserved_ip.0"
            try:
                owner = entry.read_text().splitlines()[0].strip()
                mtime = entry.lstat().st_mtime
            except (OSError, IndexError):
                continue
            found.append(Allocation(entry, ip, owner, mtime))
    return found


def release_allocation(alloc: Allocation) -> None:
    """Delete one allocation file under host-local's own lock, so a concurrent plugin is not torn."""
    lock_path = alloc.path.parent / "lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            owner = alloc.path.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            return
        if owner == alloc.sandbox_id:
            alloc.path.unlink(missing_ok=True)


async def cleanup_iptables(
    sandbox_ids: set[str], network_name: str, firewall_ips: frozenset[str] = frozenset(),
) -> None:
    """Drop the tagged iptables state of these (our own) sandboxes on ``network_name`` (all of it is
    in the nat table: bridge's masquerade chain, portmap's DNAT chain), and the firewall plugin's
    rules for ``firewall_ips`` (untagged, in the filter table)."""
    removed = await iptables.cleanup(
        network_name, lambda cid: cid in sandbox_ids,
        (lambda ip: ip in firewall_ips) if firewall_ips else None,
        tables_to_scan=("nat", "filter") if firewall_ips else ("nat",),
    )
    if removed:
        log.info("CNI: removed %d leftover iptables rules/chains of %s", removed, ", ".join(sorted(sandbox_ids)))


class Collectable(Protocol):
    """What the GC needs of the NetworkManager (which imports this module, so it is named here by shape)."""

    cfg: Config
    cache: AttachmentCache
    inflight: set[str]  # sandboxes being set up or torn down right now: never collected
    named_networks: Callable[[], Awaitable[list[NetworkConfigList]]] | None

    def own_subnets(self) -> list[str]: ...

    async def release_unknown(self, sandbox_id: str) -> None: ...


async def collect(mgr: Collectable, known: set[str], min_age: float = 0.0) -> None:
    cfg = mgr.cfg
    started = time.time()
    cutoff = started - max(min_age, 0.0)
    fresh: set[str] = set()

    def alive(sandbox_id: str) -> bool:
        return sandbox_id in known or sandbox_id in mgr.inflight or sandbox_id in fresh

    # 1. cached attachments (every interface of a sandbox)
    for sandbox_id in await mgr.cache.ids():
        mtime = await mgr.cache.mtime(sandbox_id)
        if mtime is not None and mtime > cutoff:
            fresh.add(sandbox_id)
        if alive(sandbox_id):
            continue
        try:
            await mgr.release_unknown(sandbox_id)
            log.info("CNI GC: released the attachments of unknown sandbox %s", sandbox_id)
        except errors.NarwhalError as exc:
            log.warning("CNI GC: DEL for unknown sandbox %s failed (will retry): %s", sandbox_id, exc.message)

    # 2. network namespaces under our netns dir
    try:
        pinned = await asyncio.to_thread(lambda: list(cfg.netns_dir.iterdir()))
    except FileNotFoundError:
        pinned = []
    for path in pinned:
        mtime = _mtime(path)
        if mtime is not None and mtime > cutoff:
            fresh.add(path.name)
        if alive(path.name):
            continue
        try:
            await netns.remove(path)
            log.info("CNI GC: removed network namespace %s of unknown sandbox", path)
        except errors.NarwhalError as exc:
            log.warning("CNI GC: %s", exc.message)

    # 3. host-local allocations under our IPAM dir
    allocations = await asyncio.to_thread(scan_ipam, defaults.ipam_dir(cfg))
    fresh.update(a.sandbox_id for a in allocations if a.mtime > cutoff)
    in_use: set[str] = set()
    for alloc in allocations:
        if alive(alloc.sandbox_id):
            in_use.add(alloc.ip)
            continue
        await asyncio.to_thread(release_allocation, alloc)
        log.info("CNI GC: released IP %s of unknown sandbox %s", alloc.ip, alloc.sandbox_id)

    # 4. iptables state of our own default network and of our named networks
    networks = [(defaults.network_name(cfg), mgr.own_subnets())]
    if mgr.named_networks is not None:
        networks += [(n.name, defaults.subnets_of(n.raw)) for n in await mgr.named_networks()]
    for network, cidrs in networks:
        subnets = [ipaddress.ip_network(s) for s in cidrs]

        def orphan_ip(ip: str, subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = subnets) -> bool:
            addr = ipaddress.ip_address(ip)
            return ip not in in_use and any(addr in s for s in subnets)

        removed = await iptables.cleanup(network, lambda cid: not alive(cid), orphan_ip if subnets else None)
        if removed:
            log.info("CNI GC: removed %d leftover iptables rules/chains of %s", removed, network)

