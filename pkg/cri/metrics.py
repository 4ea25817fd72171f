"""cAdvisor-style metrics of pods and containers, for CRI ListMetricDescriptors / ListPodSandboxMetrics.

kubelet (PodAndContainerStatsFromCRI) serves these on /metrics/cadvisor
instead of asking cAdvisor, so the names, label keys and units are
cAdvisor's (pkg.cri.metric_descriptors), as CRI-O serves them: every series has the labels ``id``,
``name``, ``image`` (a pod's own series: the sandbox ID, ``POD``, ``""``),
then its own (``cpu``, ``interface``).  CRI values are unsigned integers, so
seconds are whole seconds.  Figures come from the container's cgroup (one
batched read off the event loop), the pod's network namespace (read through
``/proc/<pid>/net/dev`` of one of its processes, so no namespace switch is
needed), the writable layer's usage (containerd), and the container spec.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pkg import errors
from pkg.cgroups.fs import Hierarchies, host
from pkg.cgroups.oom import read_oom
from pkg.cgroups.stats import ContainerStats, parse_flat_keyed, read_stats
from pkg.containerd import snapshots as ctr_snapshots
from pkg.cri.metric_descriptors import (
    BY_NAME,
    DESCRIPTORS,
    ContainerMetrics,
    MetricDescriptor,
    PodMetrics,
    Sample,
)
from pkg.model.container import ContainerMetadata, ContainerStatus
from pkg.model.sandbox import NamespaceMode, SandboxMetadata
from pkg.model.state import ContainerState, SandboxState
from pkg.runtime.context import RuntimeContext

NS = 1_000_000_000
POD_NAME = "POD"
class _Out:
    """Collects samples for one object (base label values fixed)."""

    def __init__(self, base: tuple[str, str, str]) -> None:
        self.base = base
        self.samples: list[Sample] = []

    def add(self, name: str, value: int | None, *extra: str) -> None:
        if value is None:
            return
        desc = BY_NAME[name]
        self.samples.append(Sample(name, self.base + extra, max(0, int(value)), desc.counter))


@dataclass(frozen=True)
class _Processes:
    processes: int
    threads: int
    fds: int
    sockets: int


@dataclass(frozen=True)
class _Cgroup:
    stats: ContainerStats | None
    oom_kills: int | None
    kernel_bytes: int | None = None
    failcnt: int | None = None
    processes: _Processes | None = None


@dataclass(frozen=True)
class NetDev:
    interface: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[NetDev]:
    """/proc/net/dev, loopback left out (cAdvisor does too)."""
    result = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16 or name.strip() == "lo":
            continue
        v = [int(f) for f in fields[:16]]
        result.append(NetDev(name.strip(), v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]))
    return result


def _read_cgroups(cgroups: Iterable[str]) -> dict[str, _Cgroup]:
    """Everything read from cgroupfs and /proc for these cgroups (blocking: run it in a thread)."""
    h = host()
    result = {}
    for cgroup in cgroups:
        try:
            stats: ContainerStats | None = read_stats(cgroup, h)
        except errors.NotFound:
            stats = None
        oom = read_oom(cgroup, h)
        memory = h.controller("memory", cgroup)
        kernel = failcnt = None
        if memory is not None and h.is_v2:
            kernel = stats.memory.stat.get("kernel") if stats is not None and stats.memory is not None else None
            failcnt = parse_flat_keyed(_read(memory / "memory.events")).get("max")
        elif memory is not None:
            kernel = _read_int(memory / "memory.kmem.usage_in_bytes")
            failcnt = _read_int(memory / "memory.failcnt")
        result[cgroup] = _Cgroup(stats, oom.oom_kills if oom is not None else None, kernel, failcnt,
                                 _processes(h, cgroup))
    return result


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _processes(h: Hierarchies, cgroup: str) -> _Processes | None:
    """Processes, threads, open fds and sockets of the cgroup's processes (cAdvisor's process metrics)."""
    base = h.controller("pids", cgroup) or h.controller("memory", cgroup)
    procs = _read(base / "cgroup.procs") if base is not None else None
    if procs is None:
        return None
    pids = [int(p) for p in procs.split() if (p.isascii() and p.isdigit())]
    threads = fds = sockets = 0
    for pid in pids:
        try:
            threads += len(os.listdir(f"/proc/{pid}/task"))
            for fd in os.scandir(f"/proc/{pid}/fd"):
                fds += 1
                try:
                    if os.readlink(fd.path).startswith("socket:"):
                        sockets += 1
                except OSError:
                    continue
        except OSError:
            continue  # exited meanwhile
    return _Processes(len(pids), threads, fds, sockets)


@dataclass(frozen=True)
class _Filesystem:
    limit_bytes: int
    inodes_total: int
    inodes_free: int


def _statvfs(path: Path) -> _Filesystem | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return _Filesystem(st.f_blocks * st.f_frsize, st.f_files, st.f_ffree)


def _read_net_dev(pid: int) -> list[NetDev] | None:
    try:
        return parse_net_dev(Path(f"/proc/{pid}/net/dev").read_text())
    except OSError:
        return None


class CriMetricsService:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx

    def descriptors(self) -> tuple[MetricDescriptor, ...]:
        return DESCRIPTORS

    async def pods(self) -> list[PodMetrics]:
        """Metrics of every ready pod and its running containers, read now (timestamps are 0: live)."""
        ctx = self.ctx
        pods = [(m, s) for _, m, s in ctx.sandboxes if s.state == SandboxState.READY]
        containers = [(m, s) for _, m, s in ctx.containers if s.state == ContainerState.RUNNING]
        cgroups = [m.cgroups_path for m, _ in containers if m.cgroups_path]
        cgroups += [m.config.cgroup_parent for m, _ in pods if m.config.cgroup_parent]
        read = await asyncio.to_thread(_read_cgroups, cgroups)
        layers = await asyncio.gather(*(self._writable(m) for m, _ in containers))
        fs = await asyncio.to_thread(_statvfs, ctx.cfg.containerd_root)
        by_pod: dict[str, list[ContainerMetrics]] = {}
        pids: dict[str, int] = {}
        now = time.time_ns()
        for (metadata, status), layer in zip(containers, layers, strict=True):
            by_pod.setdefault(metadata.sandbox_id, []).append(
                _container_metrics(metadata, status, read.get(metadata.cgroups_path), layer, fs, now))
            pids.setdefault(metadata.sandbox_id, status.pid)
        result = []
        for pod, pod_status in pods:
            out = _Out((pod.id, POD_NAME, ""))
            own = read.get(pod.config.cgroup_parent) if pod.config.cgroup_parent else None
            if own is not None:
                _cgroup_samples(out, own)
            pid = pod_status.infra_pid or pids.get(pod.id, 0)
            if pid and _own_network(pod):
                devices = await asyncio.to_thread(_read_net_dev, pid)
                _network_samples(out, devices or [])
            result.append(PodMetrics(pod.id, out.samples, by_pod.get(pod.id, [])))
        return result

    async def _writable(self, metadata: ContainerMetadata) -> tuple[int, int] | None:
        try:
            return await ctr_snapshots.usage(self.ctx.client, metadata.snapshot_key)
        except errors.NarwhalError:
            return None


def _own_network(metadata: SandboxMetadata) -> bool:
    """Host-network pods have no interfaces of their own (cAdvisor reports none for them either)."""
    return metadata.config.namespace_options.network != NamespaceMode.NODE and bool(metadata.netns_path)


def _container_metrics(metadata: ContainerMetadata, status: ContainerStatus, cgroup: _Cgroup | None,
                       layer: tuple[int, int] | None, fs: _Filesystem | None, now: int) -> ContainerMetrics:
    out = _Out((metadata.id, metadata.config.name, metadata.image_ref or metadata.image_id))
    if cgroup is not None:
        _cgroup_samples(out, cgroup)
    if layer is not None:
        out.add("container_fs_usage_bytes", layer[0])
    if fs is not None:
        out.add("container_fs_limit_bytes", fs.limit_bytes)
        out.add("container_fs_inodes_total", fs.inodes_total)
        out.add("container_fs_inodes_free", fs.inodes_free)
    resources = status.resources or metadata.config.resources
    if resources is not None:
        out.add("container_spec_memory_limit_bytes", resources.memory_limit_in_bytes)
        out.add("container_spec_memory_swap_limit_bytes", resources.memory_swap_limit_in_bytes)
        out.add("container_spec_cpu_period", resources.cpu_period)
        out.add("container_spec_cpu_quota", resources.cpu_quota)
        out.add("container_spec_cpu_shares", resources.cpu_shares)
    else:
        out.add("container_spec_memory_limit_bytes", 0)
    out.add("container_start_time_seconds", status.started_at // NS)
    out.add("container_last_seen", now // NS)
    return ContainerMetrics(metadata.id, out.samples)


def _cgroup_samples(out: _Out, cgroup: _Cgroup) -> None:
    stats = cgroup.stats
    if stats is not None and stats.cpu is not None:
        cpu = stats.cpu
        out.add("container_cpu_usage_seconds_total", cpu.usage_core_nano_seconds // NS, "total")
        out.add("container_cpu_user_seconds_total", None if cpu.user_nano_seconds is None
                else cpu.user_nano_seconds // NS)
        out.add("container_cpu_system_seconds_total", None if cpu.system_nano_seconds is None
                else cpu.system_nano_seconds // NS)
        out.add("container_cpu_cfs_periods_total", cpu.periods)
        out.add("container_cpu_cfs_throttled_periods_total", cpu.throttled_periods)
        out.add("container_cpu_cfs_throttled_seconds_total", cpu.throttled_nano_seconds // NS)
    if stats is not None and stats.memory is not None:
        mem = stats.memory
        stat = mem.stat
        out.add("container_memory_usage_bytes", mem.usage_bytes)
        out.add("container_memory_working_set_bytes", mem.working_set_bytes)
        out.add("container_memory_rss", mem.rss_bytes)
        out.add("container_memory_cache", mem.cache_bytes)
        out.add("container_memory_mapped_file", stat.get("total_mapped_file", stat.get("mapped_file",
                                                                                      stat.get("file_mapped"))))
        out.add("container_memory_swap", stat.get("total_swap", stat.get("swap", stat.get("swap_current", 0))))
        out.add("container_memory_kernel_usage", cgroup.kernel_bytes or 0)
        out.add("container_memory_failcnt", cgroup.failcnt or 0)
        out.add("container_memory_max_usage_bytes", mem.max_usage_bytes)
        out.add("container_memory_failures_total", mem.page_faults, "pgfault", "container")
        out.add("container_memory_failures_total", mem.major_page_faults, "pgmajfault", "container")
    if stats is not None and stats.pids is not None:
        out.add("container_threads_max", stats.pids.limit or 0)
    if cgroup.processes is not None:
        out.add("container_processes", cgroup.processes.processes)
        out.add("container_threads", cgroup.processes.threads)
        out.add("container_file_descriptors", cgroup.processes.fds)
        out.add("container_sockets", cgroup.processes.sockets)
    out.add("container_oom_events_total", cgroup.oom_kills)


def _network_samples(out: _Out, devices: list[NetDev]) -> None:
    for dev in devices:
        out.add("container_network_receive_bytes_total", dev.rx_bytes, dev.interface)
        out.add("container_network_receive_packets_total", dev.rx_packets, dev.interface)
        out.add("container_network_receive_packets_dropped_total", dev.rx_dropped, dev.interface)
        out.add("container_network_receive_errors_total", dev.rx_errors, dev.interface)
        out.add("container_network_transmit_bytes_total", dev.tx_bytes, dev.interface)
        out.add("container_network_transmit_packets_total", dev.tx_packets, dev.interface)
        out.add("container_network_transmit_packets_dropped_total", dev.tx_dropped, dev.interface)
        out.add("container_network_transmit_errors_total", dev.tx_errors, dev.interface)
