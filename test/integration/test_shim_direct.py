"""A task's Start and its exec processes straight to the task's runc v2 shim over ttrpc (pkg.containerd.shims,
issue 21), with the real shim, containerd and CLIs: every byte and exit code of CRI ExecSyncs and `docker
exec`s, no Start or exec call through containerd's task service, the fall back to containerd when the task's
bundle has no address, a container restarted or whose shim was killed (the connection to the old shim dropped,
a new one made), and ``shim-direct: false``."""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess, containerd_calls
from lib.docker import checked_cli, eventually, mirrored_daemon
from lib.leaks import leftovers
from lib.registry import Registry
from lib.wait import wait_for

SCRIPT = "printf 'out-%s' \"$0\"; printf 'err-%s' \"$0\" >&2; exit $(($0 % 7))"


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    yield from mirrored_daemon(registry, [])


def exec_calls(d: DaemonProcess) -> dict[str, float]:
    calls = containerd_calls(d)
    names = ("shim/Exec", "shim/Start", "shim/Delete", "Tasks/Exec", "Tasks/Start", "Tasks/DeleteProcess")
    return {name: calls.get(name, 0.0) for name in names}


def grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def run_pod(d: DaemonProcess, registry: Registry, tmp_path: Path) -> tuple[str, str]:
    rs = d.runtime()
    ref = cri.pull(d.images(), cri.push_busybox(registry))
    config = cri.sandbox_config(log_dir=tmp_path)
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sid, config=cri.container_config(ref, ["sleep", "1000"], log_path="c.log"),
        sandbox_config=config), timeout=120).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
    return sid, cid


def exec_sync_checked(d: DaemonProcess, cid: str, i: int) -> None:
    resp = d.runtime().ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", SCRIPT, str(i)],
                                                      timeout=30), timeout=60)
    assert (resp.stdout, resp.stderr, resp.exit_code) == (f"out-{i}".encode(), f"err-{i}".encode(), i % 7)


def execs_through_containerd(d: DaemonProcess, cid: str) -> dict[str, float]:
    """Five ExecSyncs, checked, each of whose calls went through containerd; the calls counted before them."""
    before = exec_calls(d)
    for i in range(5):
        exec_sync_checked(d, cid, i)
    wait_for(lambda: exec_calls(d)["Tasks/DeleteProcess"] - before["Tasks/DeleteProcess"] >= 5, 30,
             "the deletions through containerd")
    assert grew(before, exec_calls(d)) == {"Tasks/Exec": 5, "Tasks/Start": 5, "Tasks/DeleteProcess": 5}
    return before


def test_cri_execsyncs_go_to_the_shim_and_fall_back_to_containerd(daemon: DaemonProcess, registry: Registry,
                                                                  tmp_path: Path) -> None:
    started = exec_calls(daemon)
    sid, cid = run_pod(daemon, registry, tmp_path)
    try:
        before = exec_calls(daemon)
        assert before["Tasks/Start"] == started["Tasks/Start"]  # the container's task (and the pod's) too
        assert before["shim/Start"] > started["shim/Start"]
        for i in range(40):
            exec_sync_checked(daemon, cid, i)
        wait_for(lambda: exec_calls(daemon)["shim/Delete"] - before["shim/Delete"] >= 40, 30,
                 "the answered execs' deletions")
        assert grew(before, exec_calls(daemon)) == {"shim/Exec": 40, "shim/Start": 40, "shim/Delete": 40}

        # The bundle's address moved away: the same execs go through containerd (which holds its own connection).
        [address] = (daemon.state / "containerd" / "io.containerd.runtime.v2.task").glob(f"*/{cid}/address")
        aside = address.with_name("address.aside")
        os.rename(address, aside)
        try:
            execs_through_containerd(daemon, cid)
        finally:
            os.rename(aside, address)
        exec_sync_checked(daemon, cid, 3)
    finally:
        daemon.runtime().StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
        daemon.runtime().RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)


def shim_of(init_pid: int) -> int:
    return int(Path(f"/proc/{init_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_docker_exec_survives_a_restart_and_a_killed_shim(daemon: DaemonProcess) -> None:
    docker = checked_cli(daemon)
    name = "viashim"
    docker("run", "-d", "--name", name, "busybox", "sleep", "1000")
    try:
        before = exec_calls(daemon)
        for i in range(10):
            proc = docker_exec(daemon, name, i)
            assert (proc.stdout, proc.stderr, proc.returncode) == (f"out-{i}".encode(), f"err-{i}".encode(), i % 7)
        piped = subprocess.run(["docker", "exec", "-i", name, "cat"], env=daemon.docker_env(),
                               input=b"in\x00put" * 9000, capture_output=True, timeout=120)
        assert (piped.stdout, piped.returncode) == (b"in\x00put" * 9000, 0)
        docker("restart", "-t", "0", name)  # a new task (and shim) at the same address: a new connection
        assert docker("exec", name, "echo", "after restart").stdout == b"after restart\n"

        pid = int(docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
        os.kill(shim_of(pid), signal.SIGKILL)
        assert eventually(lambda: docker("inspect", "-f", "{{.State.Running}}", name).stdout == b"false\n")
        refused = docker_exec(daemon, name, 1)
        assert refused.returncode != 0 and b"is not running" in refused.stderr, refused.stderr
        docker("start", name)
        assert docker("exec", name, "echo", "after kill").stdout == b"after kill\n"
        after = exec_calls(daemon)
        assert (after["Tasks/Exec"], after["Tasks/Start"]) == (before["Tasks/Exec"], before["Tasks/Start"])
        assert after["shim/Exec"] - before["shim/Exec"] == 13
    finally:
        docker("rm", "-f", name)
    assert leftovers(daemon) == {}


def docker_exec(d: DaemonProcess, name: str, i: int) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", "exec", name, "sh", "-c", SCRIPT, str(i)], env=d.docker_env(),
                          capture_output=True, timeout=120)


def test_shim_direct_false_goes_through_containerd(registry: Registry, tmp_path: Path) -> None:
    gen = mirrored_daemon(registry, ["--shim-direct", "false"])
    d = next(gen)
    try:
        sid, cid = run_pod(d, registry, tmp_path)
        before = execs_through_containerd(d, cid)
        assert before["Tasks/Start"] >= 1 and before["shim/Start"] == 0  # the pod's and container's tasks too
        d.runtime().StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
        d.runtime().RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    finally:
        gen.close()
