"""Turning a task into a Docker-domain container (swarmkit's executor), and back into task status.

The agent (agent.py) talks to this narrow seam only; it is the one place that knows the engine.
A task's container is a plain Docker container named ``<service>.<slot>.<task id>``, labelled
with the swarm's ``com.docker.swarm.*`` labels, so ``docker ps``/``exec``/``logs`` work on it.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pkg import errors
from pkg.docker.engine.engine import Engine
from pkg.docker.engine.model import (
    ContainerSpec,
    EndpointSpec,
    HealthConfig,
    HostConfig,
    PortBinding,
    Resources,
    Status,
)
from pkg.docker.volumes.model import MountSpec, MountType
from pkg.images.service import ImageService

log = logging.getLogger(__name__)

Obj = dict[str, Any]

TASK_LABEL = "com.docker.swarm.task.id"


@dataclass(frozen=True)
class Observed:
    """What the executor sees of a task's container."""

    container_id: str
    running: bool
    exited: bool
    exit_code: int
    pid: int
    error: str = ""


class Executor:
    def __init__(self, engine: Engine, images: ImageService) -> None:
        self.engine = engine
        self.images = images
        # a swarm network's ID (TaskTemplate.Networks' Target) -> its name, as task containers show it
        self.network_name: Callable[[str], Awaitable[str]] = _same

    def containers(self) -> dict[str, str]:
        """task ID -> container ID of every task container this node has."""
        found = {}
        for view in self.engine.list():
            task_id = view.config.labels.get(TASK_LABEL)
            if task_id:
                found[task_id] = view.id
        return found

    def observe(self, container_id: str) -> Observed | None:
        try:
            view = self.engine.get(container_id)
        except errors.NotFound:
            return None
        status = view.status
        return Observed(container_id=view.id, running=status in (Status.RUNNING, Status.PAUSED),
                        exited=status in (Status.EXITED, Status.DEAD), exit_code=view.core.exit_code,
                        pid=view.core.pid, error=view.record.state.error)

    async def addresses(self, container_id: str) -> dict[str, str]:
        """network name -> the container's IPv4 address on it, as CIDR (for the task's NetworksAttachments)."""
        try:
            view = await self.engine.inspect(container_id)
        except errors.NotFound:
            return {}
        return {n.name: f"{n.ip}/{n.prefix_len}" if n.prefix_len else n.ip for n in view.networks if n.ip}

    def address(self, container_id: str) -> str | None:
        """The container's IPv4 address on its first network (where the routing mesh sends connections)."""
        try:
            view = self.engine.get(container_id)
        except errors.NotFound:
            return None
        return next((n.ip for n in view.networks if n.ip), None)

    async def prepare(self, image: str) -> None:
        """The image, pulled unless present (swarmkit pulls on every prepare; a present one is kept here)."""
        try:
            await self.images.get(image)
            return
        except errors.NotFound:
            pass
        await self.images.pull(image)

    async def create(self, name: str, task: Obj, service: Obj, node_id: str, mounts: list[MountSpec],
                     ingress: str = "") -> str:
        """``ingress``: the ingress network's ID when the service publishes a port in ingress mode."""
        spec, host = container_config(task, service, node_id, mounts, ingress)
        if spec.endpoints:
            # the container's name too, so other nodes' DNS answers the task's name (their records come from etcd);
            # not on ingress, which has no service discovery
            endpoints = tuple([dataclasses.replace(e, network=await self.network_name(e.network),
                                                   aliases=(*e.aliases, name) if e.network != ingress else ())
                               for e in spec.endpoints])
            spec = dataclasses.replace(spec, endpoints=endpoints)
            host = dataclasses.replace(host, network_mode=endpoints[0].network)
        return str(await self.engine.create(spec, host, name=name))

    async def start(self, container_id: str) -> None:
        await self.engine.start(container_id)

    async def stop(self, container_id: str, grace_ns: int) -> None:
        try:
            await self.engine.stop(container_id, timeout=max(0, grace_ns // 1_000_000_000))
        except errors.NotFound:
            pass

    async def remove(self, container_id: str) -> None:
        try:
            await self.engine.remove(container_id, force=True, volumes=True)
        except errors.NotFound:
            pass


async def _same(ref: str) -> str:
    return ref


def container_config(task: Obj, service: Obj, node_id: str, extra_mounts: list[MountSpec],
                     ingress: str = "") -> tuple[ContainerSpec, HostConfig]:
    """A task's ContainerSpec as a Docker container's Config and HostConfig (swarmkit's container.go)."""
    cs: Obj = task["Spec"].get("ContainerSpec") or {}
    labels = dict(cs.get("Labels") or {})
    labels.update({
        "com.docker.swarm.node.id": node_id,
        "com.docker.swarm.service.id": service["ID"],
        "com.docker.swarm.service.name": service["Spec"]["Name"],
        "com.docker.swarm.task": "",
        TASK_LABEL: task["ID"],
        "com.docker.swarm.task.name": task_display_name(service, task),
    })
    health = cs.get("Healthcheck")
    healthcheck = None
    if health:
        healthcheck = HealthConfig(test=tuple(health.get("Test") or ()), interval_ns=int(health.get("Interval", 0)),
                                   timeout_ns=int(health.get("Timeout", 0)), retries=int(health.get("Retries", 0)),
                                   start_period_ns=int(health.get("StartPeriod", 0)))
    grace = int(cs.get("StopGracePeriod", 10_000_000_000) or 0)
    spec = ContainerSpec(
        image=cs.get("Image", ""),
        entrypoint=tuple(cs.get("Command") or ()),
        cmd=tuple(cs.get("Args") or ()),
        env=tuple(cs.get("Env") or ()),
        labels=labels,
        working_dir=cs.get("Dir", ""),
        user=cs.get("User", ""),
        hostname=cs.get("Hostname", ""),
        tty=bool(cs.get("TTY")),
        open_stdin=bool(cs.get("OpenStdin")),
        stop_signal=cs.get("StopSignal", ""),
        stop_timeout=grace // 1_000_000_000,
        healthcheck=healthcheck,
        exposed_ports=tuple(f"{b.container_port}/{b.protocol}" for b in host_ports(service)),
        endpoints=task_endpoints(task, service, ingress),
    )
    limits = (task["Spec"].get("Resources") or {}).get("Limits") or {}
    dns = cs.get("DNSConfig") or {}
    mounts = [_mount(m) for m in cs.get("Mounts") or ()] + extra_mounts
    host = HostConfig(
        mounts=tuple(mounts),
        port_bindings=host_ports(service),
        init=cs.get("Init"),
        readonly_rootfs=bool(cs.get("ReadOnly")),
        cap_add=tuple(cs.get("CapabilityAdd") or ()),
        cap_drop=tuple(cs.get("CapabilityDrop") or ()),
        sysctls=dict(cs.get("Sysctls") or {}),
        extra_hosts=tuple(_host_entry(h) for h in cs.get("Hosts") or ()),
        dns=tuple(dns.get("Nameservers") or ()),
        dns_search=tuple(dns.get("Search") or ()),
        dns_options=tuple(dns.get("Options") or ()),
        resources=Resources(memory=int(limits.get("MemoryBytes", 0)), nano_cpus=int(limits.get("NanoCPUs", 0)),
                            pids_limit=int(limits.get("Pids", 0))),
        network_mode=spec.endpoints[0].network if spec.endpoints else "bridge",
    )
    return spec, host


def task_endpoints(task: Obj, service: Obj, ingress: str = "") -> tuple[EndpointSpec, ...]:
    """The task's overlay networks: ``ingress`` (its ID, when given) first, as swarmkit's allocator attaches
    it, then TaskTemplate.Networks; the first one is its eth0.  Each endpoint but ingress's carries the names
    the embedded DNS answers for it, as libnetwork's service records: the service name and
    ``tasks.<service>``, plus the aliases the spec gives (the task's name is its container's name)."""
    name = service["Spec"]["Name"]
    # in vip mode the service name is the VIP's (vip.py); in dnsrr mode it is every task's
    dnsrr = (service["Spec"].get("EndpointSpec") or {}).get("Mode") == "dnsrr"
    names = (name, f"tasks.{name}") if dnsrr else (f"tasks.{name}",)
    first = (EndpointSpec(network=ingress),) if ingress else ()
    return first + tuple(EndpointSpec(network=str(n["Target"]), aliases=(*names, *(n.get("Aliases") or ())))
                         for n in task["Spec"].get("Networks") or () if n.get("Target") and n["Target"] != ingress)


def host_ports(service: Obj) -> tuple[PortBinding, ...]:
    """Ports published in host mode: bound on the node running the task, as a container's -p."""
    ports = ((service["Spec"].get("EndpointSpec") or {}).get("Ports") or [])
    return tuple(PortBinding(container_port=int(p["TargetPort"]), protocol=p.get("Protocol") or "tcp",
                             host_port=int(p.get("PublishedPort") or 0))
                 for p in ports if p.get("PublishMode") == "host" and p.get("TargetPort"))


def task_display_name(service: Obj, task: Obj) -> str:
    return f"{service['Spec']['Name']}.{task.get('Slot') or task['NodeID']}"


def _host_entry(entry: str) -> str:
    """swarm's Hosts are "IP host [alias...]"; the engine takes "host:IP" (one per name)."""
    parts = entry.split()
    if len(parts) >= 2:
        return f"{parts[1]}:{parts[0]}"
    return entry


def _mount(m: Obj) -> MountSpec:
    kind = MountType(m.get("Type", "volume"))
    spec = MountSpec(type=kind, target=m.get("Target", ""), source=m.get("Source", ""),
                     read_only=bool(m.get("ReadOnly")))
    if kind == MountType.TMPFS:
        opts = m.get("TmpfsOptions") or {}
        spec = dataclasses.replace(spec, tmpfs_size=int(opts.get("SizeBytes", 0)), tmpfs_mode=int(opts.get("Mode", 0)))
    if kind == MountType.VOLUME:
        opts = m.get("VolumeOptions") or {}
        spec = dataclasses.replace(spec, no_copy=bool(opts.get("NoCopy")), volume_labels=dict(opts.get("Labels") or {}))
    return spec
