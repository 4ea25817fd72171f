"""/_ping and /version."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from dockerapi import versions
from dockerapi.backend import backends
from pkg.version import narwhal_version

_PING_HEADERS = {
    "Builder-Version": "1",
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


async def ping(request: web.Request) -> web.Response:
    body = None if request.method == "HEAD" else "OK"
    headers = {**_PING_HEADERS, "Api-Version": versions.API_VERSION, "Swarm": "inactive"}
    return web.Response(text=body, content_type="text/plain", headers=headers)


async def version(request: web.Request) -> web.Response:
    info = await backends(request).system.version()
    components: list[dict[str, Any]] = []
    for comp in info.components:
        details = dict(comp.details)
        if comp.name == "Engine":
            details.update(
                ApiVersion=versions.API_VERSION, MinAPIVersion=versions.MIN_API_VERSION,
                GitCommit="", GoVersion=info.python, KernelVersion=info.kernel,
                Experimental="false", BuildTime="",
            )
        components.append({"Name": comp.name, "Version": comp.version, "Details": details})
    return web.json_response(
        {
            "Platform": {"Name": f"Narwhal Engine {narwhal_version()}"},
            "Components": components,
            "Version": info.version,
            "ApiVersion": versions.API_VERSION,
            "MinAPIVersion": versions.MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": info.python,
            "Os": info.os,
            "Arch": info.arch,
            "KernelVersion": info.kernel,
            "BuildTime": "",
        }
    )


ROUTES = [
    ("GET", "/_ping", ping),
    ("HEAD", "/_ping", ping),
    ("GET", "/version", version),
]
