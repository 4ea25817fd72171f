"""The Docker domain's networks: the predefined bridge/host/none and user-defined bridges.

A user-defined network is immutable once created (Docker has no update), so
the record is one frozen dataclass, persisted as JSON under the Docker root.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

BRIDGE, HOST, NONE = "bridge", "host", "none"
OVERLAY = "overlay"  # a swarm network (pkg.docker.swarm.overlay): not on disk, kept in sync from etcd
PREDEFINED = (BRIDGE, HOST, NONE)
DRIVERS = {BRIDGE: "bridge", HOST: "host", NONE: "null"}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class IPAMPool:
    subnet: str
    gateway: str = ""
    ip_range: str = ""
    aux: dict[str, str] = field(default_factory=dict)  # AuxiliaryAddresses: name -> address, never handed out

    @property
    def version(self) -> int:
        return ipaddress.ip_network(self.subnet, strict=False).version


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    created: str  # RFC 3339, as Docker shows it
    bridge: str = ""  # the Linux bridge ("" for host/none)
    cni_name: str = ""  # the CNI network name (iptables tags, host-local dir)
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    ipam: tuple[IPAMPool, ...] = ()
    ipam_options: dict[str, str] = field(default_factory=dict)
    enable_ipv6: bool = False
    ingress: bool = False  # a swarm's routing-mesh network (overlays only; never on disk)

    @property
    def predefined(self) -> bool:
        """bridge, host and none: listed as builtin, never created nor removed."""
        return self.name in PREDEFINED

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION, "id": self.id, "name": self.name, "driver": self.driver,
            "created": self.created, "bridge": self.bridge, "cniName": self.cni_name, "internal": self.internal,
            "attachable": self.attachable, "labels": self.labels, "options": self.options,
            "ipam": [{"subnet": p.subnet, "gateway": p.gateway, "ipRange": p.ip_range, "aux": p.aux}
                     for p in self.ipam],
            "ipamOptions": self.ipam_options, "enableIPv6": self.enable_ipv6,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Network:
        return cls(
            id=str(data["id"]), name=str(data["name"]), driver=str(data["driver"]), created=str(data["created"]),
            bridge=str(data.get("bridge") or ""), cni_name=str(data.get("cniName") or ""),
            internal=bool(data.get("internal")), attachable=bool(data.get("attachable")),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            options={str(k): str(v) for k, v in (data.get("options") or {}).items()},
            ipam=tuple(IPAMPool(str(p["subnet"]), str(p.get("gateway") or ""), str(p.get("ipRange") or ""),
                                {str(k): str(v) for k, v in (p.get("aux") or {}).items()})
                       for p in data.get("ipam") or ()),
            ipam_options={str(k): str(v) for k, v in (data.get("ipamOptions") or {}).items()},
            enable_ipv6=bool(data.get("enableIPv6")),
        )


def predefined_id(name: str, instance_id: str) -> str:
    """Stable IDs for bridge/host/none: the same across restarts, distinct per instance."""
    return hashlib.sha256(f"narwhal:{instance_id}:network:{name}".encode()).hexdigest()


@dataclass(frozen=True)
class CreateRequest:
    """POST /networks/create, typed."""

    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    ipam_driver: str = "default"
    ipam: tuple[IPAMPool, ...] = ()
    ipam_options: dict[str, str] = field(default_factory=dict)
    enable_ipv6: bool = False
    check_duplicate: bool = True


@dataclass(frozen=True)
class EndpointView:
    """A sandbox's endpoint on a network, with its owner's identity (for inspect's Containers)."""

    owner_id: str  # the Docker container ID (the sandbox ID when no owner is known)
    owner_name: str
    endpoint_id: str
    network_id: str
    mac: str
    ipv4: str  # CIDR
    ipv6: str  # CIDR or ""
    gateway: str
    aliases: tuple[str, ...]
    ifname: str


@dataclass(frozen=True)
class Owner:
    """Who a sandbox is to Docker: the container's ID and name (without the leading "/")."""

    id: str
    name: str


@dataclass(frozen=True)
class NetworkEvent:
    action: str  # create, connect, disconnect, destroy
    network_id: str
    network_name: str
    network_type: str  # the driver
    container: str = ""  # the container ID for connect/disconnect
