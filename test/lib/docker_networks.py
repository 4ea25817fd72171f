"""Host state of one narwhald's Docker networks (bridges, the isolation chain), for leak checks and teardown.

Bridge names and subnets come from the network records under ``root/docker/networks``; read them
(``NetworkHostState.of``) while the daemon's dirs exist and ``remove()`` once it is gone, as
lib.cni_host.InstanceNetwork does for the default network.
"""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def instance_id(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]  # as pkg.config.Config.instance_id


def isolation_chain(root: Path) -> str:
    return f"NW-ISO-{instance_id(root)}"


def records(root: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted((root / "docker" / "networks").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def bridge_ports(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def chain_exists(chain: str, table: str = "filter") -> bool:
    return subprocess.run(["iptables", "-w", "-t", table, "-S", chain], capture_output=True).returncode == 0


def tagged_rules(cni_name: str) -> list[str]:
    """iptables rules the CNI plugins tagged for containers of this network."""
    found = []
    for table in ("nat", "filter"):
        out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        found += [line for line in out.splitlines() if f'"{cni_name}"' in line]
    return found


@dataclass
class NetworkHostState:
    """A (possibly dead) instance's user-defined networks as the host holds them: bridges, the CNI rules
    their containers left (tagged with each network's CNI name), the isolation chain."""

    root: Path
    bridges: list[str] = field(default_factory=list)
    cni_names: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, root: Path) -> NetworkHostState:
        state = cls(root)
        for r in records(root):
            bridge = str(r.get("bridge") or "")
            if not bridge or bridge.startswith("nw-") or r.get("name") in ("bridge", "host", "none"):
                continue
            state.bridges.append(bridge)
            state.cni_names.append(str(r.get("cniName") or ""))
            ipam = r.get("ipam")
            state.subnets += [str(p["subnet"]) for p in ipam if isinstance(p, dict)] if isinstance(ipam, list) else []
        return state

    def remove(self) -> None:
        """Delete what the instance's user-defined networks left on the host once it is gone."""
        import asyncio
        import ipaddress
        import threading

        from pkg.cni import iptables

        nets = [ipaddress.ip_network(n) for n in self.subnets]

        def in_subnets(ip: str) -> bool:
            return any(ipaddress.ip_address(ip) in n for n in nets)

        async def sweep() -> None:
            for name in self.cni_names:
                if name:
                    await iptables.cleanup(name, lambda _: True, in_subnets if nets else None)

        if self.cni_names:  # on a thread of its own: the caller may be inside a running event loop
            worker = threading.Thread(target=lambda: asyncio.run(sweep()))
            worker.start()
            worker.join()
        for bridge in self.bridges:
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        chain = isolation_chain(self.root)
        while subprocess.run(["iptables", "-w", "-D", "FORWARD", "-j", chain], capture_output=True).returncode == 0:
            pass
        subprocess.run(["iptables", "-w", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-w", "-X", chain], capture_output=True)


async def probe(netns: Path, host: str, port: int, timeout: float = 1.0) -> str:
    """What a TCP client inside ``netns`` gets from host:port (lib.cni_host's servers answer a token);
    "ERR ..." when it cannot connect.  The socket is made in the netns by a thread of this process (no
    helper process to start); a short timeout, as isolation drops packets and a refusal is a wait."""
    from pkg.cni.netns import run_in_netns

    def connect() -> str:
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                return conn.recv(100).decode()
        except OSError as exc:
            return f"ERR {type(exc).__name__}"

    return await run_in_netns(netns, connect)
