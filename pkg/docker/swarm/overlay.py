"""This node's side of the overlay networks: kept level-triggered in sync with etcd.

Each pass (every second, and right after a network create/remove through this node):

- the swarm's overlay networks become local ``Network`` records of the NetworkService (driver
  ``overlay``, scope swarm), so ``docker run --network ov``, task containers, inspect and the
  embedded DNS treat them like user-defined bridges;
- each gets its data plane here (vxlan.py: bridge ``nwo<id>`` + vxlan ``nwv<id>``, VNI from the
  network record, the swarm's DataPathPort, this node's advertise address as VTEP) with one static
  peer per address other nodes hold on it (the address's node -> that node's ``Status.Addr``);
- segments of networks gone from etcd (or of a swarm this node left) are deleted.

Addresses come from the cluster IPAM (ipam.py), claimed for a sandbox just before its CNI ADD (the
NetworkManager's attachment hook; the MAC derives from the address so peers need only the address)
and released when the sandbox leaves the network; a pass also releases what this node holds for
sandboxes that no longer exist (a crash between claim and ADD).  The links made are listed in
``<state>/swarm/overlay-links.json`` so ``narwhald cleanup`` removes them without the store.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from pkg import errors
from pkg.cni import defaults
from pkg.cni.model import Endpoint, NetworkAttachment, PodNetworkRequest
from pkg.config import Config
from pkg.docker.networks.conflist import OVERLAY_MTU
from pkg.docker.networks.model import OVERLAY, IPAMPool, Network
from pkg.docker.swarm import allocation, ipam, vip
from pkg.docker.swarm import networks as swarm_networks
from pkg.docker.swarm.cluster import Cluster
from pkg.docker.swarm.store import Store
from pkg.docker.swarm.vxlan import DataPlane, Peer, Segment, mac_for

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DEFAULT_DATA_PATH_PORT = 4789
PASS_INTERVAL = 1.0
CLAIM_GRACE = 120.0  # a claim older than this whose sandbox never got the endpoint: its ADD failed


class SwarmView(Protocol):
    """What this module needs of the Cluster: is the node in a swarm, who is it, its store."""

    @property
    def active(self) -> bool: ...

    @property
    def store(self) -> Store | None: ...

    def node_identity(self) -> tuple[str, str]:
        """(node ID, advertise host) of this node; ("", "") outside a swarm."""


class LocalNetworks(Protocol):
    """The NetworkService's side: overlay records in, the endpoint table out."""

    async def set_overlays(self, overlays: list[Network]) -> None: ...

    def get(self, ref: str) -> Network: ...

    def table(self) -> dict[str, list[Endpoint]]: ...

    def netns_of(self, sandbox_id: str) -> str:
        """The sandbox's netns path ("" when unknown)."""


class ClusterView:
    """The Cluster as this module sees it (SwarmView)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @property
    def active(self) -> bool:
        return self.cluster.active

    @property
    def store(self) -> Store | None:
        return self.cluster.store

    def node_identity(self) -> tuple[str, str]:
        node = self.cluster.node
        if node is None:
            return "", ""
        return node.node_id, node.advertise_addr.rpartition(":")[0].strip("[]")


def cni_name(cfg: Config, network_id: str) -> str:
    return f"narwhal-{cfg.instance_id}-{network_id[:12].lower()}"


def bridge_name(network_id: str) -> str:
    return f"nwo{network_id[:12].lower()}"


def vxlan_name(network_id: str) -> str:
    return f"nwv{network_id[:12].lower()}"


def local_network(cfg: Config, record: Obj) -> Network:
    """The NetworkService's view of a swarm network record."""
    spec = record["Spec"]
    subnet, gateway = swarm_networks.pool(record)
    return Network(
        id=record["ID"], name=spec["Name"], driver=OVERLAY, created=record.get("CreatedAt", ""),
        bridge=bridge_name(record["ID"]), cni_name=cni_name(cfg, record["ID"]),
        internal=bool(spec.get("Internal")), attachable=bool(spec.get("Attachable")),
        labels=dict(spec.get("Labels") or {}), options=dict((record.get("DriverState") or {}).get("Options") or {}),
        ipam=(IPAMPool(subnet, gateway),), ingress=bool(spec.get("Ingress")),
    )


class OverlayNode:
    def __init__(self, cfg: Config, swarm: SwarmView, local: LocalNetworks, plane: DataPlane | None = None) -> None:
        self.cfg = cfg
        self.swarm = swarm
        self.local = local
        self.plane = plane or DataPlane()
        self.links_file = cfg.state / "docker" / "swarm" / "overlay-links.json"
        self._segments: dict[str, Segment] = {}  # network ID -> its segment on this node
        self._remote: dict[str, list[tuple[str, tuple[str, ...]]]] = {}  # network ID -> other nodes' (ip, names)
        # sandbox ID -> overlay network ID -> when its address was claimed (a failed ADD never tells us)
        self._held: dict[str, dict[str, float]] = {}
        self._vip_applied: dict[str, vip.Plan] = {}  # sandbox ID -> the VIP plan its chain holds
        self._saved: list[str] | None = None  # what links_file holds (None: not read or written yet)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # ---- the loop ----
    async def run(self) -> None:
        """Passes until cancelled; a failed pass is logged and retried (etcd may be restarting)."""
        last = ""
        while True:
            try:
                await self.sync()
                last = ""
            except errors.NarwhalError as exc:
                if exc.message != last:  # once per new trouble, not every second while etcd has no quorum
                    log.warning("overlay networks: %s", exc.message)
                last = exc.message
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PASS_INTERVAL)

    def wake(self) -> None:
        self._wake.set()

    def remote_names(self, network_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """(address, names) of the endpoints other nodes have on the network, as of the last pass (for the
        embedded DNS: service names, tasks.<service> and task names resolve across nodes)."""
        return self._remote.get(network_id, [])

    def local_routes(self) -> tuple[str, ...]:
        """This node's routes, which a new overlay subnet must not overlap (other instances' bridges
        included); its own overlay segments are not in the way of their own subnets: etcd has those."""
        return tuple(str(n) for n in defaults.host_routes_v4())

    async def sync(self) -> None:
        async with self._lock:
            store = self.swarm.store
            if not self.swarm.active or store is None:
                await self._teardown()
                return
            node_id, vtep = self.swarm.node_identity()
            records = await swarm_networks.all_networks(store)
            cluster = await store.get_cluster() or {}
            port = int(cluster.get("DataPathPort") or DEFAULT_DATA_PATH_PORT)
            nodes = {n["ID"]: str((n.get("Status") or {}).get("Addr") or "") for n in await store.list("nodes")}
            await self.local.set_overlays([local_network(self.cfg, r) for r in records])
            wanted = {r["ID"]: r for r in records}
            for network_id in [n for n in self._segments if n not in wanted]:
                await self.plane.delete(self._segments.pop(network_id))
            self._save()
            try:
                if await store.leader() == node_id:  # the allocator's part (allocation.py)
                    await allocation.sync_vips(store, records)
                    await allocation.sweep_node_endpoints(store, records, set(nodes))
            except errors.NarwhalError as exc:
                log.warning("service VIPs: %s", exc.message)
            plans: dict[str, vip.Plan] = {}
            for record in wanted.values():
                try:
                    plans[record["ID"]] = await self._sync_network(store, record, node_id, vtep, port, nodes)
                except errors.NarwhalError as exc:  # one network's trouble must not stall the others
                    log.warning("overlay network %s: %s", record["Spec"]["Name"], exc.message)
            await self._apply_vips(plans)

    async def _apply_vips(self, plans: dict[str, vip.Plan]) -> None:
        """Each local sandbox's VIP chain: the plans of the overlays it is on, rewritten when they change."""
        cni = {cni_name(self.cfg, network_id): plan for network_id, plan in plans.items()}
        for sandbox_id, endpoints in list(self.local.table().items()):
            plan: vip.Plan = {}
            for ep in endpoints:
                plan.update(cni.get(ep.cni_network, {}))
            if not plan and sandbox_id not in self._vip_applied:
                continue
            if self._vip_applied.get(sandbox_id) == plan:
                continue
            netns = self.local.netns_of(sandbox_id)
            if not netns:
                continue
            try:
                await vip.install(Path(netns), plan)
                self._vip_applied[sandbox_id] = plan
            except errors.NarwhalError as exc:
                log.warning("service VIPs of sandbox %s: %s", sandbox_id[:12], exc.message)
        for gone in [s for s in self._vip_applied if s not in self.local.table()]:
            del self._vip_applied[gone]

    async def _sync_network(self, store: Store, record: Obj, node_id: str, vtep: str, port: int,
                            nodes: dict[str, str]) -> vip.Plan:
        """One network on this node: its segment exists while an address of it is held here (made lazily,
        as libnetwork makes an overlay's sandbox when the first endpoint joins), with a peer per remote one."""
        network_id = record["ID"]
        held = await self._release_stale(store, network_id, node_id, await ipam.addresses(store, network_id))
        self._remote[network_id] = [(ip, tuple(str(n) for n in rec.get("names") or ()))
                                    for ip, rec in sorted(held.items()) if rec.get("node") != node_id]
        mine = any(r.get("node") == node_id for r in held.values()) or any(network_id in h
                                                                          for h in self._held.values())
        if not mine:
            if network_id in self._segments:
                await self.plane.delete(self._segments.pop(network_id))
                self._save()
            return {}
        subnet, gateway = swarm_networks.pool(record)
        prefix = ipaddress.ip_network(subnet).prefixlen
        # this node's own ingress endpoint (the routing mesh's source address) lives on the bridge itself
        own = next((ip for ip, rec in held.items() if rec.get("owner") == allocation.node_owner(node_id)), "")
        seg = Segment(bridge=bridge_name(network_id), vxlan=vxlan_name(network_id), vni=swarm_networks.vni(record),
                      port=port, local=vtep, gateway=f"{gateway}/{prefix}", mtu=OVERLAY_MTU,
                      address=f"{own}/{prefix}" if own else "", mac=mac_for(own) if own else "")
        if self._segments.get(network_id) != seg:
            self._segments[network_id] = seg
            self._save()
            try:
                await self.plane.ensure(seg)
            except errors.NarwhalError:
                self._segments.pop(network_id, None)  # made again on the next pass, not taken as done
                raise
        peers = [Peer(ip, mac_for(ip), nodes[rec["node"]]) for ip, rec in held.items()
                 if rec.get("node") != node_id and nodes.get(rec.get("node", ""))]
        await self.plane.set_peers(seg, peers)
        plan: vip.Plan = {}
        for ip, rec in held.items():
            owner, names = str(rec.get("owner", "")), rec.get("names") or []
            if owner.startswith(vip.OWNER_PREFIX) and names:
                plan[ip] = tuple(sorted(a for a, r in held.items() if f"tasks.{names[0]}" in (r.get("names") or ())))
        return plan

    async def _release_stale(self, store: Store, network_id: str, node_id: str,
                             held: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Give back what this node holds for sandboxes no longer on the network (torn down or disconnected
        while narwhald was down, or an ADD that failed after the claim); the addresses still held."""
        cni = cni_name(self.cfg, network_id)
        table = self.local.table()
        kept = {}
        for ip, rec in held.items():
            owner = rec.get("owner", "")
            claimed = self._held.get(owner, {}).get(network_id)
            on = any(ep.cni_network == cni for ep in table.get(owner, []))
            stale = claimed is None or time.monotonic() - claimed > CLAIM_GRACE
            # (a node's own ingress endpoint belongs to no sandbox: the mesh claims and releases it)
            if rec.get("node") == node_id and not on and stale and not allocation.is_node_endpoint(owner):
                log.info("overlay: releasing %s's stale address on %s", owner[:12], network_id[:12])
                await ipam.release(store, network_id, owner)
                self._held.get(owner, {}).pop(network_id, None)
            else:
                kept[ip] = rec
        return kept

    async def _teardown(self) -> None:
        """Out of the swarm: no overlay network, no segment left."""
        await self.local.set_overlays([])
        self._remote.clear()
        for network_id in list(self._segments):
            await self.plane.delete(self._segments.pop(network_id))
        self._held.clear()
        self._save()

    def _save(self) -> None:
        """Record the links made (only when that changes: the loop runs every second on every node)."""
        names = [name for s in self._segments.values() for name in (s.vxlan, s.bridge)]
        if names == self._saved:
            return
        self.links_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.links_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(names))
        os.replace(tmp, self.links_file)
        self._saved = names

    # ---- the NetworkManager's hooks ----
    async def claim(self, req: PodNetworkRequest, want: NetworkAttachment) -> NetworkAttachment:
        """Before ADD on an overlay network: an address from the cluster IPAM (the asked one, or the next
        free), and the MAC that goes with it."""
        sandbox_id = req.sandbox_id
        try:
            network = self.local.get(want.network)
        except errors.NotFound:
            if not self.swarm.active:
                return want
            await self.sync()  # a task of a network created a moment ago on another manager
            try:
                network = self.local.get(want.network)
            except errors.NotFound:
                return want
        store = self.swarm.store
        if network.driver != OVERLAY:
            return want
        if store is None or not self.swarm.active:
            raise errors.Unavailable(f"network {network.name} is a swarm network and this node is not in a swarm")
        node_id, _ = self.swarm.node_identity()
        pool = network.ipam[0]
        self._held.setdefault(sandbox_id, {})[network.id] = time.monotonic()
        # the Docker engine names a container's sandbox (pod) after the container: that name resolves on
        # other nodes too
        names = (*want.aliases, *((req.pod_name,) if req.pod_name else ()))
        if network.ingress:
            names = ()  # no service discovery on ingress (libnetwork skips its service records)
        try:
            ip = await ipam.claim(store, network.id, pool.subnet, pool.gateway, sandbox_id, node_id, want.ipv4,
                                  names=tuple(dict.fromkeys(names)))
        except BaseException:
            self._held[sandbox_id].pop(network.id, None)
            raise
        await self.sync()  # the segment (bridge + vxlan) before the bridge plugin looks for the bridge
        return dataclasses.replace(want, ipv4=ip, mac=want.mac or mac_for(ip))

    async def endpoints_changed(self, sandbox_id: str, netns_path: Path | None, endpoints: list[Endpoint]) -> None:
        """After ADD/DEL: give back the addresses of the overlay networks the sandbox is no longer on."""
        held = self._held.get(sandbox_id, {})
        on = {ep.cni_network for ep in endpoints}
        store = self.swarm.store
        for network_id in list(held):
            cni = cni_name(self.cfg, network_id)
            if cni in on:
                continue
            del held[network_id]
            if store is not None:
                try:
                    await ipam.release(store, network_id, sandbox_id)
                except errors.NarwhalError as exc:  # the next pass's stale sweep retries it
                    log.warning("overlay: release of %s on %s: %s", sandbox_id[:12], network_id[:12], exc.message)
        if not held:
            self._held.pop(sandbox_id, None)
        self.wake()


def recorded_links(state: Path) -> list[str]:
    """The overlay links an instance made (for ``narwhald cleanup``)."""
    try:
        data = json.loads((state / "docker" / "swarm" / "overlay-links.json").read_text())
    except (OSError, ValueError):
        return []
    return [str(n) for n in data] if isinstance(data, list) else []
