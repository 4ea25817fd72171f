"""What each sandbox's embedded DNS server answers (pkg.docker.dns.server.Records), from the endpoint table.

Docker's rules: a container on user-defined networks resolves, on each of
those networks, the other containers' names, short IDs and aliases (also as
``<name>.<network>``); the first network with a match answers.  An
endpoint's Links ("name:alias", moby's legacy --link on a user network) are
names only that sandbox resolves, to the linked container on that network;
they are tried before anyone's names, as libnetwork does.  Containers
only on the default bridge get no names.  Nothing is forwarded for a
sandbox whose networks are all internal.
"""
from __future__ import annotations

from typing import Protocol

from pkg.cni.model import Endpoint
from pkg.docker.networks.model import Network


class _Owner(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


class EndpointTable(Protocol):
    def table(self) -> dict[str, list[Endpoint]]: ...

    def owner(self, sandbox_id: str) -> _Owner | None: ...

    def network_of(self, ep: Endpoint) -> Network | None: ...

    def dns_servers(self, sandbox_id: str) -> tuple[str, ...]: ...

    def remote(self, network_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """(address, names) of endpoints on other nodes (swarm overlays); [] for local networks."""


class DNSRecords:
    def __init__(self, endpoints: EndpointTable) -> None:
        self.endpoints = endpoints

    def _user_networks_of(self, sandbox_id: str) -> list[Network]:
        nets = []
        for ep in self.endpoints.table().get(sandbox_id, []):
            network = self.endpoints.network_of(ep) if ep.network else None
            if network is not None:
                nets.append(network)
        return nets

    def _names(self, sandbox_id: str, ep: Endpoint) -> set[str]:
        owner = self.endpoints.owner(sandbox_id)
        names = {a.lower() for a in ep.aliases}
        if owner is not None:
            if owner.name:
                names.add(owner.name.lower().lstrip("/"))
            names.add(owner.id[:12].lower())
        return names

    def _linked(self, sandbox_id: str, name: str) -> tuple[str, Network] | None:
        """The linked container's name and network when ``name`` is one of this sandbox's link aliases."""
        for ep in self.endpoints.table().get(sandbox_id, []):
            network = self.endpoints.network_of(ep) if ep.network else None
            if network is None:
                continue
            for link in ep.links:
                target, _, alias = link.partition(":")
                alias = (alias or target).strip("/").lower()
                if name in (alias, f"{alias}.{network.name.lower()}"):
                    return target.strip("/").lower(), network
        return None

    def lookup(self, sandbox_id: str, name: str) -> list[str] | None:
        name = name.rstrip(".").lower()
        linked = self._linked(sandbox_id, name)
        if linked is not None:
            found = self._on_network(linked[1], linked[0])
            if found is not None:
                return found
        for network in self._user_networks_of(sandbox_id):
            found = self._on_network(network, name)
            if found is not None:
                return found
        return None

    def _on_network(self, network: Network, name: str) -> list[str] | None:
        """The addresses of whatever is called ``name`` on ``network`` (None: nothing is)."""
        found: list[str] = []
        matched = False
        for other, endpoints in self.endpoints.table().items():
            for ep in endpoints:
                if self.endpoints.network_of(ep) is not network:
                    continue
                names = self._names(other, ep)
                if name in names or name in {f"{n}.{network.name.lower()}" for n in names}:
                    matched = True
                    found += [ip for ip in (ep.ip, ep.ipv6) if ip]
        for ip, remote_names in self.endpoints.remote(network.id):
            lowered = {n.lower() for n in remote_names}
            if name in lowered or name in {f"{n}.{network.name.lower()}" for n in lowered}:
                matched = True
                found.append(ip)
        return found if matched else None

    def reverse(self, sandbox_id: str, ip: str) -> str | None:
        table = self.endpoints.table()
        for network in self._user_networks_of(sandbox_id):
            for other, endpoints in table.items():
                for ep in endpoints:
                    if self.endpoints.network_of(ep) is network and ip in (ep.ip, ep.ipv6):
                        owner = self.endpoints.owner(other)
                        if owner is not None and owner.name:
                            return f"{owner.name.lstrip('/')}.{network.name}"
                        return f"{ep.aliases[0]}.{network.name}" if ep.aliases else None
        return None

    def forwards(self, sandbox_id: str) -> bool:
        return any(not n.internal for n in self._user_networks_of(sandbox_id))

    def upstreams(self, sandbox_id: str) -> tuple[str, ...]:
        return self.endpoints.dns_servers(sandbox_id)
