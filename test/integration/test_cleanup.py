"""``narwhald cleanup`` on a real instance: it refuses while narwhald or its containers run, ``--force``
stops both, and afterwards nothing of the instance is on the host (chains, bridges, rules, cgroups,
mounts, dirs, processes) while a second instance running beside it keeps all of its own."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.daemon import DaemonProcess, free_port, start_daemon
from lib.docker import BUSYBOX, DockerDaemon, eventually, mirror_config
from lib.docker_networks import records
from lib.images import push
from lib.leaks import host_leftovers
from lib.registry import Registry


@pytest.fixture
def pair(registry: Registry) -> Iterator[tuple[DockerDaemon, DockerDaemon]]:
    push(registry.host, "library/busybox")
    started: list[DaemonProcess] = []
    try:
        for _ in range(2):
            started.append(start_daemon(mirror_config(registry.host)))
        yield DockerDaemon(started[0]), DockerDaemon(started[1])
    finally:
        for d in started:
            d.destroy()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def forward_chain_exists(d: DaemonProcess) -> bool:
    """The instance's FORWARD accepts of its networks (pkg/cni/netrules.py) are in place."""
    import hashlib
    import subprocess

    instance = hashlib.sha256(str(d.root.resolve()).encode()).hexdigest()[:8]
    return subprocess.run(["iptables", "-w", "-S", f"NW-FWD-{instance}"], capture_output=True).returncode == 0


def test_cleanup_refuses_while_in_use_then_force_leaves_nothing(pair: tuple[DockerDaemon, DockerDaemon]) -> None:
    a, b = pair
    for dd in pair:
        dd.docker("pull", BUSYBOX)
    a.docker("network", "create", "cleanup-net")
    on_net = a.out("run", "-d", "--network", "cleanup-net", "-p", f"127.0.0.1:{free_port()}:80",
                   BUSYBOX, "sleep", "1000")
    on_bridge = a.out("run", "-d", "-p", f"127.0.0.1:{free_port()}:80", BUSYBOX, "sleep", "1000")
    b.out("run", "-d", BUSYBOX, "sleep", "1000")
    pids = [int(a.inspect(c)["State"]["Pid"]) for c in (on_net, on_bridge)]
    bridges = tuple(str(r["bridge"]) for r in records(a.daemon.root) if r.get("name") == "cleanup-net")
    assert bridges and all(Path("/sys/class/net", br).exists() for br in bridges)
    assert host_leftovers(a.daemon, bridges).keys() >= {"chains", "bridges", "rules", "cgroups", "dirs"}
    containerd = a.daemon.containerd_pid

    # narwhald running: refused, nothing touched.
    refused = a.daemon.cleanup()
    assert refused.returncode != 0
    assert f"narwhald (pid {a.daemon.proc.pid}) is running" in refused.stderr  # type: ignore[union-attr]
    assert a.daemon.proc is not None and a.daemon.proc.poll() is None

    # narwhald stopped, containers still running (containerd outlives narwhald): refused.
    assert a.daemon.stop() == 0
    refused = a.daemon.cleanup()
    assert refused.returncode != 0 and "2 container(s) of this instance still run" in refused.stderr, refused.stderr
    assert all(alive(p) for p in pids) and alive(containerd)

    done = a.daemon.cleanup("--force", "--remove-dirs")
    assert done.returncode == 0, done.stderr
    assert f"removed bridge {bridges[0]}" in done.stdout
    assert not any(alive(p) for p in [*pids, containerd])
    assert eventually(lambda: not processes_of(a.daemon))
    assert host_leftovers(a.daemon, bridges) == {}

    # The other instance keeps its chain, bridge and running container.
    assert forward_chain_exists(b.daemon)
    assert host_leftovers(b.daemon).get("bridges")
    assert b.out("ps", "-q")


def test_cleanup_of_a_stopped_instance_without_containers(daemon: DaemonProcess) -> None:
    """The common case (package purge): narwhald stopped, nothing running; containerd is stopped too."""
    containerd = daemon.containerd_pid
    assert daemon.stop() == 0
    done = daemon.cleanup()
    assert done.returncode == 0, done.stderr
    assert eventually(lambda: not alive(containerd), timeout=30)
    assert daemon.root.exists() and daemon.state.exists()  # without --remove-dirs the data stays
    assert not daemon.cri_socket.exists() and not daemon.docker_socket.exists()
    assert host_leftovers(daemon).keys() <= {"dirs"}
    assert os.listdir(daemon.base / "net.d") == []  # the default conflist it wrote is gone too


def processes_of(d: DaemonProcess) -> list[str]:
    """Live processes whose command line names the instance's dirs: narwhald, containerd, shims, loggers."""
    base = str(d.base).encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and base in (proc / "cmdline").read_bytes() and alive(int(proc.name)):
                found.append(proc.name)
        except OSError:
            continue
    return found


def test_cleanup_after_a_crash_of_narwhald_and_containerd(daemon: DaemonProcess, registry: Registry) -> None:
    """narwhald and its containerd killed -9 under a running pod with a hostPort: the shims still hold the
    containers.  Cleanup refuses; --force restarts containerd to kill them, then removes everything."""
    from cri_api.v1 import api_pb2
    from lib import cri

    image = cri.pull(daemon.images(), cri.push_busybox(registry))
    rs = daemon.runtime()
    config = cri.sandbox_config(port_mappings=[api_pb2.PortMapping(
        protocol=api_pb2.TCP, container_port=80, host_port=free_port(), host_ip="127.0.0.1")])
    pod = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=cri.container_config(image, ["sleep", "1000"]), sandbox_config=config),
        timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    assert host_leftovers(daemon).keys() >= {"chains", "rules", "bridges"}
    containerd = daemon.containerd_pid
    daemon.kill9()
    os.kill(containerd, 9)
    assert eventually(lambda: not alive(containerd))
    assert processes_of(daemon)  # the shims (and the loggers)

    refused = daemon.cleanup()
    assert refused.returncode != 0 and "while its containerd is down" in refused.stderr, refused.stderr
    done = daemon.cleanup("--force", "--remove-dirs")
    assert done.returncode == 0, done.stderr
    assert eventually(lambda: not processes_of(daemon))  # containerd too, which cleanup had to start again
    assert host_leftovers(daemon) == {}


def test_cleanup_after_narwhald_alone_was_killed(daemon: DaemonProcess) -> None:
    """narwhald killed -9, its containerd left running without a pid file naming it (narwhald died between
    starting containerd and recording its pid, or the file was lost): cleanup finds it by its config path
    and stops it, as it does with the file."""
    containerd = daemon.containerd_pid
    daemon.kill9()
    (daemon.state / "containerd" / "containerd.pid").unlink()
    assert alive(containerd)
    done = daemon.cleanup()
    assert done.returncode == 0, done.stderr
    assert "stopped containerd" in done.stdout
    assert eventually(lambda: not alive(containerd), timeout=30)
    assert eventually(lambda: not processes_of(daemon))
    assert host_leftovers(daemon).keys() <= {"dirs"}
