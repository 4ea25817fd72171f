"""A new network's request checked as moby checks it, and its address pools: asked for, or picked free.

Separate from pkg.docker.networks.service because it decides before anything is made: which drivers and IPAM
drivers a create accepts, one pool per address family, IPv6 only with EnableIPv6; then each family's pool, an
explicit subnet refused when it overlaps one taken (moby's "Pool overlaps"), else an IPv6 ULA derived from the
network ID, else a free IPv4 subnet beside the host's routes.  The service holds its lock around ``plan``
(the taken subnets must not change under it) and makes the bridge, records and rules from the result.
"""
from __future__ import annotations

import asyncio
import ipaddress

from pkg import errors
from pkg.cni import defaults
from pkg.docker.networks import conflist
from pkg.docker.networks.model import HOST, PREDEFINED, CreateRequest, IPAMPool

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_request(req: CreateRequest) -> dict[int, IPAMPool]:
    """What a create may ask for (moby's words and statuses); the requested pools by address family."""
    name = req.name
    if not name.strip():
        raise errors.InvalidArgument("network name must not be empty")
    # moby checks nothing more than non-blank (libnetwork's IsValidName: "test 01" is a valid name, and so
    # is one with a trailing newline): names only key records and
    # lookups here; bridges, CNI names and chains derive from the network ID.
    if name in PREDEFINED:
        raise errors.PermissionDenied(f"{name} is a pre-defined network and cannot be created")
    driver = req.driver or "bridge"
    if driver in (HOST, "null"):
        raise errors.PermissionDenied(f'only one instance of "{driver}" network is allowed')
    if driver != "bridge":
        raise errors.InvalidArgument(f"network driver {driver!r} is not supported: only \"bridge\" networks "
                                     "can be created")
    if req.ipam_driver not in ("", "default"):
        raise errors.InvalidArgument(f"IPAM driver {req.ipam_driver!r} is not supported: only \"default\"")
    requested = _by_family(req.ipam)
    if 6 in requested and not req.enable_ipv6:
        raise errors.InvalidArgument(f"subnet {requested[6].subnet}: IPv6 pools need EnableIPv6 (--ipv6)")
    conflist.check_options(req.options)
    return requested


async def plan(req: CreateRequest, requested: dict[int, IPAMPool], network_id: str, taken: list[Subnet],
               instance_id: str) -> list[IPAMPool]:
    """The network's pools, IPv4 first: each requested one completed and checked against ``taken``, the
    others picked (an IPv6 ULA from the network ID, a free IPv4 subnet that is neither taken nor routed)."""
    pools = []
    for version in (4, 6) if req.enable_ipv6 else (4,):
        asked = requested.get(version)
        if asked is not None and asked.subnet:
            pool = conflist.complete_pool(asked)
            subnet = ipaddress.ip_network(pool.subnet)
            if any(subnet.overlaps(t) for t in taken if t.version == version):
                raise errors.PermissionDenied("invalid pool request: Pool overlaps with other one on this "
                                              "address space")
        elif asked is not None and (asked.gateway or asked.ip_range or asked.aux):
            raise errors.InvalidArgument("a gateway, ip-range or auxiliary address needs a subnet")
        elif version == 6:
            pool = conflist.complete_pool(IPAMPool(str(conflist.ula_subnet(network_id))))
        else:
            routes = await asyncio.to_thread(defaults.host_routes_v4)
            pool = conflist.complete_pool(IPAMPool(str(conflist.pick_subnet(
                instance_id, [t for t in [*taken, *routes] if isinstance(t, ipaddress.IPv4Network)]))))
        pools.append(pool)
    return pools


def _by_family(pools: tuple[IPAMPool, ...]) -> dict[int, IPAMPool]:
    """At most one requested pool per address family (a pool without a subnet counts as IPv4)."""
    out: dict[int, IPAMPool] = {}
    for pool in pools:
        try:
            version = ipaddress.ip_network(pool.subnet, strict=False).version if pool.subnet else 4
        except ValueError:
            raise errors.InvalidArgument(f"invalid subnet {pool.subnet!r}") from None
        if version in out:
            raise errors.InvalidArgument(f"only one IPv{version} pool per network is supported")
        out[version] = pool
    return out
