"""Host-side helpers for CNI integration tests: servers inside a netns, leak probes, cleanup.

Tests change host-global state (a bridge, iptables chains, the FORWARD
policy).  ``HostGuard`` records what existed before and ``restore()`` removes
what the tests added, without touching rules other runtimes own.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib import nsexec
from lib.docker_networks import NetworkHostState

SHARED_NAT = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-SNAT")

SERVER = r"""
import socket, sys, threading
token, port = sys.argv[1].encode(), int(sys.argv[2])
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(token); c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        _, peer = u.recvfrom(100); u.sendto(token, peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"""

CLIENT = r"""
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "udp":
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
        u.sendto(b"x", (host, port)); print(u.recvfrom(100)[0].decode())
    else:
        c = socket.create_connection((host, port), timeout=3); print(c.recv(100).decode())
except OSError as e:
    print("ERR", type(e).__name__)
"""


def run(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def start_server(netns: Path, token: str, port: int) -> subprocess.Popen[str]:
    """A TCP+UDP server on ``port`` inside ``netns`` that answers every peer with ``token``."""
    proc = subprocess.Popen(nsexec.argv(netns, sys.executable, "-c", SERVER, token, str(port)),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def request_from(netns: Path | None, host: str, port: int, proto: str = "tcp") -> str:
    """What a client sees connecting to host:port (from ``netns``, or from the host when None)."""
    cmd = [sys.executable, "-c", CLIENT, host, str(port), proto]
    if netns is not None:
        cmd = nsexec.argv(netns, *cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iptables_save() -> str:
    return run("iptables-save", "-t", "nat") + run("iptables-save", "-t", "filter")


def tagged_rules(network: str) -> list[str]:
    """Rules any plugin tagged for ``network`` (bridge ipMasq, portmap)."""
    needle = f'name: \\"{network}\\"'
    return [line for line in iptables_save().splitlines() if needle in line]


def container_chains(network: str, sandbox_ids: set[str]) -> list[str]:
    """Existing per-container chains (bridge ipMasq ``CNI-<hash>``, portmap ``CNI-DN-<hash>``) of these ids,
    named as the plugins name them: a prefix plus sha512(network + id), 28 characters in all."""
    names = {}
    for sid in sandbox_ids:
        digest = hashlib.sha512((network + sid).encode()).hexdigest()
        for prefix in ("CNI-", "CNI-DN-"):
            names[(prefix + digest)[:28]] = sid
    return sorted(c for cmd, _, c in _chains() if cmd == "iptables" and c in names)


def firewall_rules(subnet_prefix: str) -> list[str]:
    return [line for line in iptables_save().splitlines()
            if line.startswith("-A CNI-FORWARD") and f" {subnet_prefix}" in line]


def bridge_ports(bridge: str) -> list[str]:
    out = run("ip", "-o", "link", "show", "master", bridge, check=False)
    return [line.split(":")[1].strip() for line in out.splitlines() if line.strip()]


def mounted_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


FAMILIES = ("iptables", "ip6tables")


@dataclass
class HostGuard:
    """Remembers the host's FORWARD policy and shared CNI chains (IPv4 and IPv6);
    ``restore()`` undoes our additions and leaves what others own alone."""

    forward_policy: str = ""
    ip_forward: str = ""
    chains_before: set[tuple[str, str, str]] = field(default_factory=set)
    bridges: list[str] = field(default_factory=list)
    admin_chains: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)  # whose per-network chains (pkg/cni/netrules.py) go

    @classmethod
    def take(cls) -> HostGuard:
        guard = cls()
        guard.forward_policy = _policy("FORWARD")
        guard.ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        guard.chains_before = _chains()
        return guard

    def restore(self) -> None:
        run("iptables", "-w", "-P", "FORWARD", self.forward_policy, check=False)
        if self.ip_forward:  # the bridge plugin turns forwarding on
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward)
        self.restore_instance()
        for cmd in FAMILIES:
            self._remove_unused_shared_chains(cmd)

    def restore_instance(self) -> None:
        """Only the bridges and admin chains listed (no policy, no shared chains)."""
        for bridge in self.bridges:
            run("ip", "link", "del", bridge, check=False)
        for cmd in FAMILIES:
            for chain in self.admin_chains:
                rule = ["-m", "comment", "--comment", "CNI firewall plugin admin overrides", "-j", chain]
                for _ in range(10):
                    if subprocess.run([cmd, "-w", "-D", "CNI-FORWARD", *rule], capture_output=True).returncode:
                        break
                run(cmd, "-w", "-F", chain, check=False)
                run(cmd, "-w", "-X", chain, check=False)
            for instance in self.instances:
                for table, hook, chain in (("filter", "FORWARD", f"NW-FWD-{instance}"),
                                           ("nat", "POSTROUTING", f"NW-MASQ-{instance}")):
                    for _ in range(10):
                        if subprocess.run([cmd, "-w", "-t", table, "-D", hook, "-j", chain],
                                          capture_output=True).returncode:
                            break
                    run(cmd, "-w", "-t", table, "-F", chain, check=False)
                    run(cmd, "-w", "-t", table, "-X", chain, check=False)

    def _remove_unused_shared_chains(self, cmd: str) -> None:
        added = _chains() - self.chains_before
        text = run(f"{cmd}-save", "-t", "nat") + run(f"{cmd}-save", "-t", "filter")
        if (cmd, "filter", "CNI-FORWARD") in added and not [
            line for line in text.splitlines() if line.startswith("-A CNI-FORWARD")
        ]:
            run(cmd, "-w", "-D", "FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules",
                "-j", "CNI-FORWARD", check=False)
            run(cmd, "-w", "-X", "CNI-FORWARD", check=False)
        if (cmd, "nat", "CNI-HOSTPORT-DNAT") in added and not [
            line for line in text.splitlines() if line.startswith("-A CNI-HOSTPORT-DNAT")
        ]:
            for chain, rule in (
                ("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]),
                ("OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]),
                ("POSTROUTING", ["-m", "comment", "--comment", "CNI portfwd requiring masquerade",
                                 "-j", "CNI-HOSTPORT-MASQ"]),
            ):
                run(cmd, "-w", "-t", "nat", "-D", chain, *rule, check=False)
            for chain in SHARED_NAT:
                if (cmd, "nat", chain) in added:
                    run(cmd, "-w", "-t", "nat", "-F", chain, check=False)
                    run(cmd, "-w", "-t", "nat", "-X", chain, check=False)


def _policy(chain: str) -> str:
    for line in run("iptables", "-S", chain).splitlines():
        if line.startswith(f"-P {chain} "):
            return line.split()[2]
    return "ACCEPT"


def _chains() -> set[tuple[str, str, str]]:
    found = set()
    for cmd in FAMILIES:
        for table in ("nat", "filter"):
            for line in run(f"{cmd}-save", "-t", table, check=False).splitlines():
                if line.startswith(":"):
                    found.add((cmd, table, line[1:].split()[0]))
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)


@dataclass
class InstanceNetwork:
    """The host-global pieces of one narwhald's default network: its bridge, its firewall admin chain,
    the iptables rules its pods left (tagged with its network name, or firewall rules for its subnet).
    Names follow ``pkg.config.Config.instance_id`` and ``pkg.cni.defaults``.  Read it while the
    daemon's dirs exist (``of``), ``remove()`` it once the daemon is gone."""

    instance_id: str
    subnets: list[str]
    docker_networks: NetworkHostState | None = None  # its user-defined Docker networks (bridges, chains)

    @classmethod
    def of(cls, root: Path, conf_dir: Path) -> InstanceNetwork:
        from pkg.cni import defaults

        instance_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        try:
            data = json.loads((conf_dir / defaults.FILE_NAME).read_text())
        except (OSError, ValueError):
            data = {}
        own = isinstance(data, dict) and data.get("name") == f"narwhal-{instance_id}"
        return cls(instance_id, defaults.subnets_of(data) if own else [], NetworkHostState.of(root))

    def remove(self) -> None:
        import asyncio

        from pkg.cni import iptables

        nets = [ipaddress.ip_network(n) for n in self.subnets]

        def in_subnets(ip: str) -> bool:
            return any(ipaddress.ip_address(ip) in n for n in nets)

        # On a thread of its own: the caller may be inside a running event loop.
        worker = threading.Thread(target=lambda: asyncio.run(
            iptables.cleanup(f"narwhal-{self.instance_id}", lambda _: True, in_subnets if nets else None)))
        worker.start()
        worker.join()
        if self.docker_networks is not None:  # networks outlive narwhald (as Docker's): gone with the test
            self.docker_networks.remove()
        HostGuard(bridges=[f"nw-{self.instance_id}"],
                  admin_chains=[f"NARWHAL-ADMIN-{self.instance_id}"]).restore_instance()
