"""The CRI RuntimeService end to end: pods and containers on real containerd and runc."""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonFactory, DaemonProcess
from lib.leaks import ctr, leftovers
from lib.registry import Registry

from pkg.containerd.api.runtime.v2.runc.options import oci_pb2

LINE = re.compile(r"^(\S+) (stdout|stderr) ([PF]) (.*)$")


@pytest.fixture
def busybox(daemon: DaemonProcess, registry: Registry) -> str:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    return ref




def read_log(path: Path) -> list[tuple[str, str, str]]:
    lines = []
    for raw in path.read_text().splitlines():
        m = LINE.match(raw)
        assert m, f"not a CRI log line: {raw!r}"
        lines.append((m.group(2), m.group(3), m.group(4)))
    return lines


def test_pod_and_container_lifecycle(daemon: DaemonProcess, busybox: str, tmp_path: Path) -> None:
    rs = daemon.runtime()
    logs = tmp_path / "logs"
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(log_dir=logs, host_network=True)), timeout=60).pod_sandbox_id
    status = rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=10).status
    assert status.state == api_pb2.SANDBOX_READY
    container_id = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id,
        config=cri.container_config(busybox, ["sh", "-c", "echo hello; echo oops >&2; exec sleep 3600"],
                                    log_path="c/0.log"),
        sandbox_config=cri.sandbox_config()), timeout=60).container_id
    assert cri.container_state(rs, container_id).state == api_pb2.CONTAINER_CREATED
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=container_id), timeout=60)
    assert cri.container_state(rs, container_id).state == api_pb2.CONTAINER_RUNNING
    log_file = logs / "c" / "0.log"
    cri.wait_for(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 2, what="log lines")
    assert sorted(read_log(log_file)) == [("stderr", "F", "oops"), ("stdout", "F", "hello")]
    listed = rs.ListContainers(api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(
        pod_sandbox_id=sandbox_id)), timeout=10).containers
    assert [c.id for c in listed] == [container_id]

    rs.StopContainer(api_pb2.StopContainerRequest(container_id=container_id, timeout=1), timeout=60)
    st = cri.container_state(rs, container_id)
    assert st.state == api_pb2.CONTAINER_EXITED and st.exit_code in (137, 143)
    assert st.finished_at >= st.started_at > 0
    rs.StopContainer(api_pb2.StopContainerRequest(container_id=container_id, timeout=1), timeout=60)  # idempotent
    rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=container_id), timeout=60)
    rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=container_id), timeout=60)  # idempotent
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items == []
    assert ctr(daemon, "containers", "ls", "-q").strip() == ""
    assert container_id not in ctr(daemon, "snapshots", "ls")


def test_exit_codes_and_reasons(daemon: DaemonProcess, busybox: str) -> None:
    rs = daemon.runtime()
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True)), timeout=60).pod_sandbox_id
    results = {}
    for name, command in (("ok", ["true"]), ("fail", ["sh", "-c", "exit 3"])):
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=cri.container_config(busybox, command, name=name)),
            timeout=60).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
        results[name] = cid
    for cid in results.values():
        cri.wait_for(lambda cid=cid: cri.container_state(rs, cid).state == api_pb2.CONTAINER_EXITED,
                     what="exit")
    ok, fail = (cri.container_state(rs, results[n]) for n in ("ok", "fail"))
    assert (ok.exit_code, ok.reason) == (0, "Completed")
    assert (fail.exit_code, fail.reason) == (3, "Error")
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert rs.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers == []


def test_errors_have_the_right_codes(daemon: DaemonProcess, busybox: str) -> None:
    rs = daemon.runtime()
    nf = grpc.StatusCode.NOT_FOUND
    assert cri.code_of(lambda: rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id="nope"),
                                                   timeout=10)) == nf
    assert cri.code_of(lambda: rs.ContainerStatus(api_pb2.ContainerStatusRequest(container_id="nope"),
                                                  timeout=10)) == nf
    assert cri.code_of(lambda: rs.StartContainer(api_pb2.StartContainerRequest(container_id="nope"),
                                                 timeout=10)) == nf
    assert cri.code_of(lambda: rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id="nope"),
                                                  timeout=10)) == grpc.StatusCode.OK
    assert cri.code_of(lambda: rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=api_pb2.PodSandboxConfig()), timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    config = cri.sandbox_config(host_network=True)
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    assert cri.code_of(lambda: rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config),
                                                timeout=60)) == grpc.StatusCode.ALREADY_EXISTS
    assert cri.code_of(lambda: rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=cri.container_config("127.0.0.1:1/missing:latest", ["true"])),
        timeout=30)) == nf
    make = api_pb2.CreateContainerRequest(pod_sandbox_id=sandbox_id,
                                          config=cri.container_config(busybox, ["sleep", "60"], name="dup"))
    cid = rs.CreateContainer(make, timeout=60).container_id
    assert cri.code_of(lambda: rs.CreateContainer(make, timeout=60)) == grpc.StatusCode.ALREADY_EXISTS
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    assert cri.code_of(lambda: rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid),
                                                 timeout=60)) == grpc.StatusCode.FAILED_PRECONDITION
    # Removing a running container stops it; removing the pod removes what is left.
    rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert ctr(daemon, "containers", "ls", "-q").strip() == ""


def test_shared_pid_namespace_runs_infra(daemon: DaemonProcess, busybox: str) -> None:
    rs = daemon.runtime()
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True, share_pid=True)), timeout=60).pod_sandbox_id
    info = json.loads(rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
        pod_sandbox_id=sandbox_id, verbose=True), timeout=10).info["info"])
    assert info["pid"] > 0
    sec = api_pb2.LinuxContainerConfig(security_context=api_pb2.LinuxContainerSecurityContext(
        namespace_options=api_pb2.NamespaceOption(pid=api_pb2.POD)))
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=cri.container_config(busybox, ["sleep", "60"], linux=sec)),
        timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    pid = json.loads(rs.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True),
                                        timeout=10).info["info"])["pid"]
    assert Path(f"/proc/{pid}/ns/pid").readlink() == Path(f"/proc/{info['pid']}/ns/pid").readlink()
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cri.container_state(rs, cid).state == api_pb2.CONTAINER_EXITED
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)


def test_kill9_recovers_state(daemon: DaemonProcess, busybox: str, tmp_path: Path) -> None:
    rs = daemon.runtime()
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True, log_dir=tmp_path)), timeout=60).pod_sandbox_id
    ids = {}
    for name, command in (("long", ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]),
                          ("short", ["sh", "-c", "sleep 2; exit 7"])):
        ids[name] = rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=cri.container_config(busybox, command, name=name,
                                                                   log_path=f"{name}.log")),
            timeout=60).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=ids[name]), timeout=60)
    daemon.kill9()
    time.sleep(3)  # "short" exits while narwhald is down
    size_down = (tmp_path / "long.log").stat().st_size
    daemon.start()
    rs = daemon.runtime()
    assert rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                               timeout=10).status.state == api_pb2.SANDBOX_READY
    assert cri.container_state(rs, ids["long"]).state == api_pb2.CONTAINER_RUNNING
    cri.wait_for(lambda: cri.container_state(rs, ids["short"]).state == api_pb2.CONTAINER_EXITED, what="exit")
    assert cri.container_state(rs, ids["short"]).exit_code == 7
    cri.wait_for(lambda: (tmp_path / "long.log").stat().st_size > size_down, what="log growth")
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert leftovers(daemon) == {}


def test_container_events_stream(daemon: DaemonProcess, busybox: str) -> None:
    import threading

    rs = daemon.runtime()
    seen: list[tuple[str, int]] = []
    stream = rs.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=120)

    def consume() -> None:
        try:
            for event in stream:
                seen.append((event.container_id, event.container_event_type))
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(0.5)
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True)), timeout=60).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=cri.container_config(busybox, ["sleep", "60"])), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    rs.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)
    expected = [api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_STARTED_EVENT,
                api_pb2.CONTAINER_STOPPED_EVENT, api_pb2.CONTAINER_DELETED_EVENT]
    cri.wait_for(lambda: [t for c, t in seen if c == cid] == expected, what=f"events, got {seen}")
    stream.cancel()
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)


def test_update_resources_reaches_the_cgroup(daemon: DaemonProcess, busybox: str) -> None:
    rs = daemon.runtime()
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True)), timeout=60).pod_sandbox_id
    linux = api_pb2.LinuxContainerConfig(resources=api_pb2.LinuxContainerResources(
        memory_limit_in_bytes=64 << 20, cpu_shares=512))
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=cri.container_config(busybox, ["sleep", "60"], linux=linux)),
        timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    pid = json.loads(rs.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True),
                                        timeout=10).info["info"])["pid"]
    memory_cgroup = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                         if line.split(":")[1] == "memory")
    limit = Path("/sys/fs/cgroup/memory") / memory_cgroup.lstrip("/") / "memory.limit_in_bytes"
    assert int(limit.read_text()) == 64 << 20
    rs.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=cid, linux=api_pb2.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_shares=256)),
        timeout=30)
    assert int(limit.read_text()) == 128 << 20
    status = cri.container_state(rs, cid)
    assert status.resources.linux.memory_limit_in_bytes == 128 << 20
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert not limit.parent.exists()


def test_exec_sync(daemon: DaemonProcess, busybox: str) -> None:
    rs = daemon.runtime()
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True)), timeout=60).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=cri.container_config(busybox, ["sleep", "600"])), timeout=60).container_id
    assert cri.code_of(lambda: rs.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["true"]),
                                           timeout=30)) == grpc.StatusCode.FAILED_PRECONDITION
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    resp = rs.ExecSync(api_pb2.ExecSyncRequest(
        container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 4"]), timeout=30)
    assert (resp.stdout, resp.stderr, resp.exit_code) == (b"out\n", b"err\n", 4)
    assert cri.code_of(lambda: rs.ExecSync(api_pb2.ExecSyncRequest(
        container_id=cid, cmd=["sleep", "30"], timeout=1), timeout=60)) == grpc.StatusCode.DEADLINE_EXCEEDED
    ps = rs.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["ps"]), timeout=30).stdout.decode()
    assert "sleep 30" not in ps
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    exec_dir = daemon.state / "exec"
    assert not exec_dir.exists() or not any(exec_dir.iterdir())


def test_stats_and_oom(daemon: DaemonProcess, busybox: str) -> None:
    rs = daemon.runtime()
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True)), timeout=60).pod_sandbox_id
    # Busy: burns CPU and writes 1 MiB into its writable layer.
    busy = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=cri.container_config(
        busybox, ["sh", "-c", "dd if=/dev/zero of=/blob bs=1024 count=1024; while true; do :; done"], name="busy")),
        timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=busy), timeout=60)
    first = rs.ContainerStats(api_pb2.ContainerStatsRequest(container_id=busy), timeout=30).stats
    time.sleep(1)
    second = rs.ContainerStats(api_pb2.ContainerStatsRequest(container_id=busy), timeout=30).stats
    assert second.attributes.id == busy and second.attributes.metadata.name == "busy"
    assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value > 0
    assert second.cpu.usage_nano_cores.value > 0
    assert 0 < second.memory.working_set_bytes.value <= second.memory.usage_bytes.value
    assert second.writable_layer.used_bytes.value >= 1 << 20
    listed = rs.ListContainerStats(api_pb2.ListContainerStatsRequest(
        filter=api_pb2.ContainerStatsFilter(pod_sandbox_id=sandbox_id)), timeout=30).stats
    assert [s.attributes.id for s in listed] == [busy]
    pod = rs.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id), timeout=30).stats
    assert pod.attributes.id == sandbox_id and pod.linux.cpu.usage_core_nano_seconds.value > 0
    assert [c.attributes.id for c in pod.linux.containers] == [busy]

    # OOM: a 16 MiB limit and a shell that wants 64 MiB.
    linux = api_pb2.LinuxContainerConfig(resources=api_pb2.LinuxContainerResources(
        memory_limit_in_bytes=16 << 20, memory_swap_limit_in_bytes=16 << 20))
    hog = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=cri.container_config(
        busybox, ["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}"], name="hog",
        linux=linux)), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=hog), timeout=60)
    cri.wait_for(lambda: cri.container_state(rs, hog).state == api_pb2.CONTAINER_EXITED, what="OOM kill")
    status = cri.container_state(rs, hog)
    assert (status.reason, status.exit_code) == ("OOMKilled", 137)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)


def test_runtime_handlers_from_config(daemon_factory: DaemonFactory, registry: Registry) -> None:
    d = daemon_factory(config_yaml="runtime-handlers:\n  alt: /usr/sbin/runc\n")
    ref = cri.push_busybox(registry)
    cri.pull(d.images(), ref)
    rs = d.runtime()
    assert cri.code_of(lambda: rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True), runtime_handler="nope"), timeout=30)) == grpc.StatusCode.NOT_FOUND
    sandbox_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(host_network=True), runtime_handler="alt"), timeout=60).pod_sandbox_id
    assert rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                               timeout=10).status.runtime_handler == "alt"
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=cri.container_config(ref, ["sleep", "60"])), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    runtime = json.loads(ctr(d, "containers", "info", cid))["Runtime"]
    options = oci_pb2.Options()
    options.ParseFromString(base64.b64decode(runtime["Options"]["value"]))
    assert (runtime["Name"], options.binary_name) == ("io.containerd.runc.v2", "/usr/sbin/runc")
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
