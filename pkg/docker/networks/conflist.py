"""A user-defined network's CNI conflist, its names and its subnet.

Each network gets its own Linux bridge and CNI network name, both derived
from the (random) network ID, so two narwhald instances never share one; its
host-local allocations live in this instance's IPAM dir like the default
network's (so the leak GC sees them).  An internal network has no masquerade
and no default route; the isolation rules (firewall.py) drop whatever would
leave its bridge.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from pkg import errors
from pkg.cni import defaults
from pkg.cni.netrules import BridgeNetwork
from pkg.config import Config
from pkg.docker.networks.model import IPAMPool, Network

# Auto-picked /24s come from here: clear of the default networks' 10.123/16, Docker's 172.17-31 and
# Podman's 10.88-89.  Each instance starts at its own slot.
SUBNET_POOL = ipaddress.IPv4Network("10.124.0.0/14")
SUBNET_PREFIX = 24
BRIDGE_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
MAX_IFNAME = 15
OVERLAY_MTU = 1450  # an overlay's veths leave room for the VXLAN headers (moby's default)


def cni_name(cfg: Config, network_id: str) -> str:
    return f"narwhal-{cfg.instance_id}-{network_id[:12]}"


def bridge_name(network_id: str) -> str:
    return f"nwb{network_id[:12]}"


def check_bridge_name(name: str) -> str:
    if not name or len(name) > MAX_IFNAME or any(c in name for c in "/: \t\n") or name in (".", ".."):
        raise errors.InvalidArgument(f"invalid bridge name {name!r}: at most {MAX_IFNAME} characters, no '/', ':' "
                                     "or whitespace")
    return name


def pick_subnet(instance_id: str, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first free /24 from this instance's slot on; ResourceExhausted when the pool is full."""
    free = defaults.free_slot(SUBNET_POOL, SUBNET_PREFIX, instance_id, taken)
    if free is not None:
        return free
    raise errors.ResourceExhausted("could not find an available, non-overlapping IPv4 address pool among the "
                                   "defaults to assign to the network")


def ula_subnet(network_id: str) -> ipaddress.IPv6Network:
    """An IPv6 network's /64 when none is asked for: a unique local prefix (RFC 4193, fd00::/8) whose 40-bit
    global ID and subnet ID come from the network ID, as moby picks one from its default ULA pool."""
    bits = int(network_id[:14], 16)
    return ipaddress.IPv6Network(((0xFD << 120) | (bits << 64), 64))


def complete_pool(pool: IPAMPool) -> IPAMPool:
    """Validate a requested pool (IPv4 or IPv6) and fill in its gateway (the subnet's first address), as
    Docker does; auxiliary addresses must lie in the subnet."""
    try:
        subnet = ipaddress.ip_network(pool.subnet, strict=False)
    except ValueError:
        raise errors.InvalidArgument(f"invalid subnet {pool.subnet!r}") from None
    if str(subnet) != pool.subnet and subnet.network_address != ipaddress.ip_interface(pool.subnet).ip:
        raise errors.InvalidArgument(f"invalid subnet {pool.subnet}: it should be {subnet}")
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise errors.InvalidArgument(f"subnet {subnet} is too small: at most /{subnet.max_prefixlen - 2}")
    gateway = pool.gateway or str(next(subnet.hosts()))
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        raise errors.InvalidArgument(f"invalid gateway address {gateway!r}") from None
    if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
        raise errors.InvalidArgument(f"no matching subnet for gateway {gateway}")
    if pool.ip_range:
        try:
            ip_range = ipaddress.ip_network(pool.ip_range, strict=False)
        except ValueError:
            raise errors.InvalidArgument(f"invalid ip-range {pool.ip_range!r}") from None
        if ip_range.version != subnet.version or not ip_range.subnet_of(subnet):  # type: ignore[arg-type]
            raise errors.InvalidArgument(f"no matching subnet for range {pool.ip_range}")
    for name, address in pool.aux.items():
        try:
            aux = ipaddress.ip_address(address)
        except ValueError:
            raise errors.InvalidArgument(f"invalid auxiliary address {name}={address!r}") from None
        if aux not in subnet:
            raise errors.InvalidArgument(f"auxiliary address: ({name}:{address}) must belong to the master pool: "
                                         f"{subnet}")
    return IPAMPool(str(subnet), str(gw), pool.ip_range, dict(pool.aux))


def enabled(options: dict[str, str], key: str) -> bool:
    """A boolean driver option that defaults to true (enable_icc, enable_ip_masquerade)."""
    return options.get(key, "true").lower() not in ("false", "0")


def check_options(options: dict[str, str]) -> None:
    """The driver options this bridge understands, checked at create (others are kept and ignored, as Docker)."""
    mtu = options.get(MTU_OPTION)
    if mtu:
        if not (mtu.isascii() and mtu.isdigit()) or not 68 <= int(mtu) <= 65535:
            raise errors.InvalidArgument(f"invalid MTU {mtu!r}: a number from 68 to 65535")
    for key in (ICC_OPTION, MASQUERADE_OPTION):
        if options.get(key, "true").lower() not in ("true", "false", "1", "0"):
            raise errors.InvalidArgument(f"option {key}: {options[key]!r} is not a boolean")
    if BRIDGE_OPTION in options:
        check_bridge_name(options[BRIDGE_OPTION])


def _ranges(pool: IPAMPool) -> list[dict[str, str]]:
    """host-local's range set for a pool: the ip-range (else the subnet) cut around the auxiliary addresses,
    which host-local must never hand out."""
    subnet = ipaddress.ip_network(pool.subnet)
    scope = ipaddress.ip_network(pool.ip_range, strict=False) if pool.ip_range else subnet
    first = max(int(scope.network_address), int(subnet.network_address) + 1)
    last = min(int(scope.broadcast_address), int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0))
    holes = sorted(n for n in (int(ipaddress.ip_address(v)) for v in pool.aux.values()) if first <= n <= last)
    if not pool.ip_range and not holes:
        return [{"subnet": pool.subnet, "gateway": pool.gateway}]
    address = type(subnet.network_address)
    out = []
    for hole in [*holes, last + 1]:
        if first <= hole - 1:
            out.append({"subnet": pool.subnet, "gateway": pool.gateway, "rangeStart": str(address(first)),
                        "rangeEnd": str(address(hole - 1))})
        first = hole + 1
    return out


def masquerades(network: Network) -> bool:
    """Traffic leaving the network's bridge is masqueraded (not internal, enable_ip_masquerade not off)."""
    return not network.internal and enabled(network.options, MASQUERADE_OPTION)


def rules_of(network: Network) -> BridgeNetwork | None:
    """The per-network rules narwhald installs for a local bridge network (pkg/cni/netrules.py): its
    conflist leaves masquerade and FORWARD accepts to them.  None for an overlay (its chain does it per pod)."""
    if network.driver == "overlay" or not network.bridge or not network.ipam:
        return None
    return BridgeNetwork(network.cni_name, network.bridge, tuple(p.subnet for p in network.ipam),
                         masquerades(network))


def conflist(cfg: Config, network: Network) -> dict[str, Any]:
    """A local bridge network: bridge without ``ipMasq``, no firewall plugin (narwhald's rules per network,
    ``rules_of``).  An overlay keeps the per-pod chain (bridge ``ipMasq``, the firewall plugin)."""
    per_pod = network.driver == "overlay"
    families = {p.version for p in network.ipam}
    routes = [] if network.internal else [{"dst": "0.0.0.0/0" if v == 4 else "::/0"} for v in sorted(families)]
    plugins: list[dict[str, Any]] = [
        {
            "type": "bridge",
            "bridge": network.bridge,
            "isGateway": True,
            "ipMasq": per_pod and masquerades(network),
            "hairpinMode": True,
            "capabilities": {"ips": True},
            "ipam": {
                "type": "host-local",
                "ranges": [_ranges(p) for p in network.ipam],
                "routes": routes,
                "dataDir": str(defaults.ipam_dir(cfg)),
            },
        },
    ]
    mtu = network.options.get(MTU_OPTION) or (str(OVERLAY_MTU) if network.driver == "overlay" else "")
    if mtu:
        plugins[0]["mtu"] = int(mtu)
    plugins.append(defaults.tuning_plugin(cfg))
    if not network.internal:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    if per_pod:
        plugins.append({"type": "firewall", "backend": "iptables",
                        "iptablesAdminChainName": defaults.admin_chain(cfg)})
    return {"cniVersion": defaults.CNI_VERSION, "name": network.cni_name, "plugins": plugins}


def pools_of(data: dict[str, Any]) -> tuple[IPAMPool, ...]:
    """The host-local ranges of a conflist as Docker's IPAM config shows them (the default network's)."""
    pools = []
    for plugin in data.get("plugins") or []:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict):
            continue
        for rs in ipam.get("ranges") or []:
            for r in rs if isinstance(rs, list) else []:
                if isinstance(r, dict) and r.get("subnet"):
                    subnet = ipaddress.ip_network(str(r["subnet"]), strict=False)
                    gateway = str(r.get("gateway") or next(subnet.hosts(), ""))
                    pools.append(IPAMPool(str(subnet), gateway))
    return tuple(pools)
