"""What inspect shows of the endpoints: a network's containers, a container's networks, stable endpoint IDs.

Separate from pkg.docker.networks.service because it only reads: the service's endpoint table (kept from the
NetworkManager's changes) seen through whose sandbox each is (``owner``: CRI pods are left out) and which
network each endpoint is on; no lock, no host change.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from pkg.cni.model import Endpoint
from pkg.docker.networks.model import EndpointView, Network, Owner

NetworkOf = Callable[[Endpoint], Network | None]


def endpoint_id(sandbox_id: str, network_id: str) -> str:
    """Stable per (sandbox, network): the same across daemon restarts."""
    return hashlib.sha256(f"{sandbox_id}:{network_id}".encode()).hexdigest()


def view(owner: Owner, ep: Endpoint, network: Network) -> EndpointView:
    return EndpointView(
        owner_id=owner.id, owner_name=owner.name, endpoint_id=endpoint_id(ep.sandbox_id, network.id),
        network_id=network.id, mac=ep.mac, ipv4=f"{ep.ip}/{ep.prefix_len}" if ep.ip else "",
        ipv6=f"{ep.ipv6}/{ep.ipv6_prefix_len}" if ep.ipv6 else "", gateway=ep.gateway, aliases=ep.aliases,
        ifname=ep.ifname,
    )


def attached(table: Mapping[str, list[Endpoint]], network: Network, owner_of: Callable[[str], Owner | None],
             network_of: NetworkOf) -> list[EndpointView]:
    """Containers attached to ``network`` (Docker containers only: CRI pods are left out), by name."""
    views = []
    for sandbox_id, endpoints in table.items():
        owner = owner_of(sandbox_id)
        if owner is None:
            continue
        for ep in endpoints:
            if network_of(ep) is network:
                views.append(view(owner, ep, network))
    return sorted(views, key=lambda v: v.owner_name)


def of_sandbox(endpoints: list[Endpoint], owner: Owner, network_of: NetworkOf) -> list[tuple[Network, EndpointView]]:
    """A sandbox's networks with its endpoint on each, in interface order (inspect's NetworkSettings)."""
    out = []
    for ep in endpoints:
        network = network_of(ep)
        if network is not None:
            out.append((network, view(owner, ep, network)))
    return out
