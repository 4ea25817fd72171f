"""NetworkService: the Docker domain's networks, their endpoints and the names the embedded DNS answers.

    create/get/all/remove/prune    network objects (user-defined bridges, each its own CNI conflist; a
                                   create's checks and pools: pools.py)
    connect/disconnect             a sandbox in or out of a network (connect.py, through the NetworkManager)
    endpoints(network)             who is attached (inspect's Containers: views.py)
    dns_records                    what each sandbox's embedded DNS server answers (records.py)

Endpoints are not stored here: the NetworkManager's attachment cache is the truth.  This service listens to
its changes (EndpointListener) to keep an in-memory table, start and stop the embedded DNS servers and emit
events (network_events.py), and rebuilds the table from the cache on start (restore.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pkg import errors
from pkg.aio import CleanupStack
from pkg.cni import config as cni_config
from pkg.cni import defaults
from pkg.cni.manager import NetworkManager
from pkg.cni.model import Endpoint, NetworkAttachment, PortMapping
from pkg.config import Config
from pkg.docker.dns.server import DNSServers, host_nameservers
from pkg.docker.networks import conflist, host, restore, views
from pkg.docker.networks import connect as connect_mod
from pkg.docker.networks import pools as pools_mod
from pkg.docker.networks.firewall import BridgeRule, Isolation
from pkg.docker.networks.model import (
    BRIDGE,
    DRIVERS,
    HOST,
    NONE,
    OVERLAY,
    PREDEFINED,
    CreateRequest,
    EndpointView,
    IPAMPool,
    Network,
    Owner,
)
from pkg.docker.networks.model import predefined_id as _predefined_id
from pkg.docker.networks.network_events import NetworkEvents
from pkg.docker.networks.records import DNSRecords
from pkg.docker.networks.store import NetworkFiles

log = logging.getLogger(__name__)


class OwnerLookup(Protocol):
    def owner(self, sandbox_id: str, hint: Endpoint | None = None) -> Owner | None:
        """None: not a Docker container's sandbox (a CRI pod), left out of listings and DNS.  ``hint``,
        one of the sandbox's endpoints, names its pod as the runtime did (for a sandbox still being made)."""


class SandboxLookup(Protocol):
    """What connect/disconnect need of the Docker domain's sandboxes: their netns and files."""

    def netns_and_dir(self, sandbox_id: str) -> tuple[str, str]:
        """(netns path, sandbox dir); "" netns for host networking; NotFound for an unknown sandbox."""

    def dns_servers(self, sandbox_id: str) -> tuple[str, ...]:
        """The DNS servers the sandbox was configured with (none: the host's)."""

    def port_mappings(self, sandbox_id: str) -> tuple[PortMapping, ...]:
        """The ports the sandbox publishes (on whichever network is its eth0, the gateway endpoint)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class NetworkService:
    def __init__(self, cfg: Config, manager: NetworkManager, *, owners: OwnerLookup | None = None,
                 sandboxes: SandboxLookup | None = None, dns_upstream: Callable[[], list[str]] = host_nameservers,
                 ) -> None:
        self.cfg = cfg
        self.manager = manager
        self.owners = owners
        self.sandboxes = sandboxes
        self.files = NetworkFiles(cfg.root / "docker" / "networks")
        self.isolation = Isolation(cfg.instance_id, defaults.bridge_name(cfg))
        self.bridges = host.Bridges()
        self.dns_records = DNSRecords(self)
        self.dns = DNSServers(self.dns_records, dns_upstream)
        self.events = NetworkEvents(self._network_of)
        self.event_hooks = self.events.hooks  # the same list: observers append to it
        self.remote_records: Callable[[str], list[tuple[str, tuple[str, ...]]]] | None = None
        self._networks: dict[str, Network] = {}
        self._table: dict[str, list[Endpoint]] = {}  # sandbox id -> its endpoints, eth0 first
        self._lock = asyncio.Lock()  # create/remove
        manager.resolver = self._resolve_conflist
        manager.named_networks = self._conflists
        manager.listeners.append(self)

    @property
    def running(self) -> Callable[[str], bool] | None:
        """Docker container ID -> running? (the daemon wires it; network_events says why)."""
        return self.events.running

    @running.setter
    def running(self, running: Callable[[str], bool] | None) -> None:
        self.events.running = running

    # ---------------- lifecycle ----------------
    async def start(self) -> None:
        """Load the networks (writing the predefined ones on first start), restore (pkg.docker.networks.restore)
        their bridges and rules, isolation rules, the endpoint table and the DNS servers of sandboxes already
        on user-defined networks."""
        for network in await self.files.load():
            self._networks[network.id] = network
        for name in PREDEFINED:
            if not any(n.name == name for n in self._networks.values()):
                network = self._predefined(name)
                await self.files.put(network)
                self._networks[network.id] = network
        await restore.host_side(self._networks.values(), self.bridges, self.manager)  # (after a reboot too)
        try:
            await self._sync_isolation()
        except errors.NarwhalError as exc:  # containers still run; only isolation is missing: say so loudly
            log.error("networks are not isolated from each other: %s", exc.message)
        await restore.endpoints(self.manager, self.dns, self._table)

    async def stop(self) -> None:
        await self.dns.stop_all()

    def _predefined(self, name: str) -> Network:
        bridge = defaults.bridge_name(self.cfg) if name == BRIDGE else ""
        options = {"com.docker.network.bridge.default_bridge": "true", conflist.BRIDGE_OPTION: bridge,
                   "com.docker.network.bridge.enable_ip_masquerade": "true"} if name == BRIDGE else {}
        return Network(id=_predefined_id(name, self.cfg.instance_id), name=name, driver=DRIVERS[name],
                       created=_now(), bridge=bridge, cni_name=defaults.network_name(self.cfg) if name == BRIDGE
                       else "", options=options)

    # ---------------- queries ----------------
    def all(self) -> list[Network]:
        return sorted(self._networks.values(), key=lambda n: (n.created, n.name))

    def get(self, ref: str) -> Network:
        """By full ID, then exact name, then unique ID prefix (Docker's order)."""
        if ref in self._networks:
            return self._networks[ref]
        by_name = [n for n in self._networks.values() if n.name == ref]
        if by_name:
            return by_name[0]
        by_prefix = [n for n in self._networks.values() if ref and n.id.startswith(ref)]
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            raise errors.InvalidArgument(f"network {ref} is ambiguous ({len(by_prefix)} matches found based on ID "
                                         "prefix)")
        raise errors.NotFound(f"network {ref} not found")

    async def bridge_pools(self) -> tuple[IPAMPool, ...]:
        """The default network's subnets (its IPAM config as Docker's bridge shows it)."""
        try:
            net = await self.manager.network()
        except errors.FailedPrecondition:
            return ()
        return conflist.pools_of(net.raw)

    def endpoints(self, network: Network) -> list[EndpointView]:
        """Containers attached to ``network`` (Docker containers only: CRI pods are left out)."""
        return views.attached(self._table, network, self._owner, self._network_of)

    def sandbox_endpoints(self, sandbox_id: str) -> list[tuple[Network, EndpointView]]:
        """A sandbox's networks with its endpoint on each (for container inspect's NetworkSettings)."""
        owner = self._owner(sandbox_id) or Owner(sandbox_id, "")
        return views.of_sandbox(self._table.get(sandbox_id, []), owner, self._network_of)

    def view(self, owner: Owner, ep: Endpoint, network: Network) -> EndpointView:
        return views.view(owner, ep, network)

    def table(self) -> dict[str, list[Endpoint]]:
        """Every sandbox's endpoints (read-only use: the DNS records)."""
        return self._table

    def owner(self, sandbox_id: str) -> Owner | None:
        return self._owner(sandbox_id)

    def netns_of(self, sandbox_id: str) -> str:
        """A sandbox's netns path ("" when unknown or not a Docker sandbox)."""
        if self.sandboxes is None:
            return ""
        try:
            return self.sandboxes.netns_and_dir(sandbox_id)[0]
        except errors.NarwhalError:
            return ""

    def network_of(self, ep: Endpoint) -> Network | None:
        return self._network_of(ep)

    def remote(self, network_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """Endpoints of other nodes on a swarm overlay (set by pkg.docker.swarm.overlay), for the DNS."""
        return self.remote_records(network_id) if self.remote_records is not None else []

    def dns_servers(self, sandbox_id: str) -> tuple[str, ...]:
        """Where the sandbox's embedded server forwards: its --dns servers, else the host's (empty)."""
        if self.sandboxes is None:
            return ()
        try:
            return self.sandboxes.dns_servers(sandbox_id)
        except errors.NotFound:
            return ()

    def _owner(self, sandbox_id: str, hint: Endpoint | None = None) -> Owner | None:
        if self.owners is None:
            return None
        hint = hint or next(iter(self._table.get(sandbox_id, [])), None)
        return self.owners.owner(sandbox_id, hint)

    def _network_of(self, ep: Endpoint) -> Network | None:
        for network in self._networks.values():
            if (not ep.network and network.name == BRIDGE) or (ep.network and ep.cni_network == network.cni_name):
                return network
        return None

    # ---------------- create ----------------
    async def create(self, req: CreateRequest) -> Network:
        name = req.name
        requested = pools_mod.check_request(req)
        async with self._lock:
            if any(n.name == name for n in self._networks.values()):
                raise errors.Conflict(f"network with name {name} already exists")
            network_id = secrets.token_hex(32)
            bridge = conflist.check_bridge_name(req.options.get(conflist.BRIDGE_OPTION) or
                                                conflist.bridge_name(network_id))
            if any(n.bridge == bridge for n in self._networks.values()):
                raise errors.Conflict(f"bridge name {bridge} is already in use by another network")
            pools = await pools_mod.plan(req, requested, network_id, await self._taken_subnets(), self.cfg.instance_id)
            pool = pools[0]
            network = Network(
                id=network_id, name=name, driver="bridge", created=_now(), bridge=bridge,
                cni_name=conflist.cni_name(self.cfg, network_id), internal=req.internal, attachable=req.attachable,
                labels=dict(req.labels), options=dict(req.options), ipam=tuple(pools),
                ipam_options=dict(req.ipam_options), enable_ipv6=req.enable_ipv6,
            )
            if await self.bridges.exists(bridge):
                raise errors.Conflict(f"bridge name {bridge} is already in use on the host")
            async with CleanupStack() as cleanup:
                await self.files.put(network)
                cleanup.add(f"delete network record {name}", lambda: self.files.delete(network.id))
                self._networks[network.id] = network
                cleanup.add(f"forget network {name}", lambda: self._forget(network))
                cleanup.add(f"delete bridge {bridge}", lambda: self.bridges.delete(bridge))
                for each in pools:
                    await self.bridges.ensure(bridge, each.gateway, ipaddress.ip_network(each.subnet).prefixlen)
                await self._sync_isolation()
                rules = conflist.rules_of(network)
                if rules is not None:
                    cleanup.add(f"delete the rules of network {name}", lambda: self.manager.rules.remove(rules))
                    await self.manager.rules.ensure(rules)
                cleanup.commit()
        log.info("network %s (%s) created: bridge %s, subnet %s%s", name, network_id[:12], bridge, pool.subnet,
                 ", internal" if network.internal else "")
        self.events.emit("create", network)
        return network

    async def set_overlays(self, overlays: list[Network]) -> None:
        """The swarm's overlay networks as this node sees them now (pkg.docker.swarm.overlay keeps them in
        sync from etcd): joinable and listed like the others, never written to disk nor removed here."""
        async with self._lock:
            before = {n.id: n for n in self._networks.values() if n.driver == OVERLAY}
            after = {n.id: n for n in overlays}
            if before == after:
                return
            for network_id in before:
                del self._networks[network_id]
            self._networks.update(after)
            try:
                await self._sync_isolation()
            except errors.NarwhalError as exc:
                log.warning("isolation rules after overlay changes: %s", exc.message)

    async def _forget(self, network: Network) -> None:
        self._networks.pop(network.id, None)
        await self._sync_isolation()

    async def _taken_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for network in self._networks.values():
            pools = await self.bridge_pools() if network.name == BRIDGE else network.ipam
            taken += [ipaddress.ip_network(pool.subnet) for pool in pools]
        return taken

    # ---------------- remove / prune ----------------
    async def remove(self, ref: str) -> None:
        network = self.get(ref)
        if network.predefined:
            raise errors.PermissionDenied(f"{network.name} is a pre-defined network and cannot be removed")
        if network.driver == OVERLAY:
            raise errors.FailedPrecondition(f"network {network.name} is a swarm network: remove it on a manager")
        async with self._lock:
            if network.id not in self._networks:
                return
            if await self._attached(network):
                raise errors.PermissionDenied(f"error while removing network: network {network.name} id "
                                              f"{network.id} has active endpoints")
            await self._destroy(network)

    async def _destroy(self, network: Network) -> None:
        del self._networks[network.id]
        try:
            await self._sync_isolation()
        except errors.NarwhalError as exc:
            log.warning("isolation rules after removing %s: %s", network.name, exc.message)
        rules = conflist.rules_of(network)
        if rules is not None:
            await self.manager.rules.remove(rules)
        await self.bridges.delete(network.bridge)
        await asyncio.to_thread(host.remove_ipam_dir, defaults.ipam_dir(self.cfg) / network.cni_name)
        await self.files.delete(network.id)
        log.info("network %s (%s) removed", network.name, network.id[:12])
        self.events.emit("destroy", network)

    def _in_use(self, network: Network) -> bool:
        return any(self._network_of(ep) is network for eps in self._table.values() for ep in eps)

    async def _attached(self, network: Network) -> bool:
        """In use, or being joined: an ADD in flight has written its attachment record already."""
        if self._in_use(network):
            return True
        for sandbox_id in await self.manager.cache.ids():
            if any(a.network_name == network.cni_name for a in await self.manager.cache.all(sandbox_id)):
                return True
        return False

    async def prune(self, keep: Callable[[Network], bool] = lambda n: False) -> list[str]:
        """Remove every unused user-defined network ``keep`` does not spare; their names."""
        removed = []
        async with self._lock:
            for network in list(self._networks.values()):
                if network.predefined or network.driver == OVERLAY or keep(network) or await self._attached(network):
                    continue
                await self._destroy(network)
                removed.append(network.name)
        return removed

    def dangling(self, network: Network) -> bool:
        return not network.predefined and not self._in_use(network)

    # ---------------- connect / disconnect (pkg.docker.networks.connect) ----------------
    async def connect(self, ref: str, sandbox_id: str, aliases: tuple[str, ...] = (), ipv4: str = "",
                      links: tuple[str, ...] = (), *, mac: str = "", ipv6: str = "") -> EndpointView:
        """Join a running sandbox to a network (Docker's network connect)."""
        return await connect_mod.connect(self, ref, sandbox_id, aliases, ipv4, links, mac=mac, ipv6=ipv6)

    async def disconnect(self, ref: str, sandbox_id: str, force: bool = False) -> None:
        await connect_mod.disconnect(self, ref, sandbox_id, force)

    def check_attachment(self, att: NetworkAttachment) -> NetworkAttachment:
        """Validate what a container asks of a network at create time (the engine's NetworkingConfig)."""
        return connect_mod.check_attachment(self, att)

    # ---------------- the NetworkManager's side ----------------
    async def _resolve_conflist(self, name: str) -> cni_config.NetworkConfigList:
        try:
            network = self.get(name)
        except errors.NotFound:
            raise errors.NotFound(f"network {name} not found") from None
        if network.name in (HOST, NONE) or not network.cni_name:
            raise errors.InvalidArgument(f"network {network.name} cannot be joined this way")
        data = conflist.conflist(self.cfg, network)
        return dataclasses.replace(cni_config.from_dict(data, Path(f"<network {network.name}>")), generated=True)

    async def _conflists(self) -> list[cni_config.NetworkConfigList]:
        return [cni_config.from_dict(conflist.conflist(self.cfg, n), Path(f"<network {n.name}>"))
                for n in self._networks.values() if not n.predefined]

    async def endpoints_changed(self, sandbox_id: str, netns_path: Path | None, endpoints: list[Endpoint]) -> None:
        previous = self._table.get(sandbox_id, [])
        if endpoints:
            self._table[sandbox_id] = endpoints
        else:
            self._table.pop(sandbox_id, None)
        # The events first, with the table, before any await: an AutoRemove container's network is torn down
        # while its exit is handled (pkg.docker.engine.engine), and whichever of the two comes first logs the
        # disconnects, exactly once (here while it still runs, else container_events at the exit).
        self.events.endpoints_changed(self._owner(sandbox_id, next(iter([*endpoints, *previous]), None)), previous,
                                      endpoints)
        if any(e.network for e in endpoints) and netns_path is not None:
            await self.dns.ensure(sandbox_id, netns_path)
        elif not any(e.network for e in endpoints):
            await self.dns.stop(sandbox_id)

    def container_events(self, sandbox_id: str, action: str, mode: str = "") -> None:
        """moby's ``connect``/``disconnect`` for each of the sandbox's networks as its container starts, exits or
        fails to start (pkg.docker.networks.network_events)."""
        self.events.container(self._owner(sandbox_id), action, mode, self._table.get(sandbox_id, []),
                              {n.name: n for n in self._networks.values()})

    async def _sync_isolation(self) -> None:
        await self.isolation.sync([
            BridgeRule(n.bridge, n.internal, conflist.enabled(n.options, conflist.ICC_OPTION))
            for n in self._networks.values() if not n.predefined and n.bridge])
