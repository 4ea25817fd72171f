"""The Docker container engine: create (pkg.docker.engine.create), inspect, list, rename, update and remove Docker
containers on the Docker domain's core services, and rebuild them after a narwhald restart.

A Docker container is one core sandbox (its network, IPC and UTS namespaces, /etc files) plus one core
container, whose ID is the Docker ID.  ``--network container:<x>`` puts the core container in x's sandbox
instead.  The engine record (pkg.docker.engine.records) is written once both exist and marked REMOVING before a
removal starts, so a crash at any point leaves either a whole container or pieces recovery removes.
"""
from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
from collections.abc import Callable

from pkg import errors
from pkg.aio import cancel_tasks
from pkg.containerd import containers as ctr_containers
from pkg.containerd import snapshots as ctr_snapshots
from pkg.containerd.client import Client
from pkg.docker.engine import links, mounts, names, recover, translate
from pkg.docker.engine.create import Creator, Endpoints, Images
from pkg.docker.engine.lifecycle import Lifecycle
from pkg.docker.engine.model import (
    ContainerSpec,
    EndpointSpec,
    EngineContainer,
    EngineRecord,
    HostConfig,
    NetworkInfo,
    Resources,
    RestartPolicy,
    RestartPolicyName,
    WaitCondition,
    WaitResult,
)
from pkg.docker.engine.records import RecordStore
from pkg.docker.engine.registry import Registry
from pkg.docker.engine.removal import Removal
from pkg.docker.events import docker_events
from pkg.docker.volumes.service import VolumeService
from pkg.model.container import ContainerStatus
from pkg.model.container import Resources as CoreResources
from pkg.model.state import ContainerState, SandboxState
from pkg.runtime.containers import ContainerService
from pkg.runtime.resources import CgroupFacts, merge_resources
from pkg.runtime.sandboxes import SandboxService

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, sandboxes: SandboxService, containers: ContainerService, images: Images,
                 client: Client, *, volumes: VolumeService | None = None, endpoints: Endpoints | None = None) -> None:
        self.sandboxes = sandboxes
        self.containers = containers
        self.images = images
        self.client = client
        self.ctx = containers.ctx
        self.registry = Registry(RecordStore(self.ctx.root / "engine"), self._core_state)
        self.lifecycle = Lifecycle(self.registry, containers, client, self._auto_remove)
        docker_events(containers.ctx.events).before_die = self.lifecycle.unmounts
        self.volumes = volumes
        self._endpoints = endpoints
        self._creator = Creator(self.registry, sandboxes, containers, images, client, volumes, endpoints)
        # record id -> (record, IP, what _networks made of them): records are replaced, never changed
        self._network_views: dict[str, tuple[EngineRecord, str, tuple[NetworkInfo, ...]]] = {}
        self.removal = Removal(self.registry, self.lifecycle, sandboxes, containers, volumes)
        containers.on_exit = self.removal.exiting

    def _core_state(self, container_id: str) -> ContainerState:
        """The core container's state (UNKNOWN once it is gone: Docker shows that as dead)."""
        found = self.ctx.containers.find(container_id)
        return found[1].state if found is not None else ContainerState.UNKNOWN

    @property
    def store(self) -> RecordStore:
        return self.registry.store

    # ---------------- queries ----------------
    def get(self, ref: str) -> EngineContainer:
        """By full ID, name (with or without "/") or unique ID prefix; NotFound "No such container: <ref>"."""
        record = self.registry.get(ref)
        return self._view(record)

    def list(self) -> builtins.list[EngineContainer]:
        views = []
        link_names = links.names_by_container(self.registry)  # once, not once per container
        for record in self.registry:
            found = self.ctx.containers.find(record.id)
            if found is not None:
                views.append(self._view(record, link_names.get(record.id, ()), found[1]))
        return sorted(views, key=lambda c: c.created, reverse=True)

    def _view(self, record: EngineRecord, link_names: tuple[str, ...] | None = None,
              status: ContainerStatus | None = None) -> EngineContainer:
        if status is None:
            found = self.ctx.containers.find(record.id)
            if found is None:
                raise errors.NotFound(f"No such container: {record.id}")
            status = found[1]
        return EngineContainer(record, status, self._networks(record, with_ip=status.state == ContainerState.RUNNING),
                               self.lifecycle.health.get(record.id) or record.state.health,
                               links.shown(record, self.registry),
                               links.names_of(record.id, self.registry) if link_names is None else link_names)

    def _networks(self, record: EngineRecord, with_ip: bool) -> tuple[NetworkInfo, ...]:
        mode = record.host_config.network_mode
        if mode.startswith("container:"):
            return ()
        name = "bridge" if mode == "default" else mode
        ip = ""
        if with_ip and mode not in ("host", "none"):
            sandbox = self.ctx.sandboxes.find(record.sandbox_id)
            ip = sandbox[1].ip if sandbox is not None else ""
        kept = self._network_views.get(record.id)
        if kept is not None and kept[0] is record and kept[1] == ip:
            return kept[2]  # docker ps over many containers: the same tuple while the record and IP hold
        spec = next((e for e in record.config.endpoints if e.network == name), None)
        networks = (NetworkInfo(name=name, ip=ip, aliases=spec.aliases if spec else (),
                                links=spec.links if spec else ()),)
        if len(self._network_views) >= 4096:  # entries of removed containers go in bulk
            self._network_views.clear()
        self._network_views[record.id] = (record, ip, networks)
        return networks

    async def inspect(self, ref: str) -> EngineContainer:
        """``get`` with every network endpoint as the network manager has it (IP, prefix, gateway, MAC)."""
        view = self.get(ref)
        mode = view.host_config.network_mode
        if self._endpoints is None or mode in ("host", "none") or mode.startswith("container:"):
            return view
        endpoints = await self._endpoints(view.sandbox_id)
        if not endpoints:
            return view
        if not view.running:  # moby: the networks a stopped container is on, with what was asked, no addresses
            asked = {e.network: e.mac_address for e in view.config.endpoints}
            networks = tuple(NetworkInfo(name=e.network or "bridge", mac=asked.get(e.network or "bridge", ""),
                                         aliases=e.aliases, links=e.links) for e in endpoints)
        else:
            networks = tuple(NetworkInfo(name=e.network or "bridge", ip=e.ip, prefix_len=e.prefix_len,
                                         gateway=e.gateway, mac=e.mac, aliases=e.aliases, links=e.links,
                                         ipv6=e.ipv6,
                                         ipv6_prefix_len=e.ipv6_prefix_len) for e in endpoints)
        return dataclasses.replace(view, networks=networks)

    async def set_endpoint(self, ref: str, network: str, spec: EndpointSpec | None) -> None:
        """Record what the container asked of a network it joined after create (network connect: IPAMConfig,
        aliases, MAC, DriverOpts, shown by inspect), or forget it (``None``: disconnect)."""
        container_id = self.registry.resolve(ref)

        def change(record: EngineRecord) -> EngineRecord:
            kept = tuple(e for e in record.config.endpoints if e.network != network)
            return dataclasses.replace(record, config=dataclasses.replace(
                record.config, endpoints=kept + ((spec,) if spec is not None else ())))

        await self.registry.update(container_id, change)

    async def sizes(self, view: EngineContainer) -> tuple[int, int]:
        """(SizeRw, SizeRootFs): the container's own layer, and that plus its image."""
        try:
            rw, _ = await ctr_snapshots.usage(self.client, view.id)
        except errors.NarwhalError:
            rw = 0
        try:
            image_size = (await self.images.get(view.image_id)).size
        except errors.NarwhalError:
            image_size = 0
        return rw, rw + image_size

    def sandbox_paths(self, view: EngineContainer) -> tuple[str, str]:
        """The dir holding the container's /etc/hosts, hostname and resolv.conf, and its netns path."""
        found = self.ctx.sandboxes.find(view.sandbox_id)
        if found is None:
            return "", ""
        return found[0].sandbox_dir, found[0].netns_path

    # ---------------- create (pkg.docker.engine.create) ----------------
    async def create(self, spec: ContainerSpec, host: HostConfig, name: str = "") -> str:
        """A new (created, not started) Docker container; returns its ID."""
        return await self._creator.create(spec, host, name)

    # ---------------- remove ----------------
    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        container_id = self.registry.resolve(ref)
        view = self.get(container_id)
        restarting = view.record.state.restarting  # moby counts it as running (container/state.go)
        if (view.running or restarting) and not force:
            what = "paused" if view.record.state.paused else "restarting" if restarting else "running"
            raise errors.Conflict(
                f"cannot remove container \"/{view.name}\": container is {what}: "
                f"stop the container before removing or force remove")
        if view.running:
            self.lifecycle.event("kill", container_id, signal="9")  # moby's forced remove kills first
        await self.remove_now(container_id, volumes)

    async def _auto_remove(self, container_id: str) -> None:
        await self.removal.auto_remove(container_id)

    async def remove_now(self, container_id: str, volumes: bool = False) -> None:
        """The removal itself, no checks (pkg.docker.engine.removal)."""
        await self.removal.remove_now(container_id, volumes)

    async def release(self, record: EngineRecord, volumes: bool = False) -> None:
        await self.removal.release(record, volumes)

    async def remove_sandbox_if_unused(self, sandbox_id: str, exclude: str) -> None:
        await self.removal.remove_sandbox_if_unused(sandbox_id, exclude)

    async def prune(self, keep: Callable[[EngineContainer], bool]) -> builtins.list[str]:
        """Remove every stopped container ``keep`` does not keep; the removed IDs."""
        removed = []
        for view in self.list():
            if view.running or view.record.state.restarting or keep(view):
                continue
            try:
                await self.remove_now(view.id)
            except errors.NarwhalError as exc:
                log.warning("prune %s: %s", view.id[:12], exc.message)
                continue
            removed.append(view.id)
        return removed

    async def remove_link(self, path: str) -> None:
        """DELETE /containers/<linking>/<alias>?link=1 (pkg.docker.engine.links.remove)."""
        await links.remove(self.registry, path)

    # ---------------- rename / update ----------------
    async def rename(self, ref: str, new_name: str) -> None:
        container_id = self.registry.resolve(ref)
        if not new_name:
            raise errors.InvalidArgument("Neither old nor new names may be empty")
        new_name = names.validate(new_name)
        async with self.registry.lock(container_id):
            record = self.registry.get(container_id)
            if record.name == new_name:
                raise errors.InvalidArgument("Renaming a container with the same name as its current name")
            self.registry.reserve_name(new_name, container_id)
            try:
                await self.registry.update(container_id, lambda r: dataclasses.replace(r, name=new_name))
            except BaseException:
                self.registry.release_name(new_name, container_id)
                raise
            self.registry.release_name(record.name, container_id)
        self.lifecycle.event("rename", container_id, oldName="/" + record.name)

    async def update(self, ref: str, resources: Resources | None = None,
                     restart_policy: RestartPolicy | None = None) -> builtins.list[str]:
        """Docker's update: the resource fields given (non-zero) and the restart policy; returns warnings."""
        container_id = self.registry.resolve(ref)
        async with self.registry.lock(container_id):
            record = self.registry.get(container_id)
            host = record.host_config
            if restart_policy is not None:
                if host.auto_remove and restart_policy.name != RestartPolicyName.NO:
                    raise errors.InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled "
                                                 "for the container")
                host = dataclasses.replace(host, restart_policy=restart_policy)
            if resources is not None:
                merged = _merge_resources(host.resources, resources)
                core = translate.core_resources(merged, host.oom_score_adj)
                await self._apply_resources(container_id, core)
                host = dataclasses.replace(host, resources=merged)
            await self.registry.update(container_id, lambda r: dataclasses.replace(r, host_config=host))
        self.lifecycle.event("update", container_id)
        return []

    async def _apply_resources(self, container_id: str, core: CoreResources) -> None:
        _, status = self.containers.get(container_id)
        if status.state != ContainerState.EXITED:
            await self.containers.update_resources(container_id, core)
            return
        # A stopped container keeps its spec for the next start: update the stored spec only.
        record = await ctr_containers.get(self.client, container_id)
        spec = dict(record.spec)
        linux = dict(spec.get("linux", {}))
        linux["resources"] = merge_resources(linux.get("resources", {}), core, CgroupFacts.probe())
        spec["linux"] = linux
        await ctr_containers.update_spec(self.client, container_id, spec)

    # ---------------- lifecycle (see pkg.docker.engine.lifecycle) ----------------
    async def start(self, ref: str) -> bool:
        view = self.get(ref)
        mode = view.host_config.network_mode
        try:
            if any(point.subpath for point in view.record.mount_points):  # a thread hop only when there is work
                await asyncio.to_thread(mounts.check_subpaths, view.record.mount_points)
            if mode.startswith("container:"):
                target = self.registry.find(self._sandbox_owner(view.sandbox_id) or "")
                found = self.ctx.containers.find(target.id) if target is not None else None
                if found is None or found[1].state != ContainerState.RUNNING:
                    raise errors.Conflict(f"cannot join network of a non running container: {mode.partition(':')[2]}")
            sandbox = self.ctx.sandboxes.find(view.sandbox_id)
            if sandbox is None or sandbox[1].state != SandboxState.READY:
                # Its namespaces went away under it (a host reboot wipes them); the core cannot re-home a container.
                raise errors.FailedPrecondition(f"the network sandbox of container {view.id[:12]} is gone (host "
                                                "rebooted?): remove the container and create it again")
            links.check_running(view.record, self.registry, self._running)
            return await self.lifecycle.start(view.id)
        except errors.NarwhalError:
            if view.host_config.auto_remove:  # as moby: a container that cannot start is not kept either
                await self._auto_remove(view.id)
            raise

    def _running(self, container_id: str) -> bool:
        found = self.ctx.containers.find(container_id)
        return found is not None and found[1].state == ContainerState.RUNNING

    def _sandbox_owner(self, sandbox_id: str) -> str | None:
        return next((r.id for r in self.registry if r.sandbox_id == sandbox_id and r.owns_sandbox), None)

    async def stop(self, ref: str, sig: str | None = None, timeout: int | None = None) -> bool:
        return await self.lifecycle.stop(ref, sig, timeout)

    async def kill(self, ref: str, sig: str | None = None) -> None:
        await self.lifecycle.kill(ref, sig)

    async def restart(self, ref: str, sig: str | None = None, timeout: int | None = None) -> None:
        await self.lifecycle.restart(ref, sig, timeout)

    async def pause(self, ref: str) -> None:
        await self.lifecycle.pause(ref)

    async def unpause(self, ref: str) -> None:
        await self.lifecycle.unpause(ref)

    async def wait(self, ref: str, condition: WaitCondition = WaitCondition.NOT_RUNNING) -> WaitResult:
        return await self.lifecycle.wait(ref, condition)

    # ---------------- recovery (pkg.docker.engine.recover) ----------------
    async def start_engine(self) -> None:
        """Rebuild from the records after the runtime recovered (see pkg.docker.engine.recover)."""
        await recover.recover(self)

    async def close(self) -> None:
        await cancel_tasks([*self.lifecycle.close(), *self.removal.close()])


def _merge_resources(current: Resources, update: Resources) -> Resources:
    changes = {f.name: getattr(update, f.name) for f in dataclasses.fields(update) if getattr(update, f.name)}
    return dataclasses.replace(current, **changes)
