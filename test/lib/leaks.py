"""What a narwhald instance may leave behind, for assertions after everything was removed."""
from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from pathlib import Path

from lib.daemon import DaemonProcess, mounts_under
from pkg.procs import live_pids


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
    streams = d.state / "logs" / "streams"  # log-service registrations: each goes once its container's output ended
    found["log streams"] = [p.name for p in streams.iterdir()] if streams.exists() else []
    instance = hashlib.sha256(str(d.root.resolve()).encode()).hexdigest()[:8]  # as pkg.config.Config.instance_id
    cgroups = []
    for hierarchy in ("memory", "cpu,cpuacct", "pids"):
        for parent in Path("/sys/fs/cgroup", hierarchy).glob(f"narwhal-{instance}*"):  # CRI and Docker domains
            cgroups += [str(p) for p in parent.iterdir() if p.is_dir()]
    found["cgroups"] = cgroups
    return {k: v for k, v in found.items() if v}


def log_service_pids(d: DaemonProcess) -> list[int]:
    """Live log services of this instance (``log-service: true``), found by their command line."""
    needle = str(d.state / "logs").encode()
    return live_pids(lambda args: any(a.endswith(b"narwhal-log-service.py") for a in args) and needle in args)


def logger_pids(d: DaemonProcess) -> list[int]:
    """Live narwhal-logger processes of this instance (``log-service: false``; their command line names its
    state dir)."""
    needle = str(d.state).encode()
    return live_pids(lambda args: any(b"narwhal-logger" in a for a in args) and any(needle in a for a in args))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_leftovers(d: DaemonProcess, bridges: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """What of a stopped and cleaned-up instance is still on the host (``narwhald cleanup`` removes it): its
    firewall admin, isolation and per-network (masquerade, FORWARD) chains, its default bridge (and
    ``bridges``, e.g. its Docker networks'), rules tagged for its networks, cgroup parents, mounts and dirs.
    Empty lists when nothing is left."""
    instance = hashlib.sha256(str(d.root.resolve()).encode()).hexdigest()[:8]
    chains = (f"NARWHAL-ADMIN-{instance}", f"NW-ISO-{instance}", f"NW-MESH-{instance}", f"NW-MESHMQ-{instance}",
              f"NW-FWD-{instance}", f"NW-MASQ-{instance}")
    found: dict[str, list[str]] = {"chains": [], "rules": []}
    for save in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        found["chains"] += [f"{save}: {c}" for c in chains if f":{c} " in out]
        mine = (f'"narwhal-{instance}', *chains)  # tagged for one of its networks, or jumping to its chains
        found["rules"] += [line for line in out.splitlines() if line.startswith("-A ") and any(m in line for m in mine)]
    found["bridges"] = [b for b in (f"nw-{instance}", *bridges) if Path("/sys/class/net", b).exists()]
    found["cgroups"] = [str(p) for pattern in (f"narwhal-{instance}*", f"*/narwhal-{instance}*")
                        for p in Path("/sys/fs/cgroup").glob(pattern)]
    found["mounts"] = mounts_under(d.base)
    found["log service"] = [str(pid) for pid in log_service_pids(d)]
    found["dirs"] = [str(p) for p in (d.root, d.state) if p.exists()]
    return {k: v for k, v in found.items() if v}
