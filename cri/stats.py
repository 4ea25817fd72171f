"""ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats; ListMetricDescriptors and
ListPodSandboxMetrics (cAdvisor-style series, pkg/cri/metrics.py)."""
from __future__ import annotations

from cri_api.v1 import api_pb2

from pkg.cri.metric_descriptors import MetricDescriptor, PodMetrics, Sample
from pkg.cri.metrics import CriMetricsService
from pkg.cri.stats import ContainerUsage, PodUsage, StatsService


def _u64(value: int | None) -> api_pb2.UInt64Value | None:
    return api_pb2.UInt64Value(value=value) if value is not None else None


def _cpu(usage: ContainerUsage | PodUsage) -> api_pb2.CpuUsage | None:
    c = usage.cpu
    if c is None:
        return None
    return api_pb2.CpuUsage(timestamp=c.timestamp_ns, usage_core_nano_seconds=_u64(c.usage_core_nano_seconds),
                            usage_nano_cores=_u64(c.usage_nano_cores))


def _memory(usage: ContainerUsage | PodUsage) -> api_pb2.MemoryUsage | None:
    m = usage.memory
    if m is None:
        return None
    return api_pb2.MemoryUsage(
        timestamp=m.timestamp_ns, working_set_bytes=_u64(m.working_set_bytes), available_bytes=_u64(m.available_bytes),
        usage_bytes=_u64(m.usage_bytes), rss_bytes=_u64(m.rss_bytes), page_faults=_u64(m.page_faults),
        major_page_faults=_u64(m.major_page_faults),
    )


def container_stats(u: ContainerUsage) -> api_pb2.ContainerStats:
    m = u.metadata
    stats = api_pb2.ContainerStats(
        attributes=api_pb2.ContainerAttributes(
            id=m.id, metadata=api_pb2.ContainerMetadata(name=m.config.name, attempt=m.config.attempt),
            labels=m.config.labels, annotations=m.config.annotations),
        cpu=_cpu(u), memory=_memory(u),
    )
    if u.writable is not None:
        w = u.writable
        stats.writable_layer.CopyFrom(api_pb2.FilesystemUsage(
            timestamp=w.timestamp_ns, fs_id=api_pb2.FilesystemIdentifier(mountpoint=w.mountpoint),
            used_bytes=_u64(w.used_bytes), inodes_used=_u64(w.inodes_used)))
    return stats


def pod_stats(u: PodUsage) -> api_pb2.PodSandboxStats:
    c = u.metadata.config
    linux = api_pb2.LinuxPodSandboxStats(cpu=_cpu(u), memory=_memory(u),
                                         containers=[container_stats(x) for x in u.containers])
    if u.process_count is not None:
        linux.process.CopyFrom(api_pb2.ProcessUsage(timestamp=u.cpu.timestamp_ns if u.cpu else 0,
                                                    process_count=_u64(u.process_count)))
    return api_pb2.PodSandboxStats(
        attributes=api_pb2.PodSandboxAttributes(
            id=u.metadata.id,
            metadata=api_pb2.PodSandboxMetadata(name=c.name, uid=c.uid, namespace=c.namespace, attempt=c.attempt),
            labels=c.labels, annotations=c.annotations),
        linux=linux,
    )


def _descriptor(d: MetricDescriptor) -> api_pb2.MetricDescriptor:
    return api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=d.label_keys)


def _metric(s: Sample) -> api_pb2.Metric:
    return api_pb2.Metric(name=s.name, timestamp=0, metric_type=api_pb2.COUNTER if s.counter else api_pb2.GAUGE,
                          label_values=s.label_values, value=api_pb2.UInt64Value(value=s.value))


def pod_metrics(p: PodMetrics) -> api_pb2.PodSandboxMetrics:
    return api_pb2.PodSandboxMetrics(
        pod_sandbox_id=p.sandbox_id, metrics=[_metric(s) for s in p.samples],
        container_metrics=[api_pb2.ContainerMetrics(container_id=c.container_id,
                                                     metrics=[_metric(s) for s in c.samples])
                           for c in p.containers])


class StatsHandlers:
    def __init__(self, stats: StatsService) -> None:
        self._stats = stats
        self._metrics = CriMetricsService(stats.ctx)

    async def ListMetricDescriptors(  # noqa: N802
        self, request: api_pb2.ListMetricDescriptorsRequest, context: object
    ) -> api_pb2.ListMetricDescriptorsResponse:
        return api_pb2.ListMetricDescriptorsResponse(descriptors=[_descriptor(d) for d in self._metrics.descriptors()])

    async def ListPodSandboxMetrics(  # noqa: N802
        self, request: api_pb2.ListPodSandboxMetricsRequest, context: object
    ) -> api_pb2.ListPodSandboxMetricsResponse:
        return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=[pod_metrics(p) for p in await self._metrics.pods()])

    async def ContainerStats(  # noqa: N802
        self, request: api_pb2.ContainerStatsRequest, context: object
    ) -> api_pb2.ContainerStatsResponse:
        full_id = self._stats.ctx.containers.resolve(request.container_id)
        (usage,) = await self._stats.containers([full_id])
        return api_pb2.ContainerStatsResponse(stats=container_stats(usage))

    async def ListContainerStats(  # noqa: N802
        self, request: api_pb2.ListContainerStatsRequest, context: object
    ) -> api_pb2.ListContainerStatsResponse:
        f = request.filter
        ids = [
            cid for cid, m, _ in self._stats.ctx.containers
            if (not f.id or cid.startswith(f.id))
            and (not f.pod_sandbox_id or m.sandbox_id.startswith(f.pod_sandbox_id))
            and all(m.config.labels.get(k) == v for k, v in f.label_selector.items())
        ]
        usages = await self._stats.containers(ids)
        return api_pb2.ListContainerStatsResponse(stats=[container_stats(u) for u in usages])

    async def PodSandboxStats(  # noqa: N802
        self, request: api_pb2.PodSandboxStatsRequest, context: object
    ) -> api_pb2.PodSandboxStatsResponse:
        full_id = self._stats.ctx.sandboxes.resolve(request.pod_sandbox_id)
        (usage,) = await self._stats.pods([full_id])
        return api_pb2.PodSandboxStatsResponse(stats=pod_stats(usage))

    async def ListPodSandboxStats(  # noqa: N802
        self, request: api_pb2.ListPodSandboxStatsRequest, context: object
    ) -> api_pb2.ListPodSandboxStatsResponse:
        f = request.filter
        ids = [
            sid for sid, m, _ in self._stats.ctx.sandboxes
            if (not f.id or sid.startswith(f.id))
            and all(m.config.labels.get(k) == v for k, v in f.label_selector.items())
        ]
        usages = await self._stats.pods(ids)
        return api_pb2.ListPodSandboxStatsResponse(stats=[pod_stats(u) for u in usages])
