"""A sandbox's network asks as plain data: published ports and the named networks it joins (pkg.cni attaches
them).  With the models so that pkg.model depends on nothing above it; pkg.cni.model re-exports them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int
    protocol: str = "tcp"  # tcp, udp or sctp
    host_ip: str = ""


@dataclass(frozen=True)
class NetworkAttachment:
    """One network a sandbox joins (Docker's user-defined networks); none listed = the default network."""

    network: str  # the network's name as the Docker domain knows it ("bridge" = the default network)
    aliases: tuple[str, ...] = ()  # extra DNS names on that network
    ipv4: str = ""  # requested address, if any
    links: tuple[str, ...] = ()  # Docker's endpoint Links ("name:alias"): names only this sandbox resolves
    mac: str = ""  # requested MAC address of this interface (the tuning plugin's "mac" capability), if any
    ipv6: str = ""  # requested IPv6 address, if any
