"""Typed CNI results (spec 1.0), read from any result version a plugin may print.

0.3.0 and later share the 1.0 shape (``interfaces``/``ips``/``routes``/``dns``;
0.3.x adds a ``version`` key per IP).  0.1.0/0.2.0 results have ``ip4``/``ip6``
objects; they are converted so the rest of the code sees one shape.  The raw
JSON is kept: it is what the next plugin and DEL/CHECK receive as prevResult.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pkg import errors


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""  # the netns path for interfaces inside the pod; "" on the host


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR, e.g. 10.1.2.3/24
    gateway: str = ""
    interface: int | None = None  # index into Result.interfaces

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str = ""


@dataclass(frozen=True)
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    cni_version: str
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def sandbox_ips(self, ifname: str) -> list[IPConfig]:
        """IPs on the pod's ``ifname`` (IPs bound to no interface count too, as in containerd)."""
        chosen = []
        for ip in self.ips:
            if ip.interface is None or not 0 <= ip.interface < len(self.interfaces):
                chosen.append(ip)
                continue
            iface = self.interfaces[ip.interface]
            if iface.name == ifname and iface.sandbox:
                chosen.append(ip)
        return chosen


def _str_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _valid_cidr(value: Any, what: str) -> str:
    try:
        return str(ipaddress.ip_interface(str(value)))
    except ValueError:
        raise errors.Internal(f"CNI result has an invalid {what}: {value!r}") from None


def _dns(data: Any) -> DNS:
    if not isinstance(data, dict):
        return DNS()
    return DNS(
        nameservers=_str_list(data.get("nameservers")),
        domain=str(data.get("domain") or ""),
        search=_str_list(data.get("search")),
        options=_str_list(data.get("options")),
    )


def _routes(data: Any) -> list[Route]:
    if not isinstance(data, list):
        return []
    return [Route(dst=str(r.get("dst", "")), gw=str(r.get("gw") or "")) for r in data if isinstance(r, dict)]


def _upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """0.1.0/0.2.0 ``{"ip4": {...}, "ip6": {...}}`` → the 1.0 shape (no interfaces known)."""
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for key in ("ip4", "ip6"):
        block = data.get(key)
        if isinstance(block, dict) and block.get("ip"):
            ips.append({"address": block["ip"], **({"gateway": block["gateway"]} if block.get("gateway") else {})})
            routes.extend(r for r in block.get("routes") or [] if isinstance(r, dict))
    return {"cniVersion": "1.0.0", "ips": ips, "routes": routes, "dns": data.get("dns") or {}}


def parse(data: Any, version: str = "") -> Result:
    """Parse a plugin's stdout JSON (already decoded) into a Result."""
    if not isinstance(data, dict):
        raise errors.Internal(f"CNI result is not a JSON object: {data!r:.200}")
    cni_version = str(data.get("cniVersion") or version or "0.2.0")
    if "ip4" in data or "ip6" in data or cni_version in ("0.1.0", "0.2.0"):
        shaped = _upgrade_legacy(data)
    else:
        shaped = data
    interfaces = [
        Interface(name=str(i.get("name", "")), mac=str(i.get("mac") or ""), sandbox=str(i.get("sandbox") or ""))
        for i in shaped.get("interfaces") or []
        if isinstance(i, dict)
    ]
    ips = []
    for ip in shaped.get("ips") or []:
        if not isinstance(ip, dict):
            continue
        index = ip.get("interface")
        ips.append(
            IPConfig(
                address=_valid_cidr(ip.get("address"), "IP address"),
                gateway=str(ip.get("gateway") or ""),
                interface=index if isinstance(index, int) else None,
            )
        )
    return Result(
        cni_version=cni_version,
        interfaces=interfaces,
        ips=ips,
        routes=_routes(shaped.get("routes")),
        dns=_dns(shaped.get("dns")),
        raw=data,
    )
