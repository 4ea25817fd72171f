"""SwarmAPI: the one object the Docker handlers call for everything Swarm (the narrow backend).

Each call checks the node's role as moby does (a manager-only call on a node in no swarm is a
503 "not a swarm manager"), then hands over to the module owning the resource.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from pkg import errors
from pkg.docker.swarm import allocation, cluster_object, networks, nodes, secrets, services
from pkg.docker.swarm.cluster import Cluster, InitRequest
from pkg.docker.swarm.lookup import find
from pkg.docker.swarm.roles import JoinRequest
from pkg.docker.swarm.store import Store
from pkg.events import DockerEvent, EventBus

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Filters = dict[str, list[str]]


class OverlaySync(Protocol):
    async def sync(self) -> None: ...

    def local_routes(self) -> tuple[str, ...]:
        """Networks an overlay subnet must not overlap on this node (its routes)."""


class SwarmAPI:
    def __init__(self, cluster: Cluster, bus: EventBus | None = None) -> None:
        self.cluster = cluster
        self._bus = bus
        self.overlay: OverlaySync | None = None  # this node's overlay networks, synced after a create/remove

    def _event(self, type_: str, action: str, obj_id: str, name: str) -> None:
        """moby's cluster events on /events (service, node, secret, config: create/update/remove), scope swarm."""
        if self._bus is not None:
            self._bus.publish_event(DockerEvent(type_, action, obj_id, {"name": name}, time.time_ns(), scope="swarm"))

    def _self_id(self) -> str:
        return self.cluster.node.node_id if self.cluster.node is not None else ""

    # ---- the swarm ----
    def ping_state(self) -> str:
        return cluster_object.ping_state(self.cluster)

    async def info(self) -> Obj:
        return await cluster_object.info(self.cluster)

    async def init(self, req: InitRequest) -> str:
        node_id = await self.cluster.init(req)
        try:  # moby's default ingress network, 10.0.0.0/24 unless the node's routes are in the way
            avoid = self.overlay.local_routes() if self.overlay is not None else ()
            await networks.create(self.cluster.manager_store(), networks.OverlayRequest("ingress", ingress=True),
                                  avoid)
        except errors.NarwhalError as exc:
            log.warning("swarm init: no ingress network: %s", exc.message)
        await self._sync_overlay()
        return node_id

    async def leave(self, force: bool) -> None:
        await self.cluster.leave(force)
        await self._sync_overlay()  # out of the swarm: its networks and segments go now, not a pass later

    async def join(self, req: JoinRequest) -> None:
        await self.cluster.join(req)

    async def inspect(self) -> Obj:
        return await cluster_object.inspect(self.cluster)

    async def update(self, version: int, spec: Obj, *, rotate_worker: bool, rotate_manager: bool,
                     rotate_unlock: bool) -> None:
        await cluster_object.update(self.cluster, version, spec, rotate_worker=rotate_worker,
                                    rotate_manager=rotate_manager, rotate_unlock=rotate_unlock)

    async def unlock_key(self) -> str:
        return await cluster_object.unlock_key(self.cluster)

    async def unlock(self, key: str) -> None:
        await self.cluster.unlock(key)

    # ---- nodes ----
    async def node_list(self, filters: Filters) -> list[Obj]:
        store = self.cluster.manager_store()
        return nodes.with_leader(await nodes.list_nodes(store, filters, self._self_id()), await store.leader())

    async def node_get(self, ref: str) -> Obj:
        store = self.cluster.manager_store()
        return nodes.with_leader([await nodes.get(store, ref, self._self_id())], await store.leader())[0]

    async def node_update(self, ref: str, version: int, spec: Obj) -> None:
        node = await nodes.get(self.cluster.manager_store(), ref, self._self_id())
        await nodes.update(self.cluster.manager_store(), node["ID"], version, spec, self._self_id())
        self._event("node", "update", node["ID"], node["Description"].get("Hostname", ""))
        self._wake()

    async def node_remove(self, ref: str, force: bool) -> None:
        node = await nodes.get(self.cluster.manager_store(), ref, self._self_id())
        await nodes.remove(self.cluster.manager_store(), node["ID"], force, self._self_id())
        self._event("node", "remove", node["ID"], node["Description"].get("Hostname", ""))

    # ---- services and tasks ----
    async def service_create(self, spec: Obj) -> tuple[str, list[str]]:
        """The new service's ID and the create answer's warnings."""
        store = self.cluster.manager_store()
        await networks.check_ingress(store, spec)
        service = await services.create(store, await networks.resolve_targets(store, spec))
        await self._allocate(store, service)
        self._event("service", "create", service["ID"], service["Spec"]["Name"])
        self._wake()
        return str(service["ID"]), services.warnings(service["Spec"])

    async def _allocate(self, store: Store, service: Obj) -> None:
        """The service's VIPs claimed now, so inspect shows them at once (the leader's pass retries a failure)."""
        try:
            await allocation.allocate_vips(store, service)
        except errors.NarwhalError as exc:
            log.warning("service %s: VIPs: %s", service["Spec"]["Name"], exc.message)

    async def _with_vips(self, store: Store, found: list[Obj]) -> list[Obj]:
        """``Endpoint.VirtualIPs`` as swarmkit's allocator shows them (from the IPAM: allocation.py)."""
        vips = await allocation.virtual_ips(store, found)
        for service in found:
            if vips.get(service["ID"]):
                service["Endpoint"] = {**(service.get("Endpoint") or {}), "VirtualIPs": vips[service["ID"]]}
        return found

    async def service_list(self, filters: Filters, status: bool) -> list[Obj]:
        store = self.cluster.manager_store()
        return await self._with_vips(store, await services.list_services(store, filters, status))

    async def service_get(self, ref: str, insert_defaults: bool) -> Obj:
        store = self.cluster.manager_store()
        found = await self._with_vips(store, [await find(store, "services", ref)])
        return services.service_view(found[0], insert_defaults)

    async def service_update(self, ref: str, version: int, spec: Obj, rollback: bool) -> list[str]:
        store = self.cluster.manager_store()
        if not rollback:
            await networks.check_ingress(store, spec)
        service = await services.update(store, ref, version, await networks.resolve_targets(store, spec), rollback)
        await self._allocate(store, service)
        self._event("service", "update", service["ID"], service["Spec"]["Name"])
        self._wake()
        return services.warnings(service["Spec"])

    async def service_remove(self, ref: str) -> None:
        service = await services.remove(self.cluster.manager_store(), ref)
        self._event("service", "remove", service["ID"], service["Spec"]["Name"])
        self._wake()

    async def service_containers(self, ref: str) -> list[str]:
        """IDs of the containers (on this node) of a service's tasks, oldest task first: for its logs."""
        store = self.cluster.manager_store()
        service = await find(store, "services", ref)
        tasks = await services.list_tasks(store, {"service": [service["ID"]]})
        ids = []
        for task in tasks:
            cid = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            if cid:
                ids.append(str(cid))
        return ids

    async def task_list(self, filters: Filters) -> list[Obj]:
        if "node" in filters:
            filters = {**filters, "node": [self._self_id() if n == "self" else n for n in filters["node"]]}
        return await services.list_tasks(self.cluster.manager_store(), filters)

    async def task_get(self, ref: str) -> Obj:
        return await services.get_task(self.cluster.manager_store(), ref)

    # ---- secrets and configs ----
    async def object_create(self, kind: str, spec: Obj) -> str:
        obj = await secrets.create(self.cluster.manager_store(), kind, spec, self.cluster.dek)
        self._event(kind[:-1], "create", obj["ID"], obj["Spec"]["Name"])
        return str(obj["ID"])

    async def object_list(self, kind: str, filters: Filters) -> list[Obj]:
        return await secrets.list_objects(self.cluster.manager_store(), kind, filters)

    async def object_get(self, kind: str, ref: str) -> Obj:
        return await secrets.inspect(self.cluster.manager_store(), kind, ref)

    async def object_update(self, kind: str, ref: str, version: int, spec: Obj) -> None:
        obj = await secrets.update(self.cluster.manager_store(), kind, ref, version, spec)
        self._event(kind[:-1], "update", obj["ID"], obj["Spec"]["Name"])

    async def object_remove(self, kind: str, ref: str) -> None:
        obj = await secrets.remove(self.cluster.manager_store(), kind, ref)
        self._event(kind[:-1], "remove", obj["ID"], obj["Spec"]["Name"])

    # ---- overlay networks ----
    def _network_store(self) -> Store:
        if self.cluster.active and not self.cluster.is_manager:
            raise errors.PermissionDenied(networks.WORKER_REFUSED)
        return self.cluster.manager_store()

    async def network_create(self, req: networks.OverlayRequest) -> str:
        avoid = self.overlay.local_routes() if self.overlay is not None else ()
        network = await networks.create(self._network_store(), req, avoid)
        self._event("network", "create", network["ID"], req.name)
        await self._sync_overlay()
        return str(network["ID"])

    async def network_remove(self, ref: str) -> None:
        network = await networks.remove(self._network_store(), ref)
        self._event("network", "destroy", network["ID"], network["Spec"]["Name"])
        await self._sync_overlay()

    async def _sync_overlay(self) -> None:
        if self.overlay is not None:
            try:
                await self.overlay.sync()
            except errors.NarwhalError as exc:  # the store has it; the loop's next pass retries the node's side
                log.warning("overlay sync after a change: %s", exc.message)

    def _wake(self) -> None:
        if self.cluster.orchestrator is not None:
            self.cluster.orchestrator.wake()
        if self.cluster.agent is not None:
            self.cluster.agent.wake()
