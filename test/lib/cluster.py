"""A multi-node test bed: N narwhald nodes on one machine, each in its own network namespace.

Moby tests Swarm with several dockerd on one host; here every node is a real narwhald with its own
root, state, sockets, containerd and CNI bridge, running inside its own network namespace
(``ip netns add``) with its own address on a private /24 (``10.213.<x>.0/24``): a veth pair joins the
namespace (``eth0``, ``10.213.<x>.<10+i>``) to a bridge the bed creates on the host (``10.213.<x>.1``).
Nodes reach each other (etcd peers, the :2377 join port) over that bridge and nothing else; the docker
CLI and the tests talk to each node through its unix sockets, which are not namespaced.

narwhald is started with ``setns(CLONE_NEWNET)`` only (test/lib/nsexec.py, what ``nsenter --net`` does),
not ``ip netns exec``: the latter also unshares the mount namespace, which would hide the node's
mounts (container rootfs, pinned netns, secrets tmpfs) from ``leftovers()`` and from the teardown.

The bed's registry (docker.io's mirror for every node, busybox pushed) listens on the bridge address,
so image pulls inside the namespaces stay on the bridge too.  Teardown leaves the swarm on every
node, removes containers, checks ``leftovers()`` per node, destroys the daemons (``narwhald cleanup``
inside the namespace), then deletes the namespaces, veths, bridge and the one FORWARD rule it added
(only when br_netfilter sends bridged frames through iptables), and reports what is still there.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib import nsexec
from lib.daemon import NARWHALD, DaemonProcess
from lib.docker import DOCKER, mirror_config
from lib.images import push
from lib.leaks import host_leftovers, leftovers
from lib.registry import Registry, start_registry

SUBNET = "10.213"
NODE_START_TIMEOUT = 120.0  # three daemons and their containerd start at once on a loaded 2-core machine


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Node:
    """One narwhald of the bed: its namespace, its address on the bed's bridge, its daemon."""

    index: int
    netns: str
    address: str
    veth: str  # the host end of its cable
    daemon: DaemonProcess

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against this node's socket; ``check`` raises with stderr on failure."""
        proc = subprocess.run([DOCKER, *args], env=self.daemon.docker_env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"node{self.index}: docker {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stderr}")
        return proc

    def out(self, *args: str) -> str:
        return self.docker(*args).stdout.strip()

    def info(self) -> dict[str, Any]:
        return json.loads(self.out("info", "--format", "{{json .Swarm}}"))  # type: ignore[no-any-return]

    def run_in(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command inside this node's network namespace."""
        result = subprocess.run(nsexec.argv(self.netns_path, *cmd), capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"node{self.index}: {' '.join(cmd)}: {result.stderr}")
        return result

    def kill9(self) -> None:
        """kill -9 of this node's narwhald only (its containerd, etcd and containers keep running)."""
        self.daemon.kill9()

    def stop_etcd(self) -> None:
        """SIGKILL this node's etcd member, as a machine losing it would (narwhald restarts it when alive)."""
        pid_file = self.daemon.state / "docker" / "swarm" / "etcd.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

    def link(self, up: bool) -> None:
        """Cut (or restore) this node's cable: its veth's host end down/up."""
        ip("link", "set", self.veth, "up" if up else "down")



@dataclass
class Bed:
    """The bridge, the namespaces and the nodes; ``managers``/``workers`` once a swarm is formed."""

    slot: int
    bridge: str
    registry: Registry
    nodes: list[Node] = field(default_factory=list)
    forward_rule: list[str] = field(default_factory=list)
    manager_count: int = 0

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{self.slot}.1"

    @property
    def managers(self) -> list[Node]:
        return self.nodes[:self.manager_count]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[self.manager_count:]

    def node_by_id(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.daemon.proc is not None and node.daemon.proc.poll() is None and \
                    node.info().get("NodeID") == node_id:
                return node
        raise KeyError(node_id)


def _claim_slot() -> tuple[int, str]:
    """A free 10.213.<x>.0/24: creating the bridge ``nwcb<x>`` is the atomic claim (another bed, another
    worker or another helper's run fails on the same name and tries the next)."""
    start = os.getpid() % 200
    for offset in range(200):
        slot = 20 + (start + offset) % 200
        bridge = f"nwcb{slot}"
        if ip("link", "add", bridge, "type", "bridge", check=False).returncode == 0:
            return slot, bridge
    raise RuntimeError("no free 10.213.x.0/24 slot for the cluster test bed")


def _bridged_frames_filtered() -> bool:
    try:
        return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
    except OSError:
        return False


def _add_node(bed: Bed, index: int, extra_args: list[str]) -> Node:
    netns = f"nwc{bed.slot}n{index}"
    veth, peer = f"nwc{bed.slot}v{index}", f"nwc{bed.slot}p{index}"
    address = f"{SUBNET}.{bed.slot}.{10 + index}"
    ip("netns", "add", netns)
    ip("link", "add", veth, "type", "veth", "peer", "name", peer)
    ip("link", "set", veth, "master", bed.bridge, "up")
    ip("link", "set", peer, "netns", netns)
    ip("-n", netns, "link", "set", peer, "name", "eth0")
    ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "route", "add", "default", "via", bed.gateway)
    base = Path(tempfile.mkdtemp(prefix=f"nwc{bed.slot}n{index}-", dir="/tmp"))
    conf_dir = base / "net.d"
    conf_dir.mkdir()
    cfg = base / "narwhal.yaml"
    cfg.write_text(mirror_config(bed.registry.host))
    metrics = 9300 + index
    args = ["--root", str(base / "root"), "--state", str(base / "state"),
            "--metrics-address", f"{address}:{metrics}", "--cni-conf-dir", str(conf_dir),
            "--log-level", "debug", "--config", str(cfg), *extra_args]
    daemon = DaemonProcess(base=base, args=args, metrics_port=metrics,
                           wrapper=nsexec.argv(Path("/run/netns") / netns))
    node = Node(index=index, netns=netns, address=address, veth=veth, daemon=daemon)
    bed.nodes.append(node)
    return node


def _start_all(nodes: list[Node]) -> None:
    """Start the daemons at once and wait for each (they are independent until they join)."""
    for node in nodes:
        d = node.daemon
        d.log_path.touch()
        with open(d.log_path, "ab") as logfile:
            d.proc = subprocess.Popen([*d.wrapper, str(NARWHALD), *d.args], stdout=logfile,
                                      stderr=logfile)
    deadline = time.monotonic() + NODE_START_TIMEOUT
    for node in nodes:
        d = node.daemon
        assert d.proc is not None
        while "narwhald ready" not in d.log():
            if d.proc.poll() is not None:
                raise RuntimeError(f"node{node.index}: narwhald exited with {d.proc.returncode}:\n{d.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node{node.index}: narwhald did not become ready:\n{d.log()[-4000:]}")
            time.sleep(0.1)


def start_bed(n: int, extra_args: list[str] | None = None) -> Bed:
    """Bridge, registry and ``n`` started nodes (not yet in a swarm).  On failure, torn down again."""
    slot, bridge = _claim_slot()
    registry: Registry | None = None
    bed: Bed | None = None
    try:
        ip("addr", "add", f"{SUBNET}.{slot}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        registry = start_registry(address=f"{SUBNET}.{slot}.1")
        bed = Bed(slot=slot, bridge=bridge, registry=registry)
        if _bridged_frames_filtered():  # br_netfilter: bridged frames meet the host's FORWARD policy
            bed.forward_rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
            subprocess.run(["iptables", "-I", *bed.forward_rule], check=True, capture_output=True)
        push(registry.host, "library/busybox")
        for index in range(n):
            _add_node(bed, index, extra_args or [])
        _start_all(bed.nodes)
        return bed
    except BaseException:
        if bed is not None:
            teardown(bed)
        else:
            if registry is not None:
                registry.stop()
            ip("link", "del", bridge, check=False)
        raise


def form_swarm(bed: Bed, managers: int) -> None:
    """``swarm init`` on node 0, then ``swarm join`` of the others (the first ``managers`` as managers)
    through the real docker CLI, with the tokens the first manager hands out."""
    first = bed.nodes[0]
    first.out("swarm", "init", "--advertise-addr", first.address)
    bed.manager_count = 1
    tokens = {role: first.out("swarm", "join-token", "-q", role) for role in ("manager", "worker")}
    for node in bed.nodes[1:]:
        role = "manager" if node.index < managers else "worker"
        joined = node.docker("swarm", "join", "--token", tokens[role], "--advertise-addr", node.address,
                             f"{first.address}:2377", check=False)
        if joined.returncode != 0:
            raise AssertionError(f"node{node.index}: swarm join as {role}: {joined.stderr}\n"
                                 f"--- manager log:\n{_tail(first)}\n--- joiner log:\n{_tail(node)}")
    bed.manager_count = managers


def _tail(node: Node, lines: int = 60) -> str:
    """The end of a node's narwhald and etcd logs, for a failure message."""
    etcd = node.daemon.state / "docker" / "swarm" / "etcd.log"
    text = "\n".join(node.daemon.log().splitlines()[-lines:])
    if etcd.exists():
        text += "\n--- etcd:\n" + "\n".join(etcd.read_text(errors="replace").splitlines()[-lines // 2:])
    return text


def teardown(bed: Bed) -> dict[str, Any]:
    """Leave, remove, destroy, delete: what is still there afterwards (empty when nothing is left)."""
    left: dict[str, Any] = {}
    running = [n for n in bed.nodes if n.daemon.proc is not None and n.daemon.proc.poll() is None]
    for node in reversed(running):  # workers first, then managers
        node.docker("swarm", "leave", "--force", check=False, timeout=90)
        ids = node.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            node.docker("rm", "-f", *ids, check=False)
    for node in running:
        try:
            found = leftovers(node.daemon)
        except subprocess.CalledProcessError as exc:
            found = {"ctr": [str(exc)]}
        if found:
            left[f"node{node.index} leftovers"] = found
    for node in bed.nodes:
        node.daemon.destroy()
        found = host_leftovers(node.daemon)
        if found:
            left[f"node{node.index} host"] = found
        # The host end first: deleting a veth takes its peer with it at once, whereas the peer of a deleted
        # namespace is destroyed later by the kernel's netns cleanup work, so its host end can outlive the check.
        ip("link", "del", node.veth, check=False)
        ip("netns", "del", node.netns, check=False)
    if bed.forward_rule:
        subprocess.run(["iptables", "-D", *bed.forward_rule], check=False, capture_output=True)
    ip("link", "del", bed.bridge, check=False)
    bed.registry.stop()
    names = ip("-o", "link", "show").stdout
    links = [line.split(":")[1].strip().split("@")[0] for line in names.splitlines()]
    mine = [name for name in links if name.startswith(f"nwc{bed.slot}") or name == bed.bridge]
    if mine:
        left["links"] = mine
    spaces = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    mine = [s for s in spaces if s.startswith(f"nwc{bed.slot}n")]
    if mine:
        left["netns"] = mine
    if bed.forward_rule:
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
        if f"-i {bed.bridge} " in rules:
            left["forward rule"] = [bed.bridge]
    return left


@contextlib.contextmanager
def nodes(n: int, extra_args: list[str] | None = None) -> Iterator[Bed]:
    """``n`` nodes up, not in a swarm; asserts at exit that nothing of the bed is left."""
    bed = start_bed(n, extra_args)
    try:
        yield bed
    finally:
        left = teardown(bed)
        assert left == {}, f"cluster bed left: {left}"


@contextlib.contextmanager
def cluster(n: int, managers: int = 1, extra_args: list[str] | None = None) -> Iterator[Bed]:
    """A swarm of ``n`` nodes, the first ``managers`` of them managers; torn down leaving nothing."""
    with nodes(n, extra_args) as bed:
        form_swarm(bed, managers)
        yield bed


def eventually(check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.2) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError, KeyError, ValueError, subprocess.SubprocessError):
            if check():
                return True
        time.sleep(interval)
    return check()
