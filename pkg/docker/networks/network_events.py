"""moby's network events: create/destroy of a network, connect/disconnect of a container, and when each is logged.

Separate from pkg.docker.networks.service because the rules are moby's and only about logging: connect and
disconnect are logged for a running container's endpoint changes only; a container's start logs a connect for
each of its networks (initializeNetworking) and its exit or failed start a disconnect for each (Cleanup's
releaseNetwork, before "die"), ``host`` and ``none`` containers included though they have no endpoint; CRI
pods log nothing.  Observers are hooks; one that raises never breaks the network operation.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from pkg.cni.model import Endpoint
from pkg.docker.networks.model import HOST, NONE, Network, NetworkEvent, Owner

log = logging.getLogger(__name__)

EventHook = Callable[[NetworkEvent], None]


class NetworkEvents:
    def __init__(self, network_of: Callable[[Endpoint], Network | None]) -> None:
        self.hooks: list[EventHook] = []
        # Docker container ID -> running?  moby logs connect/disconnect only for a running container's endpoints
        # (a create, a connect to a stopped container, a removal log none); None: every change is logged.
        self.running: Callable[[str], bool] | None = None
        self._network_of = network_of

    def emit(self, action: str, network: Network, container: str = "") -> None:
        event = NetworkEvent(action, network.id, network.name, network.driver, container)
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:  # noqa: BLE001 - an observer must not break the network operation
                log.exception("network event hook failed")

    def endpoints_changed(self, owner: Owner | None, previous: list[Endpoint], endpoints: list[Endpoint]) -> None:
        """A sandbox's endpoints went from ``previous`` to ``endpoints`` (the NetworkManager's change)."""
        if owner is None:
            return  # a CRI pod: no Docker events
        if self.running is not None and not self.running(owner.id):
            return  # its start logs the connects, its exit the disconnects (container_events)
        old = {(e.network, e.cni_network) for e in previous}
        new = {(e.network, e.cni_network) for e in endpoints}
        changes = [("connect", e) for e in endpoints if (e.network, e.cni_network) not in old]
        changes += [("disconnect", e) for e in previous if (e.network, e.cni_network) not in new]
        for action, ep in changes:  # in interface order
            network = self._network_of(ep)
            if network is not None:
                self.emit(action, network, owner.id)

    def container(self, owner: Owner | None, action: str, mode: str, endpoints: list[Endpoint],
                  by_name: dict[str, Network]) -> None:
        """``action`` (connect/disconnect) for each network of a container starting or exiting; a container of
        network mode ``host`` or ``none`` is connected to that predefined network all the same."""
        if owner is None:
            return
        if mode in (HOST, NONE) and mode in by_name:
            self.emit(action, by_name[mode], owner.id)
            return
        for ep in endpoints:  # in interface order
            network = self._network_of(ep)
            if network is not None:
                self.emit(action, network, owner.id)
