"""critest "Container", "Container Mount Propagation", "Container OOM", "Container Mount Readonly"
(cri-tools pkg/validate/container.go, container_linux.go), ported."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.critest import DEFAULT_LOG, PAUSE_CMD, Crit, crit_daemon_fixture, crit_fixture, log_contains, parse_log  # noqa: F401
from lib.daemon import DaemonFactory
from lib.registry import Registry


def _privileged_pod(crit: Crit) -> tuple[str, api_pb2.PodSandboxConfig]:
    """createPrivilegedPodSandbox(rc, true)."""
    config = crit.pod_config("create-Privileged-PodSandbox-for-container")
    config.linux.security_context.privileged = True
    return crit.run_pod(config), config


def test_runtime_should_support_creating_container(crit: Crit) -> None:
    """critest: runtime should support creating container [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-create-")
    assert [c.id for c in crit.list_containers(id=cid)] == [cid]


def test_runtime_should_support_starting_container(crit: Crit) -> None:
    """critest: runtime should support starting container [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    crit.start_running(crit.create_default(pod_id, pod_config, "container-for-start-test-"))


def test_runtime_should_support_stopping_container(crit: Crit) -> None:
    """critest: runtime should support stopping container [Conformance] (StopContainer within its 60 s timeout)."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-stop-test-")
    crit.start(cid)
    crit.rs.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=60), timeout=60)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)


@pytest.mark.parametrize("how", ["created", "running", "stopped"])
def test_runtime_should_support_removing_container(crit: Crit, how: str) -> None:
    """critest: runtime should support removing created / running / stopped container [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create(pod_id, pod_config, crit.container_config(f"container-for-remove-{how}-test-", PAUSE_CMD))
    if how != "created":
        crit.start(cid)
    if how == "stopped":
        crit.rs.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=60), timeout=60)
        crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    crit.rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)
    assert crit.list_containers(id=cid) == []


def test_runtime_should_support_execsync(crit: Crit) -> None:
    """critest: runtime should support execSync [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-execSync-test-")
    crit.start(cid)
    assert crit.exec_ok(cid, ["echo", "-n", "hello"]) == "hello"


def test_runtime_should_support_execsync_with_timeout(crit: Crit) -> None:
    """critest: runtime should support execSync with timeout [Conformance].

    Stricter than critest: the client deadline is generous, so narwhald itself must report the timeout.
    ``pgrep`` comes from test/lib/critest_tools.c (Debian's busybox-static has none).
    """
    crit.require_tools()
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-execSync-timeout-test-")
    crit.start(cid)
    assert crit.exec(cid, ["sleep", "4321"], timeout=1).failed
    result = crit.exec(cid, ["sh", "-c", "pgrep sleep || true"])
    assert not result.failed and result.stderr == "" and result.stdout.strip() == ""


def _stats_ids(crit: Crit, **filter_fields: object) -> list[str]:
    request = api_pb2.ListContainerStatsRequest()
    if filter_fields:
        request.filter.CopyFrom(api_pb2.ContainerStatsFilter(**filter_fields))  # type: ignore[arg-type]
    return [s.attributes.id for s in crit.rs.ListContainerStats(request, timeout=30).stats]


def test_runtime_should_support_listing_container_stats(crit: Crit) -> None:
    """critest: runtime should support listing container stats [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-stats-")
    crit.start(cid)
    stats = crit.rs.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid), timeout=30).stats
    assert stats.attributes.id == cid
    assert "container-for-stats-" in stats.attributes.metadata.name
    assert stats.cpu.timestamp != 0 and stats.memory.timestamp != 0


def test_runtime_should_support_listing_stats_for_started_containers(crit: Crit) -> None:
    """critest: runtime should support listing stats for started containers [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-stats-")
    crit.start(cid)
    assert cid in _stats_ids(crit, id=cid)


def test_runtime_should_support_listing_stats_when_filter_is_nil(crit: Crit) -> None:
    """critest: runtime should support listing stats for started containers when filter is nil [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-stats-with-nil-filter-")
    crit.start(cid)
    assert cid in _stats_ids(crit)


def test_runtime_should_support_listing_stats_for_three_containers(crit: Crit) -> None:
    """critest: runtime should support listing stats for three created containers when filter is nil. [Conformance]"""
    pod_id, pod_config = crit.pod_for_container()
    ids = [crit.create_default(pod_id, pod_config, "container-for-stats-with-nil-filter-") for _ in range(3)]
    for cid in ids:
        crit.start(cid)
    listed = _stats_ids(crit)
    assert all(cid in listed for cid in ids)


def test_runtime_should_support_listing_stats_filtered_by_labels(crit: Crit) -> None:
    """critest: runtime should support listing stats for containers filtered by labels [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-stats-with-labels-", labels={"foo": "bar"})
    crit.start(cid)
    assert cid in _stats_ids(crit, label_selector={"foo": "bar"})
    assert cid not in _stats_ids(crit, label_selector={"foo": "baz"})


@pytest.mark.parametrize("symlink", [False, True], ids=["dir", "symlink"])
def test_runtime_should_support_starting_container_with_volume(crit: Crit, symlink: bool) -> None:
    """critest: runtime should support starting container with volume [Conformance]
    / ... with volume when host path is a symlink [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    host_path = crit.tempdir(f"test{pod_id[:12]}")
    (host_path / "testVolume.file").touch()
    if symlink:
        link = Path(str(host_path) + "-symlink")
        link.symlink_to(host_path)
        crit.dirs.append(link)
        host_path = link
    cid = crit.create(pod_id, pod_config, crit.container_config(
        "container-with-volume-test-", PAUSE_CMD,
        mounts=[api_pb2.Mount(host_path=str(host_path), container_path=str(host_path), selinux_relabel=True)]))
    crit.start_running(cid)
    assert crit.exec_ok(cid, ["ls", "-A", str(host_path)]) != ""


def test_runtime_should_support_starting_container_with_log(crit: Crit) -> None:
    """critest: runtime should support starting container with log [Conformance]."""
    pod_id, pod_config = crit.pod_with_log_dir()
    config = crit.container_config("container-with-log-test-", ["echo", DEFAULT_LOG])
    config.log_path = config.metadata.name + ".log"
    cid = crit.create(pod_id, pod_config, config)
    crit.start(cid)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    assert log_contains(Path(pod_config.log_directory, config.log_path), DEFAULT_LOG + "\n", "stdout")


def test_runtime_should_support_reopening_container_log(crit: Crit) -> None:
    """critest: runtime should support reopening container log [Conformance]."""
    pod_id, pod_config = crit.pod_with_log_dir()
    config = crit.container_config("container-reopen-log-test-",
                                   ["sh", "-c", f"while true; do echo {DEFAULT_LOG}; sleep 1; done"])
    config.log_path = config.metadata.name + ".log"
    cid = crit.create(pod_id, pod_config, config)
    crit.start(cid)
    log = Path(pod_config.log_directory, config.log_path)
    renamed = Path(str(log) + ".new")
    cri.wait_for(lambda: log.exists() and parse_log(log) != [], what="container log")
    log.rename(renamed)
    crit.rs.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid), timeout=30)
    assert log.exists(), "new container log file should be created"
    cri.wait_for(lambda: parse_log(log) != [], what="new container log")
    old_length = len(parse_log(renamed))
    for _ in range(5):  # critest's Consistently(5s, 1s)
        time.sleep(1)
        assert len(parse_log(renamed)) == old_length, "old container log should not change"


def _mount(source: str, target: str, *flags: str) -> None:
    subprocess.run(["mount", *flags, source, target], check=True, capture_output=True)


@pytest.mark.parametrize("propagation", [api_pb2.PROPAGATION_PRIVATE, api_pb2.PROPAGATION_BIDIRECTIONAL,
                                         api_pb2.PROPAGATION_HOST_TO_CONTAINER],
                         ids=["rprivate", "rshared", "rslave"])
def test_mount_propagation(crit: Crit, propagation: int) -> None:
    """critest: mount with 'rprivate' should not support propagation / mount with 'rshared' should support
    propagation from host to container and vice versa / mount with 'rslave' should support propagation from
    host to container."""
    pod_id, pod_config = _privileged_pod(crit)
    host_path = crit.tempdir(f"test{pod_id[:12]}")
    mnt_source = host_path / "mnt"
    mnt_point = mnt_source / "propagationMnt"
    mnt_point.mkdir(parents=True)
    src_dir = host_path / "propagationSrcDir"
    src_dir.mkdir()
    (src_dir / "flagFile").touch()
    _mount(str(mnt_source), str(mnt_source), "--rbind")
    _mount("none", str(mnt_source), "--make-rprivate" if propagation == api_pb2.PROPAGATION_PRIVATE
           else "--make-rshared")
    container_mnt = mnt_source / "containerMntPoint"
    try:
        config = crit.container_config("mount-propagation-test-", PAUSE_CMD, mounts=[api_pb2.Mount(
            host_path=str(mnt_source), container_path=str(mnt_source), propagation=propagation)])
        config.linux.security_context.privileged = True
        cid = crit.create(pod_id, pod_config, config)
        mounts = crit.status(cid, verbose=True).status.mounts
        assert len(mounts) == 1
        assert (mounts[0].container_path, mounts[0].host_path) == (str(mnt_source), str(mnt_source))
        assert not mounts[0].readonly and not mounts[0].selinux_relabel
        assert mounts[0].propagation == propagation
        crit.start_running(cid)
        _mount(str(src_dir), str(mnt_point), "--rbind")
        seen = crit.exec_ok(cid, ["ls", "-A", str(mnt_point)])
        assert (seen == "") == (propagation == api_pb2.PROPAGATION_PRIVATE), seen
        crit.exec_ok(cid, ["sh", "-c", f"mkdir -p {container_mnt}"])
        crit.exec_ok(cid, ["sh", "-c", f"mount --bind /etc {container_mnt}"])
        on_host = os.listdir(container_mnt)
        assert (on_host != []) == (propagation == api_pb2.PROPAGATION_BIDIRECTIONAL), on_host
    finally:
        crit.remove_pod(pod_id)
        for path in (container_mnt, mnt_point, mnt_source):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_should_terminate_with_exitcode_137_and_reason_oomkilled(crit: Crit) -> None:
    """critest: should terminate with exitCode 137 and reason OOMKilled."""
    pod_id, pod_config = _privileged_pod(crit)
    resources = api_pb2.LinuxContainerResources(memory_limit_in_bytes=15 << 20, memory_swap_limit_in_bytes=15 << 20)
    cid = crit.create(pod_id, pod_config, crit.container_config(
        "OOM-test-", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=20M"],
        linux=api_pb2.LinuxContainerConfig(resources=resources)))
    crit.status(cid, verbose=True)
    crit.start(cid)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    status = crit.status(cid).status
    assert (status.exit_code, status.reason) == (137, "OOMKilled")


def _rro_supported(crit: Crit) -> bool:
    """critest's runtimeSupportsRRO for the default handler (critest skips the RRO specs without it; narwhald's
    runc reports "rro", so here its absence is a failure)."""
    status = crit.rs.Status(api_pb2.StatusRequest(), timeout=10)
    return any(h.name == "" and h.features.recursive_read_only_mounts for h in status.runtime_handlers)


def _host_path_with_tmpfs(crit: Crit, pod_id: str) -> Path:
    host_path = crit.tempdir(f"test{pod_id[:12]}")
    (host_path / "tmpfs").mkdir()
    _mount("none", str(host_path / "tmpfs"), "-t", "tmpfs")
    return host_path


def test_should_support_non_recursive_readonly_mounts(crit: Crit) -> None:
    """critest: should support non-recursive readonly mounts (a tmpfs below the read-only bind stays writable)."""
    pod_id, pod_config = _privileged_pod(crit)
    host_path = _host_path_with_tmpfs(crit, pod_id)
    try:
        cid = crit.create(pod_id, pod_config, crit.container_config("test-mount-", PAUSE_CMD, mounts=[api_pb2.Mount(
            host_path=str(host_path), container_path="/mnt", readonly=True, selinux_relabel=True)]))
        assert len(crit.status(cid, verbose=True).status.mounts) == 1
        crit.start_running(cid)
        crit.exec_ok(cid, ["touch", "/mnt/tmpfs/file"])
    finally:
        crit.remove_pod(pod_id)
        subprocess.run(["umount", "-l", str(host_path / "tmpfs")], capture_output=True, check=False)


def test_should_support_recursive_readonly_mounts(crit: Crit) -> None:
    """critest: should support recursive readonly mounts (the tmpfs below the bind is read-only too)."""
    assert _rro_supported(crit), "runtime does not implement recursive readonly mounts"
    pod_id, pod_config = _privileged_pod(crit)
    host_path = _host_path_with_tmpfs(crit, pod_id)
    try:
        cid = crit.create(pod_id, pod_config, crit.container_config("test-mount-", PAUSE_CMD, mounts=[api_pb2.Mount(
            host_path=str(host_path), container_path="/mnt", readonly=True, recursive_read_only=True,
            selinux_relabel=True)]))
        assert len(crit.status(cid, verbose=True).status.mounts) == 1
        crit.start_running(cid)
        crit.exec_ok(cid, ["sh", "-c", 'touch /mnt/tmpfs/foo 2>&1 | grep -q "Read-only file system"'])
    finally:
        crit.remove_pod(pod_id)
        subprocess.run(["umount", "-l", str(host_path / "tmpfs")], capture_output=True, check=False)


@pytest.mark.parametrize(("readonly", "propagation"), [
    (True, api_pb2.PROPAGATION_HOST_TO_CONTAINER),
    (True, api_pb2.PROPAGATION_BIDIRECTIONAL),
    (False, api_pb2.PROPAGATION_PRIVATE),
], ids=["host_to_container", "bidirectional", "readonly_false"])
def test_should_reject_a_recursive_readonly_mount(crit: Crit, readonly: bool, propagation: int) -> None:
    """critest: should reject a recursive readonly mount with PROPAGATION_HOST_TO_CONTAINER / with
    PROPAGATION_BIDIRECTIONAL / with ReadOnly: false."""
    assert _rro_supported(crit), "runtime does not implement recursive readonly mounts"
    pod_id, pod_config = _privileged_pod(crit)
    host_path = _host_path_with_tmpfs(crit, pod_id)
    try:
        crit.create_error(pod_id, pod_config, crit.container_config("test-mount-", PAUSE_CMD, mounts=[api_pb2.Mount(
            host_path=str(host_path), container_path="/mnt", readonly=readonly, recursive_read_only=True,
            selinux_relabel=True, propagation=propagation)]))
    finally:
        crit.remove_pod(pod_id)
        subprocess.run(["umount", "-l", str(host_path / "tmpfs")], capture_output=True, check=False)


NO_RRO_RUNC = """#!/bin/sh
# runc, except that its features report leaves out recursive read-only mounts
if [ "$1" = features ]; then
    exec python3 -c 'import json, subprocess
report = json.loads(subprocess.run(["runc", "features"], capture_output=True, check=True).stdout)
report["mountOptions"] = [o for o in report.get("mountOptions") or [] if o != "rro"]
print(json.dumps(report))'
fi
exec runc "$@"
"""


def test_recursive_readonly_mount_rejected_by_a_handler_without_rro(daemon_factory: DaemonFactory, registry: Registry,
                                                                     tmp_path: Path) -> None:
    """The other side of critest's runtimeSupportsRRO: a handler that does not advertise recursive read-only
    mounts must refuse them at CreateContainer (critest never sends them there; kubelet neither)."""
    wrapper = tmp_path / "norro-runc"
    wrapper.write_text(NO_RRO_RUNC)
    wrapper.chmod(0o755)
    d = daemon_factory(config_yaml=f"runtime-handlers:\n  norro: {wrapper}\n")
    ref = cri.push_busybox(registry)
    cri.pull(d.images(), ref)
    rs = d.runtime()
    handlers = {h.name: h.features.recursive_read_only_mounts
                for h in rs.Status(api_pb2.StatusRequest(), timeout=10).runtime_handlers}
    assert handlers == {"": True, "runc": True, "norro": False}
    config = cri.sandbox_config(host_network=True)
    pod_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config, runtime_handler="norro"),
                              timeout=60).pod_sandbox_id
    mount = api_pb2.Mount(host_path=str(tmp_path), container_path="/mnt", readonly=True, recursive_read_only=True)
    code = cri.code_of(lambda: rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=cri.container_config(ref, ["true"], mounts=[mount]), sandbox_config=config),
        timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
