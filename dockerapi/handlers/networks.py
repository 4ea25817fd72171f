"""/networks: list, inspect, create, remove, connect, disconnect, prune (moby's network router)."""
from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from dockerapi import filters as docker_filters
from dockerapi import params, times, versions
from dockerapi.backend import backends, need
from dockerapi.backends import NetworkBackend, complete_pool, endpoint_id
from dockerapi.handlers.containers_request import endpoint_spec
from dockerapi.swarm_backend import NOT_MANAGER, OverlayRequest
from pkg import errors
from pkg.docker.networks.model import (
    BRIDGE,
    HOST,
    NONE,
    OVERLAY,
    CreateRequest,
    EndpointView,
    IPAMPool,
    Network,
)

FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
PRUNE_FILTERS = ("until", "label", "label!")


def _service(request: web.Request) -> NetworkBackend:
    service: NetworkBackend = need(backends(request).networks, "networks")
    return service


def refuse_unattachable(request: web.Request, names: list[str]) -> None:
    """A container created or connected through the API may join a swarm overlay only if it is attachable
    (task containers join theirs through the swarm agent, not here), with moby's 403."""
    service = backends(request).networks
    if service is None:
        return
    for name in names:
        try:
            network = service.get(name)
        except errors.NarwhalError:
            continue
        if network.driver == OVERLAY and not network.attachable:
            raise errors.PermissionDenied(f"Could not attach to network {name}: rpc error: code = PermissionDenied "
                                          f"desc = network {network.name} not manually attachable")


def _scope(network: Network) -> str:
    return "swarm" if network.driver == OVERLAY else "local"


def _matches(service: NetworkBackend, network: Network, filters: dict[str, list[str]]) -> bool:
    """Within a key any value may match; every key must (moby's filters.Args)."""
    if "name" in filters and not any(v in network.name for v in filters["name"]):
        return False
    if "id" in filters and not any(v in network.id for v in filters["id"]):
        return False
    if "driver" in filters and network.driver not in filters["driver"]:
        return False
    if "scope" in filters and _scope(network) not in filters["scope"]:
        return False
    if not docker_filters.labels_match(network.labels, filters.get("label", ())):
        return False
    if "type" in filters:
        for value in filters["type"]:
            if value not in ("custom", "builtin"):
                raise errors.InvalidArgument(f"invalid filter: 'type'='{value}'")
        if ("builtin" if network.predefined else "custom") not in filters["type"]:
            return False
    dangling = docker_filters.bool_value(filters, "dangling")
    return dangling is None or dangling == service.dangling(network)


async def _json(request: web.Request, service: NetworkBackend, network: Network, containers: bool) -> dict[str, Any]:
    pools = await service.bridge_pools() if network.name == BRIDGE else network.ipam
    config = []
    for pool in pools:
        entry = {"Subnet": pool.subnet}
        if pool.gateway:
            entry["Gateway"] = pool.gateway
        if pool.ip_range:
            entry["IPRange"] = pool.ip_range
        config.append({**entry, "AuxiliaryAddresses": dict(pool.aux)} if pool.aux else entry)
    body: dict[str, Any] = {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": _scope(network),
        "Driver": network.driver,
        "EnableIPv6": network.enable_ipv6,
        "IPAM": {"Driver": "default", "Options": network.ipam_options or None, "Config": config},
        "Internal": network.internal,
        "Attachable": network.attachable,
        "Ingress": network.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": _containers(request, service, network) if containers else {},
        "Options": network.options,
        "Labels": network.labels,
    }
    if versions.at_least(request, "1.47"):
        body["EnableIPv4"] = network.driver in ("bridge", OVERLAY)
    return body


def _containers(request: web.Request, service: NetworkBackend, network: Network) -> dict[str, Any]:
    """inspect's Containers: the endpoints on the network; for host and none, the running containers in
    that mode (they have no endpoint of their own, and no addresses to show)."""
    if network.name not in (HOST, NONE):
        return {v.owner_id: _endpoint(v) for v in service.endpoints(network)}
    engine = backends(request).engine
    if engine is None:
        return {}
    return {c.id: {"Name": c.name, "EndpointID": endpoint_id(c.sandbox_id, network.id), "MacAddress": "",
                   "IPv4Address": "", "IPv6Address": ""}
            for c in engine.list() if c.running and c.host_config.network_mode == network.name}


def _endpoint(view: EndpointView) -> dict[str, str]:
    return {"Name": view.owner_name, "EndpointID": view.endpoint_id, "MacAddress": view.mac,
            "IPv4Address": view.ipv4, "IPv6Address": view.ipv6}


async def list_networks(request: web.Request) -> web.Response:
    service = _service(request)
    filters = docker_filters.query(request, FILTERS)
    chosen = [n for n in service.all() if _matches(service, n, filters)]
    return web.json_response([await _json(request, service, n, containers=False) for n in chosen])


async def inspect_network(request: web.Request) -> web.Response:
    service = _service(request)
    scope = request.query.get("scope", "")
    network = service.get(request.match_info["id"])
    if scope and scope != _scope(network):
        raise errors.NotFound(f"network {request.match_info['id']} not found")
    return web.json_response(await _json(request, service, network, containers=True))


def _pools(ipam: Any) -> tuple[tuple[IPAMPool, ...], str, dict[str, str]]:
    if ipam is None:
        return (), "default", {}
    if not isinstance(ipam, dict):
        raise errors.InvalidArgument("IPAM must be an object")
    pools = []
    for entry in ipam.get("Config") or []:
        if not isinstance(entry, dict):
            raise errors.InvalidArgument("IPAM.Config entries must be objects")
        pools.append(IPAMPool(str(entry.get("Subnet") or ""), str(entry.get("Gateway") or ""),
                              str(entry.get("IPRange") or ""),
                              params.string_map(entry.get("AuxiliaryAddresses"), "AuxiliaryAddresses")))
    return tuple(pools), str(ipam.get("Driver") or "default"), params.string_map(ipam.get("Options"), "IPAM.Options")


async def create_network(request: web.Request) -> web.Response:
    service = _service(request)
    body = await params.json_object(request)
    name = body.get("Name")
    if not isinstance(name, str):
        raise errors.InvalidArgument("network name must be a string")
    if body.get("ConfigOnly") or body.get("ConfigFrom") and (body["ConfigFrom"] or {}).get("Network"):
        raise errors.InvalidArgument("config-only networks are not supported")
    if body.get("Ingress") and body.get("Driver") != OVERLAY:
        raise errors.InvalidArgument("ingress networks are a Swarm feature and are not supported")
    pools, ipam_driver, ipam_options = _pools(body.get("IPAM"))
    if body.get("Driver") == OVERLAY:
        return await _create_overlay(request, service, name, body, pools)
    if body.get("Scope") not in (None, "", "local"):
        raise errors.InvalidArgument(f"network scope {body['Scope']!r} is not supported: only \"local\"")
    network = await service.create(CreateRequest(
        name=name, driver=str(body.get("Driver") or "bridge"), internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")), labels=params.string_map(body.get("Labels"), "Labels"),
        options=params.string_map(body.get("Options"), "Options"), ipam_driver=ipam_driver, ipam=pools,
        ipam_options=ipam_options, enable_ipv6=bool(body.get("EnableIPv6")),
        check_duplicate=body.get("CheckDuplicate") is not False,
    ))
    return web.json_response({"Id": network.id, "Warning": ""}, status=201)


async def _create_overlay(request: web.Request, service: NetworkBackend, name: str, body: dict[str, Any],
                          pools: tuple[IPAMPool, ...]) -> web.Response:
    """A swarm-scoped overlay network, created in the cluster store (pkg.docker.swarm.networks)."""
    swarm = backends(request).swarm
    if swarm is None or swarm.ping_state() == "inactive":
        raise errors.Unavailable(NOT_MANAGER)
    if body.get("Scope") not in (None, "", "swarm"):
        raise errors.InvalidArgument(f"network scope {body['Scope']!r} is not valid for the overlay driver")
    if body.get("EnableIPv6"):
        raise errors.InvalidArgument("IPv6 overlay networks are not supported")
    if len(pools) > 1:
        raise errors.InvalidArgument("only one IPv4 pool per overlay network is supported")
    with contextlib.suppress(errors.NotFound, errors.InvalidArgument):
        if service.get(name).name == name:
            raise errors.Conflict(f"network with name {name} already exists")
    pool = pools[0] if pools else IPAMPool("")
    if pool.subnet:
        pool = complete_pool(pool)
    network_id = await swarm.network_create(OverlayRequest(
        name=name, internal=bool(body.get("Internal")), attachable=bool(body.get("Attachable")),
        labels=params.string_map(body.get("Labels"), "Labels"), options=params.string_map(body.get("Options"),
                                                                                            "Options"),
        subnet=pool.subnet, gateway=pool.gateway, ingress=bool(body.get("Ingress"))))
    return web.json_response({"Id": network_id, "Warning": ""}, status=201)


async def remove_network(request: web.Request) -> web.Response:
    service = _service(request)
    network = service.get(request.match_info["id"])
    swarm = backends(request).swarm
    if network.driver == OVERLAY and swarm is not None:
        await swarm.network_remove(network.id)
    else:
        await service.remove(network.id)
    return web.Response(status=204)


def _sandbox_of(request: web.Request, ref: Any, connecting: bool = False) -> str:
    """The sandbox of the container the body names: it holds the network namespace from create to
    removal, so created and stopped containers are connected too, as Docker's are."""
    if not isinstance(ref, str) or not ref:
        raise errors.InvalidArgument("Container must be a container name or ID")
    engine = need(backends(request).engine, "containers")
    view = engine.get(ref)
    mode = view.host_config.network_mode
    if not connecting:
        return view.sandbox_id
    if mode == "host" or mode.startswith("container:"):
        raise errors.PermissionDenied("container sharing network namespace with another container or host cannot "
                                      "be connected to any other network")
    if mode == "none":
        raise errors.PermissionDenied("container cannot be connected to multiple networks with one of the networks "
                                      "in private (none) mode")
    return view.sandbox_id


async def connect_network(request: web.Request) -> web.Response:
    service = _service(request)
    network = service.get(request.match_info["id"])
    body = await params.json_object(request)
    refuse_unattachable(request, [network.name])
    sandbox_id = _sandbox_of(request, body.get("Container"), connecting=True)
    spec = endpoint_spec(network.name, body.get("EndpointConfig"))
    await service.connect(network.id, sandbox_id, spec.aliases, spec.ipv4_address, spec.links,
                          mac=spec.mac_address, ipv6=spec.ipv6_address)
    engine = need(backends(request).engine, "containers")
    await engine.set_endpoint(str(body["Container"]), network.name, spec)
    return web.Response(status=200)


async def disconnect_network(request: web.Request) -> web.Response:
    service = _service(request)
    network = service.get(request.match_info["id"])
    body = await params.json_object(request)
    force = bool(body.get("Force"))
    try:
        sandbox_id = _sandbox_of(request, body.get("Container"))
    except errors.NotFound:
        if force:
            return web.Response(status=200)
        raise
    await service.disconnect(network.id, sandbox_id, force=force)
    with contextlib.suppress(errors.NotFound):  # removed meanwhile: nothing to forget
        await need(backends(request).engine, "containers").set_endpoint(str(body["Container"]), network.name, None)
    return web.Response(status=200)


def _created(network: Network) -> float:
    parsed = times.parse_rfc3339(network.created)
    return parsed.timestamp() if parsed is not None else 0.0


async def prune_networks(request: web.Request) -> web.Response:
    service = _service(request)
    filters = docker_filters.query(request, PRUNE_FILTERS)
    until = docker_filters.until(filters)

    def keep(network: Network) -> bool:
        if until is not None and not _created(network) < until:
            return True
        return not docker_filters.labels_selected(filters, network.labels)

    removed = await service.prune(keep)
    return web.json_response({"NetworksDeleted": removed})


ROUTES = [
    ("GET", "/networks", list_networks),
    ("POST", "/networks/create", create_network),
    ("POST", "/networks/prune", prune_networks),
    ("GET", "/networks/{id}", inspect_network),
    ("DELETE", "/networks/{id}", remove_network),
    ("POST", "/networks/{id}/connect", connect_network),
    ("POST", "/networks/{id}/disconnect", disconnect_network),
]
