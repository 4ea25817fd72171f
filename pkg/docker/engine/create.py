"""Creating a Docker container: a create's checks, its image, mounts, links and network mode, then its sandbox,
/etc/hosts, core container, volumes and record, rolled back together when a step fails.

Separate from pkg.docker.engine.engine because a create is one long job of its own, with its own collaborators
(images, volumes, the endpoints /etc/hosts lists); the engine hands it what it needs and keeps the record store
and the verbs that act on what exists.
"""
from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from pkg import errors
from pkg.aio import CleanupStack
from pkg.cni.model import Endpoint
from pkg.containerd.client import Client
from pkg.docker.engine import extra_hosts as extra_hosts_entries
from pkg.docker.engine import groups, hosts, links, mounts, names, translate
from pkg.docker.engine.model import ContainerSpec, EngineRecord, HostConfig, RestartPolicyName
from pkg.docker.engine.records import RecordStore
from pkg.docker.engine.registry import Registry
from pkg.docker.volumes.service import VolumeService
from pkg.images.model import Image
from pkg.runtime.containers import ContainerService
from pkg.runtime.resources import CgroupFacts
from pkg.runtime.sandboxes import SandboxService

log = logging.getLogger(__name__)

LOG_FILE = "container.log"


class Images(Protocol):
    async def get(self, ref_or_id: str) -> Image: ...


Endpoints = Callable[[str], Awaitable[list[Endpoint]]]


class Creator:
    """The engine's creates (``Engine.create``)."""

    def __init__(self, registry: Registry, sandboxes: SandboxService, containers: ContainerService, images: Images,
                 client: Client, volumes: VolumeService | None, endpoints: Endpoints | None) -> None:
        self.registry = registry
        self.sandboxes = sandboxes
        self.containers = containers
        self.images = images
        self.client = client
        self.volumes = volumes
        self._endpoints = endpoints
        self.ctx = containers.ctx

    @property
    def store(self) -> RecordStore:
        return self.registry.store

    async def create(self, spec: ContainerSpec, host: HostConfig, name: str = "") -> str:
        """A new (created, not started) Docker container; returns its ID."""
        validate_host_config(host)
        if host.uts_mode == "host" and spec.hostname:
            raise errors.InvalidArgument("conflicting options: hostname and the UTS mode")
        if not host.cgroupns_mode:  # moby stores the daemon's default: private on cgroup v2, host on v1
            host = dataclasses.replace(host, cgroupns_mode="private" if CgroupFacts.probe().v2 else "host")
        container_id = secrets.token_hex(32)
        name = names.validate(name) if name else self._random_name()
        self.registry.reserve_name(name, container_id)
        try:
            return await self._create(container_id, name, spec, host)
        except BaseException:
            self.registry.release_name(name, container_id)
            raise

    def _random_name(self) -> str:
        for attempt in range(10):
            name = names.random_name(attempt)
            if not self.registry.name_taken(name):
                return name
        return f"{names.random_name(1)}{secrets.token_hex(3)}"

    async def _create(self, container_id: str, name: str, spec: ContainerSpec, host: HostConfig) -> str:
        try:
            image = await self.images.get(spec.image)
        except errors.NotFound:
            raise errors.NotFound(f"No such image: {with_tag(spec.image)}") from None
        spec = translate.merge_image(spec, image.config)
        translate.argv(spec)
        gids = await groups.group_ids(self.client, image, host.group_add)
        requested = mounts.specs(host)
        for entry in host.volumes_from:  # moby: the container's own mounts win over inherited ones
            source, read_write = mounts.parse_volumes_from(entry)
            requested += mounts.inherited(requested, self.registry.get(source).mount_points, read_write)
        sandbox_id, owns_sandbox = "", True
        mode = host.network_mode
        if mode.startswith("container:"):
            target = self.registry.get(mode.partition(":")[2])
            if target.host_config.network_mode.startswith("container:"):
                target = self.registry.get(target.host_config.network_mode.partition(":")[2])
            sandbox_id, owns_sandbox = target.sandbox_id, False
            host = dataclasses.replace(host, network_mode=f"container:{target.id}")  # as moby stores it
        linked = links.plan(self.registry, self._sandbox_ip, host, name)
        record = EngineRecord(
            id=container_id, name=name, sandbox_id=sandbox_id, owns_sandbox=owns_sandbox, image_id=image.id,
            created=time.time_ns(), config=spec, host_config=host,
            port_bindings=translate.resolve_ports(spec, host) if owns_sandbox and mode != "host" else (),
            log_path=str(self.store.dir(container_id) / LOG_FILE), links=linked.links,
        )
        async with CleanupStack() as cleanup:
            cleanup.add("remove engine dir", lambda: self.store.delete(container_id))
            plan = await mounts.prepare(self.volumes, requested, image, spec.volumes)
            volumes = self.volumes
            if volumes is not None:
                cleanup.add("release prepared volumes", lambda: volumes.discard(plan))
            record = dataclasses.replace(record, mount_points=tuple(plan.mounts))
            if owns_sandbox:
                sandbox_id = await self.sandboxes.run(translate.sandbox_config(record, self.store.root))
                cleanup.add("remove sandbox", lambda: self.sandboxes.remove(sandbox_id))
                record = dataclasses.replace(record, sandbox_id=sandbox_id)
                await self._write_hosts(record, sandbox_id)
                if linked.hosts:
                    await asyncio.to_thread(links.append_hosts, self.ctx.sandbox_root(sandbox_id) / "hosts",
                                            linked.hosts)
            config = translate.container_config(record, f"{container_id}/{LOG_FILE}", mounts.core_mounts(plan.mounts),
                                                gids, linked.env)
            await self.containers.create(sandbox_id, dataclasses.replace(config, image=spec.image),
                                         container_id=container_id)
            cleanup.add("remove container", lambda: self.containers.remove(container_id))
            if volumes is not None:
                await volumes.attach(plan, container_id)
                cleanup.add("release volumes", lambda: volumes.release(container_id, remove_anonymous=True))
            await self.store.write(record)
            self.registry.add(record)
            cleanup.commit()
        log.info("docker container %s (%s) created", container_id[:12], name)
        return container_id

    async def _write_hosts(self, record: EngineRecord, sandbox_id: str) -> None:
        """/etc/hosts as moby writes it (pkg.docker.networks.resolv.docker_hosts); a host-network container keeps
        the host's, with its --add-host lines appended."""
        ips: builtins.list[str] = []
        gateway = ""  # what --add-host name:host-gateway names: the host, seen from the container's network
        if self._endpoints is not None and record.host_config.network_mode != "host":
            for endpoint in await self._endpoints(sandbox_id):
                ips += [ip for ip in (endpoint.ip, endpoint.ipv6) if ip]
                gateway = gateway or endpoint.gateway
        await hosts.write(self.ctx.sandbox_root(sandbox_id) / "hosts", record, ips, gateway)

    def _sandbox_ip(self, sandbox_id: str) -> str:
        found = self.ctx.sandboxes.find(sandbox_id)
        return found[1].ip if found is not None else ""


def validate_host_config(host: HostConfig) -> None:
    """What moby refuses of a create's HostConfig, in its words (before anything is made)."""
    policy = host.restart_policy
    if host.auto_remove and policy.name != RestartPolicyName.NO:
        raise errors.InvalidArgument("can't create 'AutoRemove' container with restart policy")
    if policy.maximum_retry_count < 0:
        raise errors.InvalidArgument("invalid value for restart policy: maximum retry count can't be negative")
    if policy.maximum_retry_count and policy.name != RestartPolicyName.ON_FAILURE:
        raise errors.InvalidArgument(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if host.pid_mode not in ("", "host"):
        raise errors.NotImplementedYet(f"PID mode {host.pid_mode!r} is not supported (only host or the default)")
    if host.cgroupns_mode not in ("", "private", "host"):
        raise errors.InvalidArgument(f"invalid cgroup namespace mode: {host.cgroupns_mode}")
    if host.uts_mode not in ("", "host"):
        raise errors.InvalidArgument(f"invalid UTS mode: {host.uts_mode}")
    if host.ipc_mode not in ("", "private", "shareable", "host"):
        raise errors.NotImplementedYet(f"IPC mode {host.ipc_mode!r} is not supported (host, private, shareable)")
    mode = host.network_mode
    if mode.startswith("container:") and not mode.partition(":")[2]:
        raise errors.InvalidArgument("invalid container format container:<name|id>")
    if (mode == "host" or mode.startswith("container:")) and host.port_bindings:
        raise errors.InvalidArgument("conflicting options: port publishing and the container type network mode")
    links.check_mode(host)
    extra_hosts_entries.validate(host.extra_hosts)


def with_tag(ref: str) -> str:
    """An image reference as moby's "No such image" spells it (``:latest`` when it names no tag)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in ref else f"{ref}:latest"
