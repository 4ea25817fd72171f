"""The network Narwhal writes on first start when the conf dir holds no config.

bridge (this instance's own bridge, gateway, no per-pod masquerade) with host-local IPAM whose
allocations live under this instance's state dir, tuning for a requested MAC, portmap for hostPorts and
bandwidth for the kubernetes.io/{ingress,egress}-bandwidth annotations.  What the bridge plugin's
``ipMasq`` and the firewall plugin did per pod (masquerade pod traffic leaving the host; accept it in
FORWARD, whose policy Docker sets to DROP with br_netfilter on) narwhald does once per network
(pkg/cni/netrules.py, installed when the network is loaded), and plugins that are no-ops for a pod are
left out of its ADD (pkg/cni/noop.py).  Names that live in host-global spaces (network name → iptables
chain hashes, bridge, chains, subnet) are derived from ``cfg.instance_id`` so several narwhald side by
side never share them.

A file written by an older version (``legacy_conflist``: bridge with ``ipMasq`` and the firewall plugin)
is rewritten in the current shape at start, with the same subnets; pods attached before keep the chain
they were ADDed with in the attachment cache, and DEL runs it whole.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Any

from pkg.cni import config as cni_config
from pkg.config import Config

log = logging.getLogger(__name__)

CNI_VERSION = "1.0.0"
FILE_NAME = "10-narwhal.conflist"
# Per-instance /24s are carved from here: clear of Docker (172.17/16), Podman (10.88/16, 10.89/16),
# the usual Kubernetes service range (10.96/12) and the common pod CIDRs (10.42/16, 10.244/16).
SUBNET_POOL = ipaddress.IPv4Network("10.123.0.0/16")
SUBNET_PREFIX = 24


def network_name(cfg: Config) -> str:
    return f"narwhal-{cfg.instance_id}"


def bridge_name(cfg: Config) -> str:
    return cfg.cni_bridge or f"nw-{cfg.instance_id}"


def admin_chain(cfg: Config) -> str:
    return f"NARWHAL-ADMIN-{cfg.instance_id}"


def ipam_dir(cfg: Config) -> Path:
    return cfg.state / "cni" / "ipam"


def tuning_plugin(cfg: Config) -> dict[str, Any]:
    """The tuning plugin, for a requested MAC address (the "mac" capability: Docker's --mac-address); it keeps
    its restore-on-DEL backups under this instance's state dir."""
    return {"type": "tuning", "capabilities": {"mac": True}, "dataDir": str(cfg.state / "cni" / "tuning")}


def host_routes_v4() -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes (from /proc: no netlink socket needed)."""
    routes = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest, mask = (int(f, 16).to_bytes(4, "little") for f in (fields[1], fields[7]))
        try:
            net = ipaddress.IPv4Network((int.from_bytes(dest, "big"), bin(int.from_bytes(mask, "big")).count("1")))
        except ValueError:
            continue
        if net.prefixlen > 0:  # the default route overlaps everything and says nothing
            routes.append(net)
    return routes


def free_slot(pool: ipaddress.IPv4Network, prefix: int, instance_id: str,
              taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """The first subnet of ``pool`` from this instance's stable slot on (by its id) that overlaps nothing
    ``taken``; None when every one does.  The default network and Docker's user-defined ones both pick so."""
    slots = list(pool.subnets(new_prefix=prefix))
    start = int(instance_id, 16) % len(slots)
    for i in range(len(slots)):
        candidate = slots[(start + i) % len(slots)]
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    return None


def pick_subnet(instance_id: str, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """This instance's /24: a stable slot from the instance id, skipping slots that overlap
    an existing route (another instance's bridge, a VPN, the LAN); its own slot when all do."""
    free = free_slot(SUBNET_POOL, SUBNET_PREFIX, instance_id, taken)
    if free is not None:
        return free
    slots = list(SUBNET_POOL.subnets(new_prefix=SUBNET_PREFIX))
    return slots[int(instance_id, 16) % len(slots)]


def subnets(cfg: Config) -> list[str]:
    if cfg.pod_subnet:
        return list(cfg.pod_subnet)
    return [str(pick_subnet(cfg.instance_id, host_routes_v4()))]


def _bridge_plugin(cfg: Config, pod_subnets: list[str], masquerade: bool) -> dict[str, Any]:
    ranges = [[{"subnet": s}] for s in pod_subnets]
    routes = [{"dst": "0.0.0.0/0" if ipaddress.ip_network(s).version == 4 else "::/0"} for s in pod_subnets]
    return {
        "type": "bridge",
        "bridge": bridge_name(cfg),
        "isGateway": True,
        "ipMasq": masquerade,
        "hairpinMode": True,
        "capabilities": {"ips": True},
        "ipam": {"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": str(ipam_dir(cfg))},
    }


def conflist(cfg: Config, pod_subnets: list[str]) -> dict[str, Any]:
    """The default network as this version writes it (masquerade and FORWARD accepts: pkg/cni/netrules.py)."""
    return {
        "cniVersion": CNI_VERSION,
        "name": network_name(cfg),
        "plugins": [
            _bridge_plugin(cfg, pod_subnets, masquerade=False),
            tuning_plugin(cfg),
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def legacy_conflist(cfg: Config, pod_subnets: list[str]) -> dict[str, Any]:
    """The default network as versions before issue 21's round three wrote it: masquerade per pod (bridge
    ``ipMasq``) and FORWARD accepts per pod (the firewall plugin)."""
    return {
        "cniVersion": CNI_VERSION,
        "name": network_name(cfg),
        "plugins": [
            _bridge_plugin(cfg, pod_subnets, masquerade=True),
            tuning_plugin(cfg),
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": admin_chain(cfg)},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def is_generated(cfg: Config, path: Path, data: dict[str, Any]) -> bool:
    """This instance wrote ``data`` itself: it is its file in the conf dir and reads exactly as this version
    writes it for the subnets it holds.  A file an administrator wrote, or edited, is not (and runs as
    libcni runs it: pkg/cni/noop.py prunes only lists Narwhal built)."""
    if path != cfg.cni_conf_dir / FILE_NAME or data.get("name") != network_name(cfg):
        return False
    found = subnets_of(data)
    return bool(found) and data in (conflist(cfg, found), legacy_conflist(cfg, found))


def _has_config(conf_dir: Path) -> bool:
    try:
        return any(p.suffix in cni_config.EXTENSIONS for p in conf_dir.iterdir())
    except FileNotFoundError:
        return False


def write_if_missing(cfg: Config) -> Path | None:
    """Write the default network when the conf dir has no config file at all (not even a
    broken one: that is the admin's and NetworkReady reports it).  Blocking file I/O."""
    conf_dir = cfg.cni_conf_dir
    if _has_config(conf_dir):
        return None
    conf_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = conf_dir / FILE_NAME
    data = conflist(cfg, subnets(cfg))
    _write(path, data)
    log.info("wrote default CNI network %s (subnets %s) to %s", data["name"], ", ".join(subnets_of(data)), path)
    return path


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)  # the watcher never sees a half-written file


def upgrade_legacy(cfg: Config) -> Path | None:
    """Rewrite this instance's default network in the current shape when it is exactly what an older version
    wrote (``legacy_conflist``), keeping its subnets; a file anyone edited is left alone.  Blocking file I/O."""
    path = cfg.cni_conf_dir / FILE_NAME
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    found = subnets_of(data) if isinstance(data, dict) else []
    if not found or data != legacy_conflist(cfg, found):
        return None
    _write(path, conflist(cfg, found))
    log.info("rewrote default CNI network %s in %s: masquerade and FORWARD accepts per network, no firewall "
             "plugin (pods attached before keep their chain)", data["name"], path)
    return path


def subnets_of(data: dict[str, Any]) -> list[str]:
    """The host-local subnets of a conflist's first plugin (empty when it has none)."""
    out: list[str] = []
    for plugin in data.get("plugins") or []:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
            continue
        for rs in ipam.get("ranges") or []:
            for r in rs if isinstance(rs, list) else []:
                if isinstance(r, dict) and r.get("subnet"):
                    out.append(str(r["subnet"]))
        if ipam.get("subnet"):
            out.append(str(ipam["subnet"]))
    return out
