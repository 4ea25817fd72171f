"""/secrets and /configs: create, list, inspect, update (labels only), delete."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from dockerapi import filters
from dockerapi.gokeys import canonical
from dockerapi.handlers.swarm import swarm, version_param
from dockerapi.params import json_object

OBJECT_FILTERS = ("id", "label", "name", "names")

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _handlers(kind: str) -> list[tuple[str, str, Handler]]:
    async def create(request: web.Request) -> web.Response:
        spec = canonical(await json_object(request))
        object_id = await swarm(request).object_create(kind, spec)
        return web.json_response({"ID": object_id}, status=201)

    async def list_(request: web.Request) -> web.Response:
        wanted = filters.query(request, OBJECT_FILTERS)
        return web.json_response(await swarm(request).object_list(kind, wanted))

    async def inspect(request: web.Request) -> web.Response:
        return web.json_response(await swarm(request).object_get(kind, request.match_info["id"]))

    async def update(request: web.Request) -> web.Response:
        version = version_param(request)
        spec = canonical(await json_object(request))
        await swarm(request).object_update(kind, request.match_info["id"], version, spec)
        return web.Response(status=200)

    async def delete(request: web.Request) -> web.Response:
        await swarm(request).object_remove(kind, request.match_info["id"])
        return web.Response(status=204)

    base = f"/{kind}"
    return [
        ("GET", base, list_),
        ("POST", f"{base}/create", create),
        ("GET", base + "/{id}", inspect),
        ("POST", base + "/{id}/update", update),
        ("DELETE", base + "/{id}", delete),
    ]


ROUTES = _handlers("secrets") + _handlers("configs")
