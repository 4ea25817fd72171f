"""The metrics kubelet's /metrics/cadvisor serves from CRI: cAdvisor's names, help texts, label keys and counter
or gauge (ListMetricDescriptors' answer), and the typed samples ListPodSandboxMetrics carries.

Separate from pkg.cri.metrics, which reads the figures: this is the catalogue, a contract with kubelet and the
dashboards built on cAdvisor (every series has the labels ``id``, ``name``, ``image``, then its own).
"""
from __future__ import annotations

from dataclasses import dataclass

BASE_LABELS = ("id", "name", "image")


@dataclass(frozen=True)
class MetricDescriptor:
    name: str
    help: str
    label_keys: tuple[str, ...]
    counter: bool  # else a gauge


@dataclass(frozen=True)
class Sample:
    name: str
    label_values: tuple[str, ...]
    value: int
    counter: bool


@dataclass(frozen=True)
class ContainerMetrics:
    container_id: str
    samples: list[Sample]


@dataclass(frozen=True)
class PodMetrics:
    sandbox_id: str
    samples: list[Sample]  # the pod's own: network, and its cgroup when kubelet gave it one
    containers: list[ContainerMetrics]


def _d(name: str, help_: str, counter: bool = False, extra: tuple[str, ...] = ()) -> MetricDescriptor:
    return MetricDescriptor(name, help_, BASE_LABELS + extra, counter)


_CPU = (
    _d("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", True, ("cpu",)),
    _d("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", True),
    _d("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", True),
    _d("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", True),
    _d("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", True),
    _d("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", True),
)
_MEMORY = (
    _d("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when "
                                       "it was accessed."),
    _d("container_memory_working_set_bytes", "Current working set in bytes."),
    _d("container_memory_rss", "Size of RSS in bytes."),
    _d("container_memory_cache", "Number of bytes of page cache memory."),
    _d("container_memory_mapped_file", "Size of memory mapped files in bytes."),
    _d("container_memory_swap", "Container swap usage in bytes."),
    _d("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes."),
    _d("container_memory_failcnt", "Number of memory usage hits limits."),
    _d("container_memory_kernel_usage", "Size of kernel memory allocated in bytes."),
    _d("container_memory_failures_total", "Cumulative count of memory allocation failures.", True,
       ("failure_type", "scope")),
)
_OOM = (_d("container_oom_events_total", "Count of out of memory events observed for the container.", True),)
_PROCESS = (_d("container_processes", "Number of processes running inside the container."),
            _d("container_threads", "Number of threads running inside the container."),
            _d("container_threads_max", "Maximum number of threads allowed inside the container, infinity if "
                                        "value is zero."),
            _d("container_file_descriptors", "Number of open file descriptors for the container."),
            _d("container_sockets", "Number of open sockets for the container."))
_DEV = ("device",)
# The filesystem figures are those of the filesystem holding the writable layers (the snapshotter's), as
# cAdvisor reports the container's root filesystem device.  The I/O counters have descriptors only: they
# need blkio accounting, which this host does not give per container (critest treats them as optional).
_FS = (_d("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem."),
       _d("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem."),
       _d("container_fs_inodes_total", "Number of Inodes"),
       _d("container_fs_inodes_free", "Number of available Inodes"),
       _d("container_fs_reads_bytes_total", "Cumulative count of bytes read", True, _DEV),
       _d("container_fs_reads_total", "Cumulative count of reads completed", True, _DEV),
       _d("container_fs_writes_bytes_total", "Cumulative count of bytes written", True, _DEV),
       _d("container_fs_writes_total", "Cumulative count of writes completed", True, _DEV),
       _d("container_blkio_device_usage_total", "Blkio Device bytes usage", True,
          ("device", "major", "minor", "operation")))
_SPEC = (
    _d("container_spec_memory_limit_bytes", "Memory limit for the container."),
    _d("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container."),
    _d("container_spec_cpu_period", "CPU period of the container."),
    _d("container_spec_cpu_quota", "CPU quota of the container."),
    _d("container_spec_cpu_shares", "CPU share of the container."),
)
_MISC = (_d("container_start_time_seconds", "Start time of the container since unix epoch in seconds."),
         _d("container_last_seen", "Last time a container was seen by the exporter"))
_NET_KEYS = ("interface",)
_NETWORK = (
    _d("container_network_receive_bytes_total", "Cumulative count of bytes received", True, _NET_KEYS),
    _d("container_network_receive_packets_total", "Cumulative count of packets received", True, _NET_KEYS),
    _d("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving",
       True, _NET_KEYS),
    _d("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", True,
       _NET_KEYS),
    _d("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", True, _NET_KEYS),
    _d("container_network_transmit_packets_total", "Cumulative count of packets transmitted", True, _NET_KEYS),
    _d("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while "
                                                            "transmitting", True, _NET_KEYS),
    _d("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting",
       True, _NET_KEYS),
)

DESCRIPTORS: tuple[MetricDescriptor, ...] = _CPU + _MEMORY + _OOM + _PROCESS + _FS + _SPEC + _MISC + _NETWORK
BY_NAME = {d.name: d for d in DESCRIPTORS}
