"""kubelet's containers through the Docker API (``docker-shows-pods``): the lookup the container handlers
share, and the guard on container verbs (refused with 409 "managed by kubelet", except stop/kill/rm under
``docker-may-stop-pods``, which act through the CRI runtime; pkg.docker.engine.pods_view)."""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from dockerapi.backend import backends
from dockerapi.params import query_bool
from pkg import errors
from pkg.docker.engine.pods_view import PodsView

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (method, path) of the container routes that change a container -> the verb the guard names.
MUTATIONS = {
    ("DELETE", "/containers/{id}"): "rm",
    ("POST", "/containers/{id}/stop"): "stop",
    ("POST", "/containers/{id}/kill"): "kill",
    ("POST", "/containers/{id}/start"): "start",
    ("POST", "/containers/{id}/restart"): "restart",
    ("POST", "/containers/{id}/pause"): "pause",
    ("POST", "/containers/{id}/unpause"): "unpause",
    ("POST", "/containers/{id}/rename"): "rename",
    ("POST", "/containers/{id}/update"): "update",
    ("PUT", "/containers/{id}/archive"): "copy into",
}


def view(request: web.Request) -> PodsView | None:
    return backends(request).pods


def pod_container(request: web.Request, ref: str) -> str | None:
    """The CRI container ``ref`` names when the view is on and no Docker container has that name/ID."""
    pods = view(request)
    if pods is None:
        return None
    engine = backends(request).engine
    if engine is not None:
        try:
            engine.get(ref)
            return None
        except errors.NotFound:
            pass
    return pods.find(ref)


def _timeout(request: web.Request) -> int | None:
    raw = request.query.get("t", request.query.get("timeout", ""))
    try:
        return int(raw) if raw else None
    except ValueError:
        raise errors.InvalidArgument(f"invalid value for t: {raw!r}") from None


async def _allowed(request: web.Request, pods: PodsView, container_id: str, verb: str) -> web.Response:
    pods.guard(container_id, verb)
    if verb == "stop":
        return web.Response(status=204 if await pods.stop(container_id, _timeout(request)) else 304)
    if verb == "kill":
        await pods.kill(container_id, request.query.get("signal") or None)
    else:
        await pods.remove(container_id, force=query_bool(request, "force"))
    return web.Response(status=204)


def guarded(method: str, path: str, handler: Handler) -> Handler:
    """``handler``, with kubelet's containers refused (or, when allowed, stopped/killed/removed via CRI)."""
    verb = MUTATIONS.get((method, path))
    if verb is None:
        return handler

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        pods = view(request)
        container_id = pod_container(request, request.match_info["id"]) if pods is not None else None
        if pods is None or container_id is None:
            return await handler(request)
        return await _allowed(request, pods, container_id, verb)

    return wrapper
