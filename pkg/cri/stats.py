"""Container and pod stats from cgroups (v1 here, v2 where present) and the writable layer.

usage_nano_cores is a rate: the tracker keeps each container's previous CPU
sample, so the first request for a container reports no rate (as containerd).
A pod's numbers come from its own cgroup when kubelet gave it one (a per-pod
cgroup parent); otherwise they are the sum over its containers.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pkg import errors
from pkg.cgroups.stats import ContainerStats, CpuStats, CpuUsageTracker, MemoryStats, read_stats_many
from pkg.containerd import snapshots as ctr_snapshots
from pkg.model.container import ContainerMetadata
from pkg.model.sandbox import SandboxMetadata
from pkg.model.state import ContainerState
from pkg.runtime.context import RuntimeContext


@dataclass(frozen=True)
class WritableLayer:
    timestamp_ns: int
    mountpoint: str
    used_bytes: int
    inodes_used: int


@dataclass(frozen=True)
class ContainerUsage:
    metadata: ContainerMetadata
    cpu: CpuStats | None
    memory: MemoryStats | None
    writable: WritableLayer | None


@dataclass(frozen=True)
class PodUsage:
    metadata: SandboxMetadata
    cpu: CpuStats | None
    memory: MemoryStats | None
    process_count: int | None
    containers: list[ContainerUsage]


class StatsService:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self._cpu = CpuUsageTracker()
        self._tracked: set[str] = set()

    @property
    def _snapshot_root(self) -> str:
        return str(self.ctx.cfg.containerd_root / "io.containerd.snapshotter.v1.overlayfs")

    async def containers(self, ids: list[str]) -> list[ContainerUsage]:
        """Stats of the given containers; those not running report no cgroup numbers."""
        ctx = self.ctx
        entries = [ctx.containers.get(i) for i in ids]
        running = [m for m, s in entries if s.state == ContainerState.RUNNING]
        sampled = await read_stats_many([m.cgroups_path for m in running])
        layers = await asyncio.gather(*(self._writable(m) for m, _ in entries))
        result = []
        for (metadata, _), layer in zip(entries, layers, strict=True):
            stats = sampled.get(metadata.cgroups_path)
            cpu = self._track(metadata.id, stats.cpu) if stats is not None and stats.cpu else None
            result.append(ContainerUsage(metadata, cpu, stats.memory if stats else None, layer))
        return result

    async def _writable(self, metadata: ContainerMetadata) -> WritableLayer | None:
        try:
            used, inodes = await ctr_snapshots.usage(self.ctx.client, metadata.snapshot_key)
        except errors.NotFound:
            return None
        return WritableLayer(time.time_ns(), self._snapshot_root, used, inodes)

    async def pods(self, ids: list[str]) -> list[PodUsage]:
        ctx = self.ctx
        result = []
        for sandbox_id in ids:
            metadata, _ = ctx.sandboxes.get(sandbox_id)
            container_ids = [cid for cid, m, _ in ctx.containers if m.sandbox_id == sandbox_id]
            containers = await self.containers(container_ids)
            own: ContainerStats | None = None
            if metadata.config.cgroup_parent:  # kubelet's per-pod cgroup
                own = (await read_stats_many([metadata.config.cgroup_parent])).get(metadata.config.cgroup_parent)
            if own is not None:
                cpu = self._track(f"pod:{sandbox_id}", own.cpu) if own.cpu else None
                memory, processes = own.memory, own.pids.current if own.pids else None
            else:
                cpu, memory, processes = self._sum(sandbox_id, containers)
            result.append(PodUsage(metadata, cpu, memory, processes, containers))
        return result

    def _sum(self, sandbox_id: str, containers: list[ContainerUsage]
             ) -> tuple[CpuStats | None, MemoryStats | None, int | None]:
        cpus = [c.cpu for c in containers if c.cpu is not None]
        mems = [c.memory for c in containers if c.memory is not None]
        now = time.time_ns()
        cpu = self._track(f"pod:{sandbox_id}", CpuStats(now, sum(c.usage_core_nano_seconds for c in cpus))) \
            if cpus else None
        memory = MemoryStats(
            timestamp_ns=now,
            usage_bytes=sum(m.usage_bytes for m in mems),
            working_set_bytes=sum(m.working_set_bytes for m in mems),
            rss_bytes=sum(m.rss_bytes for m in mems),
            cache_bytes=sum(m.cache_bytes for m in mems),
            page_faults=sum(m.page_faults for m in mems),
            major_page_faults=sum(m.major_page_faults for m in mems),
        ) if mems else None
        return cpu, memory, None

    def _track(self, key: str, cpu: CpuStats) -> CpuStats:
        """The CPU sample with its rate; samples of removed containers and pods are dropped."""
        self._tracked.add(key)
        known = self.ctx.containers.ids() | {f"pod:{i}" for i in self.ctx.sandboxes.ids()}
        for gone in self._tracked - known:
            self._cpu.forget(gone)
        self._tracked &= known
        return self._cpu.update(key, cpu)
