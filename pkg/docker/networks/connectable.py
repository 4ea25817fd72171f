"""What connect/disconnect (pkg.docker.networks.connect) need of the NetworkService, by shape: service.py
imports connect, so connect names the service through these Protocols instead of importing it back."""
from __future__ import annotations

from typing import Protocol

from pkg.cni.manager import NetworkManager
from pkg.cni.model import Endpoint, PortMapping
from pkg.docker.networks.model import EndpointView, Network, Owner


class Sandboxes(Protocol):
    def netns_and_dir(self, sandbox_id: str) -> tuple[str, str]: ...

    def port_mappings(self, sandbox_id: str) -> tuple[PortMapping, ...]: ...


class Networks(Protocol):
    @property
    def manager(self) -> NetworkManager: ...
    @property
    def sandboxes(self) -> Sandboxes | None: ...

    def get(self, ref: str) -> Network: ...

    def owner(self, sandbox_id: str) -> Owner | None: ...

    def view(self, owner: Owner, ep: Endpoint, network: Network) -> EndpointView: ...
