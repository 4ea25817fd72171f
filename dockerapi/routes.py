"""The route table: each handler module lists its own ``ROUTES``; this module joins them.

Each path is served both bare and under ``/v{version}``; the version
middleware checks the version.  Add a resource by adding its module here.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

import dockerapi.handlers.containers as container_routes
import dockerapi.handlers.containers_lifecycle as container_lifecycle_routes
from dockerapi.handlers import archive as archive_routes
from dockerapi.handlers import (
    attach,
    attach_ws,
    auth,
    events,
    images,
    images_archive,
    images_registry,
    logs,
    pods,
    stats,
    system,
    top,
)
from dockerapi.handlers import build as build_routes
from dockerapi.handlers import exec as exec_
from dockerapi.handlers import images_commit as commit_routes
from dockerapi.handlers import networks as network_routes
from dockerapi.handlers import swarm as swarm_routes
from dockerapi.handlers import swarm_nodes as swarm_node_routes
from dockerapi.handlers import swarm_objects as swarm_object_routes
from dockerapi.handlers import swarm_services as swarm_service_routes
from dockerapi.handlers import volumes as volume_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]

MODULES = [system, events]
MODULES += [container_routes, container_lifecycle_routes]
MODULES += [images, images_registry, images_archive, commit_routes, auth]
MODULES += [attach, attach_ws, exec_, logs, stats, top]
MODULES += [volume_routes]
MODULES += [network_routes]
MODULES += [archive_routes]
MODULES += [build_routes, swarm_routes, swarm_node_routes, swarm_service_routes, swarm_object_routes]


def all_routes() -> list[Route]:
    routes: list[Route] = []
    for module in MODULES:
        routes += [(m, p, pods.guarded(m, p, h)) for m, p, h in module.ROUTES]
    return routes


def register(app: web.Application) -> None:
    for method, path, handler in all_routes():
        app.router.add_route(method, path, handler)
        app.router.add_route(method, r"/v{version:[0-9][0-9.]*}" + path, handler)
