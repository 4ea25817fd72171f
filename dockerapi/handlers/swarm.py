"""/swarm: inspect, init, join, leave, update, unlockkey, unlock (moby's api/server/router/swarm)."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from dockerapi.backend import backends
from dockerapi.gokeys import canonical
from dockerapi.params import json_object, mapping, query_bool, string_list
from dockerapi.swarm_backend import SwarmBackend
from pkg import errors
from pkg.docker.swarm.cluster import ALREADY_IN_SWARM, NOT_MANAGER, InitRequest
from pkg.docker.swarm.roles import JoinRequest


def swarm(request: web.Request) -> SwarmBackend:
    backend = backends(request).swarm
    if backend is None:
        raise errors.Unavailable(NOT_MANAGER)
    return backend


def version_param(request: web.Request) -> int:
    """The ``version`` an update is based on (required, as moby's parse of it)."""
    raw = request.query.get("version", "")
    try:
        return int(raw)
    except ValueError:
        raise errors.InvalidArgument(f"invalid swarm version '{raw}': strconv.ParseUint: parsing "
                                     f"\"{raw}\": invalid syntax") from None


async def inspect(request: web.Request) -> web.Response:
    return web.json_response(await swarm(request).inspect())


async def init(request: web.Request) -> web.Response:
    body = canonical(await json_object(request))
    spec = mapping(body.get("Spec"), "Spec")
    req = InitRequest(
        listen_addr=str(body.get("ListenAddr") or "0.0.0.0:2377"),
        advertise_addr=str(body.get("AdvertiseAddr") or ""),
        data_path_port=_int(body.get("DataPathPort"), "DataPathPort"),
        default_addr_pool=string_list(body.get("DefaultAddrPool"), "DefaultAddrPool"),
        subnet_size=_int(body.get("SubnetSize"), "SubnetSize"),
        force_new_cluster=bool(body.get("ForceNewCluster")),
        availability=str(body.get("Availability") or "active"),
        autolock=bool(body.get("AutoLockManagers")),
        spec=spec,
    )
    if req.availability not in ("active", "pause", "drain"):
        raise errors.InvalidArgument(f"invalid Availability: {req.availability!r}")
    node_id = await swarm(request).init(req)
    return web.json_response(node_id)


async def join(request: web.Request) -> web.Response:
    backend = swarm(request)
    if backend.ping_state() != "inactive":
        raise errors.Unavailable(ALREADY_IN_SWARM)
    body = canonical(await json_object(request))
    req = JoinRequest(
        remote_addrs=list(string_list(body.get("RemoteAddrs"), "RemoteAddrs")),
        join_token=str(body.get("JoinToken") or ""),
        listen_addr=str(body.get("ListenAddr") or "0.0.0.0:2377"),
        advertise_addr=str(body.get("AdvertiseAddr") or ""),
        data_path_addr=str(body.get("DataPathAddr") or ""),
        availability=str(body.get("Availability") or "active"),
    )
    if req.availability not in ("active", "pause", "drain"):
        raise errors.InvalidArgument(f"invalid Availability: {req.availability!r}")
    await backend.join(req)
    return web.Response(status=200)


async def leave(request: web.Request) -> web.Response:
    await swarm(request).leave(query_bool(request, "force"))
    return web.Response(status=200)


async def update(request: web.Request) -> web.Response:
    version = version_param(request)
    spec = canonical(await json_object(request))
    await swarm(request).update(
        version, spec, rotate_worker=query_bool(request, "rotateWorkerToken"),
        rotate_manager=query_bool(request, "rotateManagerToken"),
        rotate_unlock=query_bool(request, "rotateManagerUnlockKey"))
    return web.Response(status=200)


async def unlock_key(request: web.Request) -> web.Response:
    return web.json_response({"UnlockKey": await swarm(request).unlock_key()})


async def unlock(request: web.Request) -> web.Response:
    await swarm(request).inspect()  # a node in no swarm answers 503 as moby
    raise errors.InvalidArgument("swarm is not locked")


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidArgument(f"{what} must be a non-negative integer")
    return value


ROUTES = [
    ("GET", "/swarm", inspect),
    ("POST", "/swarm/init", init),
    ("POST", "/swarm/join", join),
    ("POST", "/swarm/leave", leave),
    ("POST", "/swarm/update", update),
    ("GET", "/swarm/unlockkey", unlock_key),
    ("POST", "/swarm/unlock", unlock),
]
