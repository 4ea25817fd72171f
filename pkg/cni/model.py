"""Typed models between the runtime (sandboxes) and CNI networking."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pkg.model.network import NetworkAttachment as NetworkAttachment
from pkg.model.network import PortMapping as PortMapping  # re-exported: defined with the models


@dataclass(frozen=True)
class PodNetworkRequest:
    """What a sandbox asks of the network: the netns to wire and the pod's identity."""

    sandbox_id: str
    netns_path: Path
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    port_mappings: list[PortMapping] = field(default_factory=list)
    bandwidth_ingress: int = 0  # bits/s, 0 = unlimited (from kubernetes.io/ingress-bandwidth)
    bandwidth_egress: int = 0
    ips: list[str] = field(default_factory=list)  # requested pod IPs (the "ips" capability), if any
    mac: str = ""  # requested MAC of the pod's interface (the "mac" capability), if any
    networks: tuple[NetworkAttachment, ...] = ()  # empty: the default network only


@dataclass(frozen=True)
class PodNetworkStatus:
    ip: str
    additional_ips: list[str] = field(default_factory=list)
    interface: str = "eth0"
    network_name: str = ""
    mac: str = ""
    gateway: str = ""  # of the primary IP


DEFAULT_NETWORK = "bridge"  # Docker's name for the default network (CRI pods only ever use it)
NO_NETWORK = "none"  # a netns with loopback only


@dataclass(frozen=True)
class Endpoint:
    """One interface of a sandbox on one network, as attached (from the attachment cache)."""

    sandbox_id: str
    network: str  # as requested ("" = the default network)
    cni_network: str  # the CNI network name (iptables tags, host-local dir)
    ifname: str
    ip: str = ""  # IPv4 address (or the first address) without prefix
    prefix_len: int = 0
    mac: str = ""
    gateway: str = ""
    ipv6: str = ""
    ipv6_prefix_len: int = 0
    aliases: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  # as NetworkAttachment.links
    pod_name: str = ""  # the pod's identity as the runtime gave it at ADD (PodNetworkRequest)
    pod_uid: str = ""
