"""/nodes: list, inspect, update, delete (moby's api/server/router/swarm, nodes)."""
from __future__ import annotations

from aiohttp import web

from dockerapi import filters
from dockerapi.gokeys import canonical
from dockerapi.handlers.swarm import swarm, version_param
from dockerapi.params import json_object, query_bool

NODE_FILTERS = ("id", "label", "membership", "name", "node.label", "role")


async def node_list(request: web.Request) -> web.Response:
    wanted = filters.query(request, NODE_FILTERS)
    return web.json_response(await swarm(request).node_list(wanted))


async def node_inspect(request: web.Request) -> web.Response:
    return web.json_response(await swarm(request).node_get(request.match_info["id"]))


async def node_update(request: web.Request) -> web.Response:
    version = version_param(request)
    spec = canonical(await json_object(request))
    await swarm(request).node_update(request.match_info["id"], version, spec)
    return web.Response(status=200)


async def node_delete(request: web.Request) -> web.Response:
    await swarm(request).node_remove(request.match_info["id"], query_bool(request, "force"))
    return web.Response(status=200)


ROUTES = [
    ("GET", "/nodes", node_list),
    ("GET", "/nodes/{id}", node_inspect),
    ("POST", "/nodes/{id}/update", node_update),
    ("DELETE", "/nodes/{id}", node_delete),
]
