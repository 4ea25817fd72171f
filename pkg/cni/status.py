"""What the attachment cache says about a sandbox: its pod status, its endpoints; and the conflist
variant a sandbox's further interfaces are ADDed with."""
from __future__ import annotations

import copy
import dataclasses
import ipaddress

from pkg import errors
from pkg.cni import result as cni_result
from pkg.cni.cache import Attachment
from pkg.cni.config import NetworkConfigList
from pkg.cni.model import NO_NETWORK, Endpoint, PodNetworkStatus


def pod_status(att: Attachment, network_name: str) -> PodNetworkStatus:
    """One completed attachment's status (IPv4 first, as containerd orders a pod's IPs)."""
    assert att.result is not None
    res = cni_result.parse(att.result, str(att.config.get("cniVersion", "")))
    ips = res.sandbox_ips(att.ifname)
    if not ips:
        raise errors.Internal(f"CNI network {network_name} returned no IP for {att.ifname}")
    # IPv4 first, as containerd does: the primary pod IP, the rest for dual stack.
    ordered = sorted(ips, key=lambda i: i.version)
    mac = next((i.mac for i in res.interfaces if i.name == att.ifname and i.sandbox), "")
    return PodNetworkStatus(
        ip=ordered[0].ip, additional_ips=[i.ip for i in ordered[1:]], interface=att.ifname,
        network_name=network_name, mac=mac, gateway=ordered[0].gateway,
    )


def sandbox_status(attachments: list[Attachment]) -> PodNetworkStatus:
    """The pod's status is its first interface's; a loopback-only sandbox has no IP."""
    if not attachments:
        return PodNetworkStatus(ip="", interface="lo", network_name=NO_NETWORK)
    return pod_status(attachments[0], attachments[0].network_name)


# Endpoints of the attachments the cache keeps (by identity: a kept Attachment is frozen, a change is a new
# one): every `docker inspect` (the CLI makes one before each `docker exec`) parsed the same CNI results
# again (issue 21, round three).  Bounded; an entry holds its attachment, so its id is not reused meanwhile.
_ENDPOINTS: dict[int, tuple[Attachment, Endpoint]] = {}
_ENDPOINTS_KEPT = 1024


def endpoint(att: Attachment) -> Endpoint:
    """A completed attachment as the Docker side sees it (addresses with prefix lengths, MAC, aliases)."""
    kept = _ENDPOINTS.get(id(att))
    if kept is not None and kept[0] is att:
        return kept[1]
    found = _endpoint(att)
    if len(_ENDPOINTS) >= _ENDPOINTS_KEPT:
        _ENDPOINTS.clear()
    _ENDPOINTS[id(att)] = (att, found)
    return found


def _endpoint(att: Attachment) -> Endpoint:
    status = pod_status(att, att.network_name)
    res = cni_result.parse(att.result or {}, str(att.config.get("cniVersion", "")))
    by_ip = {i.ip: ipaddress.ip_interface(i.address) for i in res.sandbox_ips(att.ifname)}
    v6 = next((i for i in by_ip.values() if i.version == 6), None)
    args = dict(pair.partition("=")[::2] for pair in att.cni_args.split(";") if "=" in pair)
    first = by_ip[status.ip]
    return Endpoint(
        sandbox_id=att.sandbox_id, network=att.network, cni_network=att.network_name, ifname=att.ifname,
        ip=status.ip if first.version == 4 else "", prefix_len=first.network.prefixlen if first.version == 4 else 0,
        mac=status.mac, gateway=status.gateway if first.version == 4 else "",
        ipv6=str(v6.ip) if v6 else "", ipv6_prefix_len=v6.network.prefixlen if v6 else 0, aliases=att.aliases,
        links=att.links, pod_name=args.get("K8S_POD_NAME", ""), pod_uid=args.get("K8S_POD_UID", ""),
    )


def ifname_key(ifname: str) -> tuple[int, str]:
    digits = ifname.removeprefix("eth")
    return (int(digits), ifname) if (digits.isascii() and digits.isdigit()) else (1 << 30, ifname)


def without_default_routes(net: NetworkConfigList) -> NetworkConfigList:
    """The conflist with its IPAM default routes dropped (for a sandbox's further interfaces)."""
    raw = copy.deepcopy(net.raw)
    for plugin in raw.get("plugins") or []:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if isinstance(ipam, dict) and isinstance(ipam.get("routes"), list):
            ipam["routes"] = [r for r in ipam["routes"]
                              if not (isinstance(r, dict) and r.get("dst") in ("0.0.0.0/0", "::/0"))]
    return dataclasses.replace(net, plugins=list(raw.get("plugins") or []), raw=raw)
