"""GET /containers/{id}/top: ``ps`` on the host, filtered to the container's processes (as moby)."""
from __future__ import annotations

from aiohttp import web

from dockerapi.handlers.attach import container_ref, containers
from pkg.docker.views.stats import top as container_top


async def top(request: web.Request) -> web.Response:
    container_id = await container_ref(request, request.match_info["id"])
    result = await container_top(containers(request), container_id, request.query.get("ps_args", ""))
    return web.json_response({"Titles": result.titles, "Processes": result.processes})


ROUTES = [
    ("GET", "/containers/{id}/top", top),
]
