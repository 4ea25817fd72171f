"""Network connect and disconnect of a running sandbox, and the checks of what a container asks of a
network (aliases, a fixed IPv4 address), with Docker's messages."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pkg import errors
from pkg.cni.model import NetworkAttachment, PodNetworkRequest
from pkg.docker.networks import resolv
from pkg.docker.networks.model import BRIDGE, HOST, NONE, EndpointView, Network, Owner

if TYPE_CHECKING:
    from pkg.docker.networks.service import NetworkService

DNS_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?\Z")


async def connect(service: NetworkService, ref: str, sandbox_id: str, aliases: tuple[str, ...] = (),
                  ipv4: str = "", links: tuple[str, ...] = (), *, mac: str = "", ipv6: str = "") -> EndpointView:
    network = service.get(ref)
    owner = service.owner(sandbox_id) or Owner(sandbox_id, sandbox_id[:12])
    if network.name in (HOST, NONE):
        raise errors.PermissionDenied("container cannot be disconnected from host network or connected to host "
                                      "network" if network.name == HOST else
                                      "container cannot be connected to network none")
    netns, sandbox_dir = _sandbox(service, sandbox_id)
    check_aliases(network, aliases)
    address = check_ipv4(network, ipv4) if ipv4 else ""
    address6 = check_ipv6(network, ipv6) if ipv6 else ""
    # The sandbox's published ports go along: they are set up only if this network becomes eth0 (the
    # gateway endpoint, as moby publishes them), as when Compose disconnects and reconnects a created container.
    req = PodNetworkRequest(sandbox_id=sandbox_id, netns_path=Path(netns),
                            port_mappings=list(service.sandboxes.port_mappings(sandbox_id)
                                               if service.sandboxes is not None else ()))
    try:
        ep = await service.manager.connect(req, NetworkAttachment(attachment_name(network), aliases, address, links,
                                                                  mac=mac, ipv6=address6))
    except errors.AlreadyExists:
        raise errors.PermissionDenied(f"endpoint with name {owner.name} already exists in network "
                                      f"{network.name}") from None
    if sandbox_dir:
        for ip in (ep.ip, ep.ipv6):
            await asyncio.to_thread(resolv.hosts_add, Path(sandbox_dir), ip)
        if network.name != BRIDGE:
            await asyncio.to_thread(resolv.rewrite_in_place, Path(sandbox_dir) / "resolv.conf")
    return service.view(owner, ep, network)


async def disconnect(service: NetworkService, ref: str, sandbox_id: str, force: bool = False) -> None:
    network = service.get(ref)
    owner = service.owner(sandbox_id) or Owner(sandbox_id, sandbox_id[:12])
    if network.name == HOST:
        raise errors.PermissionDenied("container cannot be disconnected from host network or connected to host "
                                      "network")
    netns, sandbox_dir = "", ""
    sandbox_gone = False
    if service.sandboxes is not None:
        try:
            netns, sandbox_dir = service.sandboxes.netns_and_dir(sandbox_id)
        except errors.NotFound:
            if not force:
                raise
            sandbox_gone = True
    name = attachment_name(network)
    ips = [ip for e in await service.manager.endpoints(sandbox_id) if e.network == name for ip in (e.ip, e.ipv6) if ip]
    try:
        await service.manager.disconnect(sandbox_id, name, Path(netns) if netns else None)
    except errors.NotFound:
        # moby (DisconnectFromNetwork): force only excuses what cannot be found any more; a container that
        # exists but is not on the network is "not connected", forced or not.
        if sandbox_gone:
            return
        raise errors.PermissionDenied(f"container {owner.id} is not connected to network {network.name}") from None
    if sandbox_dir:
        for ip in ips:
            await asyncio.to_thread(resolv.hosts_remove, Path(sandbox_dir), ip)


def _sandbox(service: NetworkService, sandbox_id: str) -> tuple[str, str]:
    if service.sandboxes is None:
        raise errors.NotImplementedYet("network connect needs the Docker domain's sandboxes")
    netns, sandbox_dir = service.sandboxes.netns_and_dir(sandbox_id)
    if not netns:
        raise errors.PermissionDenied("container sharing network namespace with another container or host cannot "
                                      "be connected to any other network")
    if not Path(netns).exists():
        owner = service.owner(sandbox_id)
        raise errors.FailedPrecondition(f"container {owner.id if owner else sandbox_id} has no network namespace "
                                        "any more (its sandbox stopped): it cannot join networks")
    return netns, sandbox_dir


def attachment_name(network: Network) -> str:
    return "" if network.name == BRIDGE else network.name


def check_attachment(service: NetworkService, att: NetworkAttachment) -> NetworkAttachment:
    """Validate what a container asks of a network at create time (engine's NetworkingConfig)."""
    network = service.get(att.network)
    check_aliases(network, att.aliases)
    address = check_ipv4(network, att.ipv4) if att.ipv4 else ""
    address6 = check_ipv6(network, att.ipv6) if att.ipv6 else ""
    return dataclasses.replace(att, network=network.name, ipv4=address, ipv6=address6)


def check_aliases(network: Network, aliases: tuple[str, ...]) -> None:
    if aliases and network.name == BRIDGE:
        raise errors.InvalidArgument("network-scoped alias is supported only for containers in user defined "
                                     "networks")
    for alias in aliases:
        if not DNS_NAME.match(alias):
            raise errors.InvalidArgument(f"invalid network alias {alias!r}")


def check_ipv4(network: Network, ipv4: str) -> str:
    try:
        ip = ipaddress.IPv4Address(ipv4.split("/", 1)[0])
    except ValueError:
        raise errors.InvalidArgument(f"invalid IPv4 address {ipv4!r}") from None
    for pool in network.ipam:
        if ip in ipaddress.ip_network(pool.subnet):
            return str(ip)
    if network.name == BRIDGE:
        raise errors.InvalidArgument("user specified IP address is supported on user defined networks only")
    raise errors.InvalidArgument(f"no configured subnet or ip-range contain the IP address {ip}")


def check_ipv6(network: Network, ipv6: str) -> str:
    try:
        ip = ipaddress.IPv6Address(ipv6.split("/", 1)[0])
    except ValueError:
        raise errors.InvalidArgument(f"invalid IPv6 address {ipv6!r}") from None
    if not network.enable_ipv6:
        raise errors.InvalidArgument(f"IPv6 address {ip} requested on network {network.name}, which has no IPv6")
    for pool in network.ipam:
        if ip in ipaddress.ip_network(pool.subnet):
            return str(ip)
    raise errors.InvalidArgument(f"no configured subnet or ip-range contain the IP address {ip}")
