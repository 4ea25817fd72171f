"""critest "PodSandbox" (cri-tools pkg/validate/pod.go, pod_linux.go), ported."""
from __future__ import annotations

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib.critest import Crit, crit_daemon_fixture, crit_fixture  # noqa: F401


def _listed(crit: Crit, pod_id: str) -> list[api_pb2.PodSandbox]:
    return list(crit.rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(
        filter=api_pb2.PodSandboxFilter(id=pod_id)), timeout=30).items)


def _pod_status(crit: Crit, pod_id: str) -> api_pb2.PodSandboxStatus:
    return crit.rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=30).status


def test_runtime_should_support_running_podsandbox(crit: Crit) -> None:
    """critest: runtime should support running PodSandbox [Conformance]."""
    pod_id = crit.run_pod(crit.pod_config("PodSandbox-for-create-test"))
    assert _pod_status(crit, pod_id).state == api_pb2.SANDBOX_READY
    assert [p.id for p in _listed(crit, pod_id)] == [pod_id]


def test_runtime_should_support_stopping_podsandbox(crit: Crit) -> None:
    """critest: runtime should support stopping PodSandbox [Conformance]."""
    pod_id = crit.run_pod(crit.pod_config("PodSandbox-for-test-stop"))
    crit.rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    assert _pod_status(crit, pod_id).state == api_pb2.SANDBOX_NOTREADY


def test_runtime_should_support_removing_podsandbox(crit: Crit) -> None:
    """critest: runtime should support removing PodSandbox [Conformance]."""
    pod_id = crit.run_pod(crit.pod_config("PodSandbox-for-test-remove"))
    crit.remove_pod(pod_id)
    assert _listed(crit, pod_id) == []


def test_runtime_should_support_preserving_podsandbox_attributes(crit: Crit) -> None:
    """critest: runtime should support preserving PodSandbox attributes [Conformance]."""
    config = crit.pod_config("PodSandbox-with-attributes")
    md = config.metadata
    labels = {"foo": "bar", "io.kubernetes.pod.name": md.name, "io.kubernetes.pod.namespace": md.namespace,
              "io.kubernetes.pod.uid": md.uid}
    config.labels.clear()
    config.labels.update(labels)
    config.annotations.update({"abc": "def"})
    pod_id = crit.run_pod(config)
    status = _pod_status(crit, pod_id)
    pods = _listed(crit, pod_id)
    assert len(pods) == 1
    for got in (status, pods[0]):
        assert (got.metadata.name, got.metadata.uid, got.metadata.namespace, got.metadata.attempt) == (
            md.name, md.uid, md.namespace, md.attempt)
        assert labels.items() <= dict(got.labels).items()
        assert {"abc": "def"}.items() <= dict(got.annotations).items()


def _metrics_supported(crit: Crit) -> bool:
    try:
        crit.rs.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest(), timeout=10)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return False
        raise
    return True


# cri-tools pkg/validate/pod.go: the cAdvisor names kubelet serves with CRI-O (expectedMetricDescriptorNames),
# those no runtime implements yet, and those whose values need blkio accounting (optional).
EXPECTED_METRICS = {
    "container_blkio_device_usage_total", "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total", "container_cpu_user_seconds_total",
    "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total", "container_fs_limit_bytes",
    "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
    "container_fs_writes_bytes_total", "container_fs_writes_total", "container_hugetlb_max_usage_bytes",
    "container_hugetlb_usage_bytes", "container_last_seen", "container_memory_cache", "container_memory_failcnt",
    "container_memory_failures_total", "container_memory_kernel_usage", "container_memory_mapped_file",
    "container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap",
    "container_memory_usage_bytes", "container_memory_working_set_bytes", "container_network_receive_bytes_total",
    "container_network_receive_errors_total", "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total", "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total", "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total", "container_oom_events_total",
    "container_pressure_cpu_stalled_seconds_total", "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total", "container_pressure_io_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total", "container_pressure_memory_waiting_seconds_total",
    "container_processes", "container_sockets", "container_spec_cpu_period", "container_spec_cpu_quota",
    "container_spec_cpu_shares", "container_spec_memory_limit_bytes", "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads",
    "container_threads_max", "container_ulimits_soft",
}
UNIMPLEMENTED_METRICS = {
    "container_hugetlb_max_usage_bytes", "container_hugetlb_usage_bytes",
    "container_pressure_cpu_stalled_seconds_total", "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total", "container_pressure_io_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total", "container_pressure_memory_waiting_seconds_total",
    "container_spec_cpu_quota", "container_spec_memory_reservation_limit_bytes", "container_ulimits_soft",
}
OPTIONAL_METRIC_VALUES = {"container_blkio_device_usage_total", "container_fs_reads_bytes_total",
                          "container_fs_reads_total", "container_fs_writes_bytes_total", "container_fs_writes_total"}


def test_runtime_should_support_returning_metrics_descriptors(crit: Crit) -> None:
    """critest: runtime should support returning metrics descriptors [Conformance] (skipped when UNIMPLEMENTED)."""
    if not _metrics_supported(crit):
        pytest.skip("CRI Metrics endpoints not supported by this runtime version")
    descs = crit.rs.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest(), timeout=10).descriptors
    assert [d.name for d in descs if not d.help or not d.label_keys] == []
    assert sorted(EXPECTED_METRICS - UNIMPLEMENTED_METRICS - {d.name for d in descs}) == []


def test_runtime_should_support_listing_pod_sandbox_metrics(crit: Crit) -> None:
    """critest: runtime should support listing pod sandbox metrics [Conformance] (skipped when UNIMPLEMENTED)."""
    if not _metrics_supported(crit):
        pytest.skip("CRI Metrics endpoints not supported by this runtime version")
    pod_id, pod_config = crit.pod_for_container()
    resources = api_pb2.LinuxContainerResources(cpu_period=100000, cpu_quota=20000, cpu_shares=1024,
                                                memory_limit_in_bytes=64 << 20,
                                                memory_swap_limit_in_bytes=64 << 20)
    cid = crit.create(pod_id, pod_config, crit.container_config(
        "container-for-metrics-", linux=api_pb2.LinuxContainerConfig(resources=resources)))
    crit.start(cid)
    assert not crit.exec(cid, ["/bin/sh", "-c", "mkdir -p /var/lib/mydisktest && for i in $(seq 1 10); do "
                               "echo hi >> /var/lib/mydisktest/inode_test_file_$i; done; sync"]).failed
    descs = crit.rs.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest(), timeout=10).descriptors
    metrics = crit.rs.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest(), timeout=30).pod_metrics
    (mine,) = [m for m in metrics if m.pod_sandbox_id == pod_id]
    found: dict[str, list[str]] = {}  # name -> label values of its first series (as critest)
    for metric in [*mine.metrics, *(m for c in mine.container_metrics for m in c.metrics)]:
        if not found.get(metric.name):
            found[metric.name] = list(metric.label_values)
    skip = OPTIONAL_METRIC_VALUES | UNIMPLEMENTED_METRICS
    assert sorted(n for n in EXPECTED_METRICS - skip if not found.get(n)) == []
    mismatched = [d.name for d in descs if d.name not in skip and len(found.get(d.name, [])) != len(d.label_keys)]
    assert mismatched == []


@pytest.mark.parametrize(("sysctl", "path", "value"), [
    ("kernel.shm_rmid_forced", "/proc/sys/kernel/shm_rmid_forced", "1"),
    ("fs.mqueue.msg_max", "/proc/sys/fs/mqueue/msg_max", "100"),
], ids=["safe", "unsafe"])
def test_runtime_should_support_sysctls(crit: Crit, sysctl: str, path: str, value: str) -> None:
    """critest: should support safe sysctls / should support unsafe sysctls."""
    config = crit.pod_config("pod-sandbox-with-sysctls")
    config.linux.sysctls[sysctl] = value
    pod_id = crit.run_pod(config)
    cid = crit.create_default(pod_id, config, "container-sysctl-")
    crit.start(cid)
    result = crit.exec(cid, ["cat", path])
    assert not result.failed and result.stdout.strip() == value
