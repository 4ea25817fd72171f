"""Forwarding and masquerade rules per network for Narwhal's own bridge networks, as Docker installs them.

The reference chain did this per pod: the bridge plugin's ``ipMasq`` made a NAT chain per pod and the
firewall plugin added ``-s/-d <pod IP>`` accepts to CNI-FORWARD, at every ADD and again at every DEL
(two plugin execs and a dozen iptables calls, ~40% of a pod's network time).  Their effect is per network,
so Narwhal's own networks (the default network it writes, Docker's bridge networks) run the bridge plugin
with ``ipMasq: false`` and no firewall plugin, and narwhald owns, per network, in two chains of its instance:

* filter ``NW-FWD-<instance>`` (jumped to from FORWARD, after any isolation chain ``NW-ISO-*``):
  ``-o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`` and ``-i <bridge> -j ACCEPT`` — what
  the firewall plugin accepted for each pod, so pod traffic flows when the FORWARD policy is DROP (as
  dockerd sets it); Docker's isolation, icc=false and ``--internal`` drops come first (NW-ISO-<instance>);
* nat ``NW-MASQ-<instance>`` (jumped to from POSTROUTING): ``-s <subnet> ! -o <bridge> -j MASQUERADE`` for
  each subnet of a network that masquerades (Docker's rule; hairpin to published ports is portmap's SNAT).

Rules carry the network's CNI name as their comment.  ``ensure`` is idempotent (checked before added: a
restart or a kill -9 finds them in place), ``remove`` deletes one network's, ``remove_all`` (``narwhald
cleanup``) the chains and their jumps.  Chains are named after the instance: instances share nothing.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
from dataclasses import dataclass

from pkg import errors
from pkg.cni import iptables

log = logging.getLogger(__name__)

ISOLATION_PREFIX = "NW-ISO-"  # pkg.docker.networks.firewall's chains: their drops must come before our accepts


@dataclass(frozen=True)
class BridgeNetwork:
    """What the rules of one network need: its CNI name (the rules' tag), bridge and subnets."""

    name: str
    bridge: str
    subnets: tuple[str, ...]
    masquerade: bool = True


def forward_chain(instance_id: str) -> str:
    return f"NW-FWD-{instance_id}"


def masquerade_chain(instance_id: str) -> str:
    return f"NW-MASQ-{instance_id}"


def _cmd(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def rules(net: BridgeNetwork, instance_id: str) -> list[tuple[str, str, str, list[str]]]:
    """(command, table, chain, rule args) of one network, per address family it has."""
    tag = ["-m", "comment", "--comment", net.name]
    out: list[tuple[str, str, str, list[str]]] = []
    versions = sorted({ipaddress.ip_network(s, strict=False).version for s in net.subnets})
    for version in versions:
        cmd = _cmd(version)
        out.append((cmd, "filter", forward_chain(instance_id),
                    ["-o", net.bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"]))
        out.append((cmd, "filter", forward_chain(instance_id), ["-i", net.bridge, *tag, "-j", "ACCEPT"]))
    if net.masquerade:
        for subnet in net.subnets:
            version = ipaddress.ip_network(subnet, strict=False).version
            out.append((_cmd(version), "nat", masquerade_chain(instance_id),
                        ["-s", subnet, "!", "-o", net.bridge, *tag, "-j", "MASQUERADE"]))
    return out


_HOOKS = {"filter": "FORWARD", "nat": "POSTROUTING"}


class NetworkRules:
    """This instance's per-network rules (one lock: the chains are shared by its networks)."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._lock = asyncio.Lock()

    async def ensure(self, net: BridgeNetwork) -> None:
        """Install what ``net`` needs that is not there yet."""
        wanted = rules(net, self.instance_id)
        if not wanted:
            return
        async with self._lock:
            for cmd in dict.fromkeys(c for c, *_ in wanted):
                if shutil.which(cmd) is None:
                    raise errors.FailedPrecondition(f"{cmd} is not installed: network {net.name} cannot forward")
            hooked: set[tuple[str, str]] = set()
            for cmd, table, chain, args in wanted:
                if (cmd, table) not in hooked:
                    await self._hook(cmd, table, chain)
                    hooked.add((cmd, table))
                rc, _, _ = await iptables.run(cmd, "-w", "-t", table, "-C", chain, *args)
                if rc != 0:
                    await _must(cmd, "-w", "-t", table, "-A", chain, *args)
        log.debug("network rules of %s in place", net.name)

    async def _hook(self, cmd: str, table: str, chain: str) -> None:
        """The chain exists and its hook jumps to it (FORWARD: after the isolation chains)."""
        await iptables.run(cmd, "-w", "-t", table, "-N", chain)  # exists already: fine
        hook = _HOOKS[table]
        rc, out, err = await iptables.run(cmd, "-w", "-t", table, "-S", hook)
        if rc != 0:
            raise errors.Internal(f"{cmd} -t {table} -S {hook}: {err.strip()}")
        position = 1
        for index, line in enumerate(out.splitlines()[1:], start=1):  # the first line is the policy
            target = line.split(" -j ", 1)[1].split()[0] if " -j " in line else ""
            if target == chain:
                return
            if target.startswith(ISOLATION_PREFIX):
                position = index + 1
        await _must(cmd, "-w", "-t", table, "-I", hook, str(position), "-j", chain)

    async def remove(self, net: BridgeNetwork) -> None:
        """Delete ``net``'s rules (missing ones are fine); the chains stay for the other networks."""
        async with self._lock:
            for cmd, table, chain, args in rules(net, self.instance_id):
                if shutil.which(cmd) is not None:
                    await iptables.run(cmd, "-w", "-t", table, "-D", chain, *args)

    async def remove_all(self) -> list[str]:
        """The chains and their jumps, in every family (``narwhald cleanup``); what was removed."""
        removed = []
        async with self._lock:
            for cmd, _ in iptables.families():
                for table, chain in (("filter", forward_chain(self.instance_id)),
                                     ("nat", masquerade_chain(self.instance_id))):
                    while (await iptables.run(cmd, "-w", "-t", table, "-D", _HOOKS[table], "-j", chain))[0] == 0:
                        pass
                    await iptables.run(cmd, "-w", "-t", table, "-F", chain)
                    if (await iptables.run(cmd, "-w", "-t", table, "-X", chain))[0] == 0:
                        removed.append(f"{cmd} {table} chain {chain}")
        return removed


async def _must(*argv: str) -> None:
    rc, _, err = await iptables.run(*argv)
    if rc != 0:
        raise errors.Internal(f"{' '.join(argv)}: {err.strip()}")


def of_conflist(data: dict[str, object]) -> BridgeNetwork | None:
    """The rules a conflist Narwhal built asks narwhald for: a bridge plugin first, with ``ipMasq`` off and no
    firewall plugin after it.  None for any other shape (the plugins do it themselves then)."""
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins or not isinstance(plugins[0], dict):
        return None
    bridge = plugins[0]
    if bridge.get("type") != "bridge" or bridge.get("ipMasq") or not bridge.get("bridge"):
        return None
    if any(isinstance(p, dict) and p.get("type") == "firewall" for p in plugins):
        return None
    subnets: list[str] = []
    ipam = bridge.get("ipam")
    for rs in (ipam.get("ranges") or []) if isinstance(ipam, dict) else []:
        for r in rs if isinstance(rs, list) else []:
            if isinstance(r, dict) and r.get("subnet") and str(r["subnet"]) not in subnets:
                subnets.append(str(r["subnet"]))
    return BridgeNetwork(str(data.get("name")), str(bridge["bridge"]), tuple(subnets))
