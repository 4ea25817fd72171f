"""An overlay network's data plane on one node: a Linux bridge with a kernel vxlan device enslaved.

Like libnetwork's overlay driver, learning is off and the vxlan device answers ARP itself
(``proxy``) from static entries: for every task of the network on another node, a neighbour entry
(its IP -> its MAC) and an FDB entry (its MAC -> that node's VTEP address).  The entries are
written from the task/endpoint records in etcd (``set_peers`` reconciles the whole set), so no
broadcast ever crosses nodes and two nodes never disagree about who owns an address.

Local containers join the bridge through the CNI bridge plugin (the bridge is made here first,
with the network's gateway address, as host.ensure_bridge does for user-defined bridges).

The links are made with iproute2 (``ip``/``bridge``), as pkg/docker/networks/host.py makes bridges: the
same tool both use, JSON output to read the current entries back, ``-n <netns>`` to work inside a
network namespace (the two-netns tests and the multi-node test bed), and no new dependency.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pkg import errors

log = logging.getLogger(__name__)

TIMEOUT = 30.0
VXLAN_OVERHEAD = 50  # outer IPv4 + UDP + VXLAN headers: an overlay's MTU is its underlay's minus this
DEFAULT_MTU = 1450  # moby's overlay default (1500 - 50)


@dataclass(frozen=True)
class Segment:
    """One overlay network on one node."""

    bridge: str  # the Linux bridge containers join (<= 15 characters)
    vxlan: str  # the vxlan device enslaved to it
    vni: int
    port: int  # the UDP destination port (the swarm's DataPathPort, 4789 by default)
    local: str  # this node's VTEP address (its data path / advertise address)
    gateway: str = ""  # CIDR given to the bridge (the network's gateway), "" for none
    mtu: int = DEFAULT_MTU
    # this node's own endpoint on the network (ingress: the routing mesh's source address), CIDR, on the bridge
    # too, with the bridge's MAC set to the one peers derive from it, so their answers are delivered to this host
    address: str = ""
    mac: str = ""


@dataclass(frozen=True, order=True)
class Peer:
    """A remote endpoint: its overlay address and MAC, and the VTEP of the node it runs on."""

    ip: str
    mac: str
    vtep: str


class DataPlane:
    """The link operations of overlay segments in one network namespace (None: narwhald's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    async def _run(self, tool: str, *args: str, check: bool = True) -> tuple[int, str]:
        argv = [tool, *(("-n", self.netns) if self.netns else ()), *args]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise errors.DeadlineExceeded(f"{' '.join(argv)} did not finish within {TIMEOUT:g}s") from None
        if check and proc.returncode:
            raise errors.Internal(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
        return proc.returncode or 0, (out if proc.returncode == 0 else err).decode(errors="replace")

    async def _json(self, tool: str, *args: str) -> list[dict[str, Any]]:
        rc, out = await self._run(tool, "-j", *args, check=False)
        if rc or not out.strip():
            return []
        data = json.loads(out)
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    async def exists(self, name: str) -> bool:
        rc, _ = await self._run("ip", "link", "show", "dev", name, check=False)
        return rc == 0

    async def ensure(self, seg: Segment) -> None:
        """Bridge and vxlan device, up, the vxlan enslaved; idempotent (a restart finds them made).  A
        vxlan device of another VNI or port under the same name is replaced."""
        rc, err = await self._run("ip", "link", "add", seg.bridge, "mtu", str(seg.mtu), "type", "bridge",
                                  check=False)
        if rc and "File exists" not in err:
            raise errors.Internal(f"create bridge {seg.bridge}: {err.strip()}")
        made_bridge = rc == 0
        current = await self._json("ip", "-d", "link", "show", "dev", seg.vxlan)
        info = ((current[0].get("linkinfo") or {}).get("info_data") or {}) if current else {}
        if current and (info.get("id") != seg.vni or info.get("port") != seg.port or info.get("local") != seg.local):
            await self._run("ip", "link", "delete", seg.vxlan)
            current = []
        if not current:
            rc, err = await self._run("ip", "link", "add", seg.vxlan, "mtu", str(seg.mtu), "type", "vxlan",
                                      "id", str(seg.vni), "dstport", str(seg.port), "local", seg.local,
                                      "nolearning", "proxy", check=False)
            if rc:
                if made_bridge:  # nothing half-made left behind
                    await self._run("ip", "link", "delete", seg.bridge, check=False)
                if "File exists" in err or "already exists" in err:  # (VNI, port) taken
                    raise errors.AlreadyExists(f"vxlan id {seg.vni} on port {seg.port} is already in use on this "
                                               f"node: {err.strip()}")
                raise errors.Internal(f"create vxlan {seg.vxlan}: {err.strip()}")
        await self._run("ip", "link", "set", seg.vxlan, "master", seg.bridge)
        if seg.mac:
            await self._run("ip", "link", "set", seg.bridge, "address", seg.mac)
        for cidr in (seg.gateway, seg.address):
            if cidr:
                await self._run("ip", "addr", "replace", cidr, "dev", seg.bridge)
        await self._prune_addresses(seg)
        for name in (seg.vxlan, seg.bridge):
            await self._run("ip", "link", "set", name, "up")

    async def _prune_addresses(self, seg: Segment) -> None:
        """IPv4 addresses on the bridge that the segment no longer has (a node endpoint given back); a bridge
        without a gateway is not ours to tidy."""
        if not seg.gateway:
            return
        keep = {cidr for cidr in (seg.gateway, seg.address) if cidr}
        for link in await self._json("ip", "-4", "addr", "show", "dev", seg.bridge):
            for info in link.get("addr_info") or []:
                cidr = f"{info.get('local')}/{info.get('prefixlen')}"
                if info.get("family") == "inet" and cidr not in keep:
                    await self._run("ip", "addr", "del", cidr, "dev", seg.bridge, check=False)

    async def peers(self, seg: Segment) -> set[Peer]:
        """The static entries now on the vxlan device, as peers (an FDB entry and a neighbour per MAC)."""
        vteps = {str(e["mac"]): str(e["dst"]) for e in await self._json("bridge", "fdb", "show", "dev", seg.vxlan)
                 if e.get("dst") and e.get("mac") and e.get("mac") != "00:00:00:00:00:00"}
        found = set()
        for n in await self._json("ip", "neigh", "show", "dev", seg.vxlan):
            mac = str(n.get("lladdr") or "")
            if mac in vteps and n.get("dst"):
                found.add(Peer(str(n["dst"]), mac, vteps[mac]))
        return found

    async def set_peers(self, seg: Segment, wanted: Iterable[Peer]) -> None:
        """Make the device's static entries exactly ``wanted`` (a level-triggered reconcile)."""
        want = set(wanted)
        have = await self.peers(seg)
        for peer in sorted(have - want):
            await self._run("ip", "neigh", "del", peer.ip, "dev", seg.vxlan, check=False)
            await self._run("bridge", "fdb", "del", peer.mac, "dev", seg.vxlan, "dst", peer.vtep, "self",
                            check=False)
        for peer in sorted(want - have):
            await self._run("bridge", "fdb", "replace", peer.mac, "dev", seg.vxlan, "dst", peer.vtep, "self",
                            "permanent")
            await self._run("ip", "neigh", "replace", peer.ip, "lladdr", peer.mac, "dev", seg.vxlan, "nud",
                            "permanent")

    async def delete(self, seg: Segment) -> None:
        """Remove both links (the vxlan first); missing ones are fine."""
        for name in (seg.vxlan, seg.bridge):
            await self.remove_link(name)

    async def remove_link(self, name: str) -> None:
        rc, err = await self._run("ip", "link", "delete", name, check=False)
        if rc and "Cannot find device" not in err:
            log.warning("delete %s: %s", name, err.strip())


def mac_for(ip: str) -> str:
    """A task's MAC derived from its overlay IPv4 address (02:42 + the four bytes, as moby's
    GenerateMACFromIP): peers can then be written from the address alone."""
    octets = [int(o) for o in ip.split(".")]
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)
