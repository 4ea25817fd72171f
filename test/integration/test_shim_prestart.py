"""The pod's runc v2 shim started during RunPodSandbox (pkg.runtime.shim_prestart): up once the pod is, used by
the pod's first container (the same process), in containerd's cgroups, gone when the pod is removed (also a
pod that never got a container), reaped at start for pods gone while no narwhald ran, and by cleanup.  Also
CreateContainer's snapshot, prepared before the record or beside it (one containerd round trip less), held as a GC
root."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cri_api.v1 import api_pb2, api_pb2_grpc
from lib import cri
from lib.daemon import DaemonProcess, containerd_calls
from lib.images import ctr
from lib.leaks import leftovers
from lib.registry import Registry
from lib.wait import wait_for

from pkg.procs import live_pids

# A shim per pod (containerd's CRI's shape), so each pod's group is its sandbox ID; the default groups
# (pods-per-shim: 10) are test_grouped_pods_share_the_prestarted_shim's.
ONE_POD_PER_SHIM = "pods-per-shim: 1\n"


def prestarted(daemon: DaemonProcess, group: str) -> int | None:
    """The pid of the shim narwhald started for ``group`` (its -id is the group, never a container's)."""
    base = str(daemon.base).encode()

    def match(args: list[bytes]) -> bool:  # the shim itself, not its short-lived `start` command
        return (args[0].endswith(b"containerd-shim-runc-v2") and base in b" ".join(args) and args[-1] != b"start"
                and b"-id" in args and args[args.index(b"-id") + 1] == group.encode())

    found = live_pids(match)
    return found[0] if found else None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def socket_of(pid: int) -> Path:
    """The shim's listening socket, from the address file in its working directory."""
    address = (Path(os.readlink(f"/proc/{pid}/cwd")) / "address").read_text().strip()
    return Path(address.removeprefix("unix://"))




def run_pod(rs: api_pb2_grpc.RuntimeServiceStub, tmp_path: Path, name: str) -> str:
    config = cri.sandbox_config(name=name, log_dir=tmp_path / name)
    return str(rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id)


def start_container(rs: api_pb2_grpc.RuntimeServiceStub, tmp_path: Path, name: str, sid: str, ref: str) -> str:
    config = cri.sandbox_config(name=name, log_dir=tmp_path / name)
    cid = str(rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=sid, config=cri.container_config(ref, ["sleep", "1000"], name="c", log_path="c.log"),
        sandbox_config=config), timeout=120).container_id)
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
    return cid


def remove_pod(rs: api_pb2_grpc.RuntimeServiceStub, sid: str) -> None:
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)


def wait_shim(daemon: DaemonProcess, group: str) -> int:
    """The pre-started shim's pid, once it is up and its address is written (the process exists a moment
    before: found that early, socket_of raced it)."""

    def up() -> bool:
        pid = prestarted(daemon, group)
        try:
            return pid is not None and (Path(os.readlink(f"/proc/{pid}/cwd")) / "address").exists()
        except OSError:
            return False

    wait_for(up, 60, f"the pre-started shim of {group[:12]}")
    pid = prestarted(daemon, group)
    assert pid is not None
    return pid


def test_pod_shim_is_prestarted_used_and_reaped(daemon_factory: Callable[..., DaemonProcess], registry: Registry,
                                                tmp_path: Path) -> None:
    daemon = daemon_factory(config_yaml=ONE_POD_PER_SHIM)
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()

    sid = run_pod(rs, tmp_path, "used")
    pid = wait_shim(daemon, sid)
    sock = socket_of(pid)
    # Where containerd's own shims are: its cgroups (narwhald does not keep it in a session of its own).
    assert Path(f"/proc/{pid}/cgroup").read_text() == Path(f"/proc/{daemon.containerd_pid}/cgroup").read_text()
    assert os.getsid(pid) != os.getsid(daemon.proc.pid if daemon.proc else 0)
    before = containerd_calls(daemon)
    cid = start_container(rs, tmp_path, "used", sid, ref)
    after = containerd_calls(daemon)
    # CreateContainer + StartContainer: the record is made once with its spec (no Update), and the first start
    # uses the mounts Prepare returned (no Snapshots.Mounts).
    made = {call: after[call] - before.get(call, 0) for call in after if after[call] != before.get(call, 0)}
    assert made.get("Containers/Create") == 1 and made.get("Snapshots/Prepare") == 1, made
    assert "Containers/Update" not in made and "Snapshots/Mounts" not in made, made
    # CreateContainer prepares the snapshot before (or beside) the record: a GC root until removed.
    assert "containerd.io/gc.root" in ctr(daemon, "snapshots", "info", cid)
    info = ctr(daemon, "tasks", "ls")
    assert cid in info
    # The container runs under the very shim narwhald started: its init process is the shim's child.
    task_pid = int(next(line.split()[1] for line in info.splitlines() if line.startswith(cid)))
    assert Path(f"/proc/{task_pid}/stat").read_text().rsplit(")", 1)[-1].split()[1] == str(pid)

    idle = run_pod(rs, tmp_path, "idle")  # never gets a container
    idle_pid = wait_shim(daemon, idle)
    idle_sock = socket_of(idle_pid)
    remove_pod(rs, idle)
    assert not idle_sock.exists()
    wait_for(lambda: not alive(idle_pid), 30, "the idle shim killed")
    assert not (daemon.state / "shims" / idle).exists()

    remove_pod(rs, sid)
    wait_for(lambda: not alive(pid), 30, "the used shim gone with its pod")
    assert not sock.exists() and not (daemon.state / "shims" / sid).exists()
    assert leftovers(daemon) == {}


def test_restart_keeps_live_pods_shims_and_reaps_gone_ones(daemon_factory: Callable[..., DaemonProcess],
                                                           registry: Registry, tmp_path: Path) -> None:
    daemon = daemon_factory(config_yaml=ONE_POD_PER_SHIM)
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    kept, gone = run_pod(rs, tmp_path, "kept"), run_pod(rs, tmp_path, "gone")
    kept_pid, gone_pid = wait_shim(daemon, kept), wait_shim(daemon, gone)
    gone_sock = socket_of(gone_pid)

    daemon.kill9()
    ctr(daemon, "containers", "rm", gone)  # the pod vanished while no narwhald ran
    daemon.start()
    rs = daemon.runtime()
    assert not gone_sock.exists()  # reaped at start, before narwhald is ready
    wait_for(lambda: not alive(gone_pid), 30, "the gone pod's shim killed")  # a loaded host may take a while
    assert not (daemon.state / "shims" / gone).exists()
    assert alive(kept_pid)
    start_container(rs, tmp_path, "kept", kept, ref)
    assert prestarted(daemon, kept) == kept_pid  # the surviving shim is used

    remove_pod(rs, kept)
    wait_for(lambda: not alive(kept_pid), 30, "the used shim gone with its pod")

    # narwhald and its containerd killed under a pod with no container: its idle shim is no reason for cleanup
    # to refuse (it runs no container), and cleanup kills it.
    third = run_pod(rs, tmp_path, "third")
    third_pid = wait_shim(daemon, third)
    third_sock = socket_of(third_pid)
    containerd = daemon.containerd_pid
    daemon.kill9()
    os.kill(containerd, 9)
    wait_for(lambda: not alive(containerd), 30, "containerd gone")
    done = daemon.cleanup()
    assert done.returncode == 0, done.stderr
    assert not third_sock.exists()
    wait_for(lambda: not alive(third_pid), 30, "cleanup killed the idle shim")
    assert not (daemon.state / "shims" / third).exists()


def test_grouped_pods_share_the_prestarted_shim(daemon_factory: Callable[..., DaemonProcess], registry: Registry,
                                                tmp_path: Path) -> None:
    """The default (pods-per-shim: 10): two pods form one group, whose one pre-started shim runs both pods'
    containers, outlives the first pod's removal and goes with the last."""
    daemon = daemon_factory()
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    first, second = run_pod(rs, tmp_path, "first"), run_pod(rs, tmp_path, "second")
    shims = daemon.state / "shims"
    wait_for(lambda: shims.is_dir() and len(list(shims.iterdir())) == 1, 60, "one shim directory for both pods")
    (group,) = [p.name for p in shims.iterdir()]
    assert group not in (first, second)
    pid = wait_shim(daemon, group)
    cids = [start_container(rs, tmp_path, name, sid, ref) for name, sid in (("first", first), ("second", second))]
    listed = ctr(daemon, "tasks", "ls").splitlines()
    for cid in cids:
        task_pid = int(next(line.split()[1] for line in listed if line.startswith(cid)))
        assert Path(f"/proc/{task_pid}/stat").read_text().rsplit(")", 1)[-1].split()[1] == str(pid)
    remove_pod(rs, first)
    assert alive(pid)  # the second pod's container still runs in it
    remove_pod(rs, second)
    wait_for(lambda: not alive(pid), 30, "the group's shim gone with its last pod")
    wait_for(lambda: not (shims / group).exists(), 30, "the group's shim directory removed")
    assert leftovers(daemon) == {}
