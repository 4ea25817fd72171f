"""CRI metrics (cAdvisor-style series) and the CRI events stream's domain filter, without a daemon."""
from __future__ import annotations

from cri.events import _cri_container_event
from cri.stats import pod_metrics
from pkg.cgroups.stats import ContainerStats, CpuStats, MemoryStats, PidsStats
from pkg.cri import metrics as cri_metrics
from pkg.cri.metric_descriptors import DESCRIPTORS, PodMetrics
from pkg.cri.metrics import parse_net_dev
from pkg.events import CRI_DOMAIN, DOCKER_DOMAIN, ContainerEvent, ContainerEventType, DockerEvent
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus
from pkg.model.state import ContainerState
from pkg.runtime.resources import Resources

NET_DEV = """Inter-|   Receive                                 |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
    lo:   120     2    0    0    0     0          0         0   120     2    0    0    0     0       0          0
  eth0:  5000    40    1    2    0     0          0         0  3000    30    3    4    0     0       0          0
"""


def test_net_dev_is_parsed_without_loopback() -> None:
    (eth0,) = parse_net_dev(NET_DEV)
    assert (eth0.interface, eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == ("eth0", 5000, 40, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (3000, 30, 3, 4)


def test_descriptors_are_unique_with_help_and_the_base_labels_first() -> None:
    names = [d.name for d in DESCRIPTORS]
    assert len(names) == len(set(names))
    for d in DESCRIPTORS:
        assert d.help and d.label_keys[:3] == ("id", "name", "image"), d.name
        # cAdvisor's one gauge named *_total: the filesystem's inode count.
        assert d.counter == (d.name.endswith("_total") and d.name != "container_fs_inodes_total"), d.name


def test_every_sample_matches_its_descriptor_and_is_in_cadvisor_units() -> None:
    metadata = ContainerMetadata(id="c" * 64, sandbox_id="s" * 64, config=ContainerConfig(name="web", image="busybox"),
                                 image_id="sha256:" + "1" * 64, image_ref="busybox:latest", created_at=0)
    status = ContainerStatus(ContainerState.RUNNING, pid=42, started_at=1_700_000_000_500_000_000,
                             resources=Resources(cpu_period=100000, cpu_quota=20000, memory_limit_in_bytes=64 << 20))
    cpu = CpuStats(timestamp_ns=0, usage_core_nano_seconds=3_700_000_000, user_nano_seconds=2_000_000_000,
                   system_nano_seconds=1_000_000_000, periods=10, throttled_periods=2,
                   throttled_nano_seconds=1_500_000_000)
    memory = MemoryStats(timestamp_ns=0, usage_bytes=100, working_set_bytes=80, rss_bytes=50, cache_bytes=20,
                         page_faults=9, major_page_faults=1, stat={"total_mapped_file": 5})
    cgroup = cri_metrics._Cgroup(ContainerStats("/x", cpu, memory, PidsStats(3, 100)), oom_kills=1, kernel_bytes=7,
                                 failcnt=0, processes=cri_metrics._Processes(3, 5, 12, 2))
    container = cri_metrics._container_metrics(metadata, status, cgroup, (4096, 10),
                                               cri_metrics._Filesystem(1 << 30, 1000, 900), now=2 * 10**18)
    pod = cri_metrics._Out(("s" * 64, "POD", ""))
    cri_metrics._network_samples(pod, parse_net_dev(NET_DEV))
    by_name = {d.name: d for d in DESCRIPTORS}
    samples = {s.name: s for s in container.samples}
    for sample in [*container.samples, *pod.samples]:
        desc = by_name[sample.name]
        assert len(sample.label_values) == len(desc.label_keys), sample.name
        assert sample.counter == desc.counter
    assert samples["container_cpu_usage_seconds_total"].label_values[3:] == ("total",)
    assert samples["container_cpu_usage_seconds_total"].value == 3  # whole seconds
    assert samples["container_cpu_cfs_throttled_seconds_total"].value == 1
    assert samples["container_memory_working_set_bytes"].value == 80
    assert samples["container_memory_mapped_file"].value == 5
    assert samples["container_processes"].value == 3 and samples["container_threads"].value == 5
    assert samples["container_file_descriptors"].value == 12 and samples["container_sockets"].value == 2
    assert samples["container_spec_memory_limit_bytes"].value == 64 << 20
    assert samples["container_start_time_seconds"].value == 1_700_000_000
    assert samples["container_fs_usage_bytes"].value == 4096 and samples["container_fs_inodes_free"].value == 900
    assert samples["container_oom_events_total"].value == 1
    assert {s.name for s in pod.samples} == {d.name for d in DESCRIPTORS if "network" in d.name}

    proto = pod_metrics(PodMetrics("s" * 64, pod.samples, [container]))
    assert proto.pod_sandbox_id == "s" * 64 and len(proto.metrics) == 8
    assert {m.name for m in proto.container_metrics[0].metrics} == set(samples)


def test_cri_events_stream_sees_only_cri_container_events() -> None:
    assert _cri_container_event(ContainerEvent("c", "s", ContainerEventType.CREATED, 0, CRI_DOMAIN))
    assert not _cri_container_event(ContainerEvent("c", "s", ContainerEventType.CREATED, 0, DOCKER_DOMAIN))
    assert not _cri_container_event(DockerEvent("image", "pull", "busybox"))
