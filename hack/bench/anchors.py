"""The systems under test, each set up by the harness and torn down afterwards.

* ``narwhal``     narwhald (its own containerd), CRI and Docker sockets, info logging
* ``containerd``  a second containerd 1.6 with its built-in CRI plugin: private dirs, the same CNI
                  plugin chain as narwhald's default network, the same local registry, a pause
                  image built locally (hack/mkimage.py pause)
* ``dockerd``     Debian's dockerd (docker.io) with its own data-root, exec-root, socket, its own
                  supervised containerd and a bridge the harness creates; no iptables changes

All three pull from the one local registry: the CRI anchors by its ``127.0.0.1:PORT`` name, the
Docker ones through a ``docker.io`` mirror, so ``busybox`` means the offline busybox everywhere.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lib import cri
from lib.cni_host import HostGuard, InstanceNetwork
from lib.daemon import DaemonProcess, mounts_under, start_daemon
from lib.registry import Registry

DOCKER_CLI = "/usr/local/bin/docker"  # the same client (28.2) for both Docker daemons


def _run_tag(base: Path) -> tuple[str, int]:
    """Per-run names and subnet numbers from the anchor's temp dir: two runs (say, the smoke test and a
    `make bench`) never share a bridge, a chain or a subnet (10.124.0.0/16; narwhald uses 10.123.0.0/16)."""
    digest = hashlib.sha256(base.name.encode()).hexdigest()
    return digest[:6], int(digest[6:10], 16) % 250


@dataclass
class System:
    """One running system: where to reach it and which processes count as "the daemon"."""

    name: str
    base: Path
    cri_socket: Path | None = None
    docker_host: str | None = None
    metrics_url: str | None = None  # narwhald's Prometheus endpoint (hack/bench/breakdown.py)
    daemon_pids: Callable[[], dict[str, int]] = field(default=lambda: {})

    def docker_env(self) -> dict[str, str]:
        assert self.docker_host is not None
        return {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_CLI_HINTS": "false"}


def _log_service(state: Path) -> dict[str, int]:
    """narwhald's log service (``log-service: true``): a daemon of the node, its growth counted as narwhald's."""
    try:
        return {"log-service": int((state / "logs" / "service.pid").read_text())}
    except (OSError, ValueError):
        return {}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not create {path}")
        time.sleep(0.05)


def _kill_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _kill_processes_under(base: Path) -> None:
    """Shims, containers' runc leftovers, a supervised containerd: whatever names ``base`` on its command
    line (the shims run in sessions of their own, so killing the daemon's group misses them)."""
    needle = os.fsencode(str(base))
    for _ in range(2):
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if needle in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(0.5)


def _unmount_under(base: Path) -> None:
    for mount in reversed(mounts_under(base)):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _dirs_under(top: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, _ in os.walk(top):  # os.walk skips what vanishes under it; Path.rglob raises
        found += [Path(root, d) for d in dirs]
    return found


def _cgroups_remove(name: str) -> None:
    """Remove the (empty) cgroup trees a runtime made under ``/<name>`` in every hierarchy, deepest first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        # /k8s.io is shared with any other containerd CRI on the host (another bench run): a cgroup it removes
        # while we walk is gone already, which is what we wanted.
        for path in sorted(_dirs_under(top), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


@contextlib.contextmanager
def narwhal(registry: Registry, extra_config: str = "") -> Iterator[System]:
    """narwhald at info level (the tests' default is debug, which costs time per call); ``extra_config``: more
    YAML lines (a lever under test, e.g. ``pods-per-shim: 8``)."""
    config = f"registry:\n  mirrors:\n    docker.io: [\"http://{registry.host}\"]\n{extra_config}"
    daemon: DaemonProcess = start_daemon(config_yaml=config, extra_args=["--log-level", "info"])
    try:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        yield System(
            name="narwhal", base=daemon.base, cri_socket=daemon.cri_socket,
            docker_host=f"unix://{daemon.docker_socket}", metrics_url=f"http://127.0.0.1:{daemon.metrics_port}/metrics",
            daemon_pids=lambda: {"narwhald": pid, "containerd": daemon.containerd_pid, **_log_service(daemon.state)},
        )
    finally:
        network = InstanceNetwork.of(daemon.root, daemon.base / "net.d")
        daemon.destroy()
        network.remove()


def _ctr_conflist(base: Path, bridge: str, subnet: str, admin_chain: str) -> dict[str, object]:
    """narwhald's default chain (pkg.cni.defaults), on a bridge and subnet of the anchor's own."""
    return {
        "cniVersion": "1.0.0", "name": f"nwbench-{bridge}", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(base / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": admin_chain},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ]}


@contextlib.contextmanager
def containerd_cri(registry: Registry, mirrored_hosts: tuple[str, ...] = ()) -> Iterator[System]:
    """containerd 1.6 with its CRI plugin: private root/state, a mirror for the local registry (and for
    ``mirrored_hosts``, e.g. the public registries critest pulls from, served by the same registry)."""
    base = Path(tempfile.mkdtemp(prefix="nwb-ctr-", dir="/tmp"))
    conf_dir = base / "net.d"
    conf_dir.mkdir()
    tag, octet = _run_tag(base)
    bridge, admin_chain = f"nwb-c-{tag}", f"NWB-ADMIN-{tag}"
    (conf_dir / "10-bench.conflist").write_text(
        json.dumps(_ctr_conflist(base, bridge, f"10.124.{octet}.0/24", admin_chain)))
    sock = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry.host}/library/pause:latest"
  restrict_oom_score_adj = true  # root here lacks CAP_SYS_RESOURCE, as narwhald clamps too
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry.host}"]
    endpoint = ["http://{registry.host}"]
""" + "".join(f"""  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]
    endpoint = ["http://{registry.host}"]
""" for host in mirrored_hosts))
    log = base / "containerd.log"
    with open(log, "wb") as logfile:
        proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=subprocess.DEVNULL,
                                stderr=logfile, start_new_session=True)
    try:
        _wait_socket(sock, proc, "containerd (CRI anchor)", log)
        yield System(name="containerd", base=base, cri_socket=sock,
                     daemon_pids=lambda: {"containerd": proc.pid})
    finally:
        _kill_group(proc)
        _kill_processes_under(base)
        _unmount_under(base)
        HostGuard(bridges=[bridge], admin_chains=[admin_chain]).restore_instance()
        _cgroups_remove("k8s.io")  # containerd's CRI puts pods without a cgroup parent under /<namespace>
        shutil.rmtree(base, ignore_errors=True)


def dockerd_available() -> bool:
    return shutil.which("dockerd") is not None


def install_dockerd() -> None:
    """Debian's docker.io, on demand (services are not started: the harness runs its own dockerd)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"],
                   check=True, env=env, capture_output=True)


@contextlib.contextmanager
def dockerd(registry: Registry) -> Iterator[System]:
    """dockerd with its own data-root, exec-root and socket; it supervises a containerd of its own under
    exec-root.  Networking: a bridge the harness creates (``--bridge``), no iptables changes, so it neither
    touches the host's FORWARD policy nor narwhald's rules."""
    base = Path(tempfile.mkdtemp(prefix="nwb-dkr-", dir="/tmp"))
    sock = base / "docker.sock"
    tag, octet = _run_tag(base)
    bridge = f"nwb-d-{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True, capture_output=True)
    subprocess.run(["ip", "addr", "add", f"10.124.{octet}.1/24", "dev", bridge], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True, capture_output=True)
    forward = HostGuard.take().forward_policy
    log = base / "dockerd.log"
    cmd = [
        "dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
        "-H", f"unix://{sock}", "--pidfile", str(base / "dockerd.pid"),
        "--bridge", bridge, "--iptables=false", "--ip-masq=false", "--ip-forward=false",
        "--registry-mirror", f"http://{registry.host}", "--insecure-registry", registry.host,
        "--storage-driver", "overlay2", "--log-level", "warn", "--cgroup-parent", f"/nwbench-dkr-{base.name[-6:]}",
        "--config-file", str(base / "daemon.json"),
    ]
    (base / "daemon.json").write_text("{}")
    with open(log, "wb") as logfile:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logfile, start_new_session=True)
    try:
        _wait_socket(sock, proc, "dockerd", log)
        env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
        cri.wait_for(lambda: subprocess.run([DOCKER_CLI, "version"], env=env, capture_output=True).returncode == 0,
                     60, "dockerd answering")

        def pids() -> dict[str, int]:
            found = {"dockerd": proc.pid}
            ctr_pid = base / "exec" / "containerd" / "containerd.pid"
            with contextlib.suppress(OSError, ValueError):
                found["containerd"] = int(ctr_pid.read_text())
            return found

        yield System(name="dockerd", base=base, docker_host=f"unix://{sock}", daemon_pids=pids)
    finally:
        _kill_group(proc, timeout=60)
        _kill_processes_under(base)
        _unmount_under(base)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
        subprocess.run(["iptables", "-w", "-P", "FORWARD", forward], check=False, capture_output=True)
        _cgroups_remove(f"nwbench-dkr-{base.name[-6:]}")
        shutil.rmtree(base, ignore_errors=True)
