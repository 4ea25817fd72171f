"""What a daemon restart (or a host reboot) brings back of the Docker networks, before any request.

Separate from pkg.docker.networks.service because it is recovery, run once at start, from what outlives the
daemon: the network records (host side: each user-defined network's bridge and masquerade/forward rules,
idempotent after a kill -9, remade after a reboot) and the CNI attachment cache (the endpoint table and the
embedded DNS servers of sandboxes on user-defined networks).  A failure is logged per network or sandbox: the
containers keep running and the rest comes back.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path

from pkg import errors
from pkg.cni.manager import NetworkManager
from pkg.cni.model import Endpoint
from pkg.docker.dns.server import DNSServers
from pkg.docker.networks import conflist, host
from pkg.docker.networks.model import Network

log = logging.getLogger(__name__)


async def host_side(networks: Iterable[Network], bridges: host.Bridges, manager: NetworkManager) -> None:
    """Each user-defined network's bridge (as it was at create) and its rules."""
    for network in networks:
        if not network.predefined and network.bridge and network.ipam:
            try:
                for pool in network.ipam:
                    await bridges.ensure(network.bridge, pool.gateway, ipaddress.ip_network(pool.subnet).prefixlen)
            except errors.NarwhalError as exc:
                log.warning("bridge of network %s: %s", network.name, exc.message)
        rules = conflist.rules_of(network)
        if rules is not None and not network.predefined:  # idempotent: after a kill -9 they are there
            try:
                await manager.rules.ensure(rules)
            except errors.NarwhalError as exc:
                log.error("network %s: no masquerade/forwarding rules: %s", network.name, exc.message)


async def endpoints(manager: NetworkManager, dns: DNSServers, table: dict[str, list[Endpoint]]) -> None:
    """The endpoint table from the attachment cache (each sandbox's entry in before its DNS server starts,
    which answers from the table) and the embedded DNS of sandboxes on user-defined networks."""
    for sandbox_id in await manager.cache.ids():
        attachments = await manager.cache.all(sandbox_id)
        found = await manager.endpoints(sandbox_id)
        if not found:
            continue
        table[sandbox_id] = found
        netns = next((Path(a.netns) for a in attachments if a.netns), None)
        if netns is not None and any(e.network for e in found):
            try:
                await dns.ensure(sandbox_id, netns)
            except errors.NarwhalError as exc:
                log.warning("embedded DNS of sandbox %s not restored: %s", sandbox_id[:12], exc.message)
