"""What a narwhald instance may leave behind, for assertions after everything was removed."""
from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from pathlib import Path

from lib.daemon import DaemonProcess, mounts_under


def ctr(d: DaemonProcess, *args: str, namespace: str = "narwhal") -> str:
    out = subprocess.run(["ctr", "--address", str(d.state / "containerd" / "containerd.sock"), "-n", namespace,
                          *args], capture_output=True, text=True, check=True)
    return out.stdout


def leftovers(d: DaemonProcess) -> dict[str, list[str]]:
    """Every runtime object still present; all lists are empty when nothing leaked."""
    found: dict[str, list[str]] = {}
    found["mounts"] = [str(m) for m in mounts_under(d.base)]
    for ns, suffix in (("narwhal", ""), ("narwhal-docker", " (docker)")):  # the CRI and Docker domains
        found["containers" + suffix] = ctr(d, "containers", "ls", "-q", namespace=ns).split()
        found["tasks" + suffix] = [line.split()[0] for line in ctr(d, "tasks", "ls", namespace=ns).splitlines()[1:]]
        found["active snapshots" + suffix] = [
            line.split()[0] for line in ctr(d, "snapshots", "ls", namespace=ns).splitlines()[1:] if "Active" in line]
    ipam = d.state / "cni" / "ipam"
    found["ip allocations"] = [p.name for p in ipam.rglob("*") if p.is_file() and _is_ip(p.name)]
    results = d.state / "cni" / "results"
    found["cni results"] = [p.name for p in results.rglob("*") if p.is_file()] if results.exists() else []
    netns = d.state / "netns"
    found["netns"] = [p.name for p in netns.iterdir()] if netns.exists() else []
    for kind in ("sandboxes", "containers"):
        for base in (d.root / kind, d.state / kind, d.root / "docker" / kind, d.state / "docker" / kind):
            if base.exists():
                found.setdefault(f"{kind} dirs", []).extend(p.name for p in base.iterdir())
    instance = hashlib.sha256(str(d.root.resolve()).encode()).hexdigest()[:8]  # as pkg.config.Config.instance_id
    cgroups = []
    for hierarchy in ("memory", "cpu,cpuacct", "pids"):
        for parent in Path("/sys/fs/cgroup", hierarchy).glob(f"narwhal-{instance}*"):  # CRI and Docker domains
            cgroups += [str(p) for p in parent.iterdir() if p.is_dir()]
    found["cgroups"] = cgroups
    return {k: v for k, v in found.items() if v}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
