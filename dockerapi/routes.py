"""The single route table: (method, path, handler).  Each path is served both bare
and under ``/v{version}``; the version middleware checks the version."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from dockerapi.handlers import system

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]

ROUTES: list[Route] = [
    ("GET", "/_ping", system.ping),
    ("HEAD", "/_ping", system.ping),
    ("GET", "/version", system.version),
]


def register(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, r"/v{version:[0-9][0-9.]*}" + path, handler)
