"""Cross-cutting concerns of the Docker API: version checks, error -> JSON, headers, request ids, metrics.

Each request runs in a request scope (``pkg.logsetup``): every line logged
for it carries its id, which is also returned in the ``X-Request-Id`` header.
Metrics are labelled with the route *template* (``/containers/{id}/json``),
the same with or without the ``/v1.xx`` prefix, so IDs never become labels.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from dockerapi import versions
from dockerapi.errors import status_for
from pkg import errors
from pkg.logsetup import request_scope
from pkg.metrics import Metrics
from pkg.version import narwhal_version

log = logging.getLogger("narwhal.dockerapi")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str) -> web.Response:
    # Exactly "application/json" (no charset): the docker CLI only decodes {"message"} for that
    # Content-Type, and otherwise prints the raw body.
    body = json.dumps({"message": message}).encode()
    return web.Response(body=body, status=status, content_type="application/json")


def make_middlewares(metrics: Metrics) -> list[object]:
    @web.middleware
    async def errors_and_versions(request: web.Request, handler: Handler) -> web.StreamResponse:
        with request_scope() as rid:
            start = time.monotonic()
            response = await _handle(request, handler, rid)
            route = route_template(request)
            elapsed = time.monotonic() - start
            status = str(response.status)
            metrics.docker_requests.labels(route=route, method=request.method, status=status).inc()
            metrics.docker_latency.labels(route=route, method=request.method, status=status).observe(elapsed)
            if route not in _QUIET:
                log.debug("%s %s -> %d in %.1f ms", request.method, request.path, response.status, elapsed * 1000)
            return response

    return [errors_and_versions]


# Polled by clients and monitors: not worth a debug line each.
_QUIET = frozenset({"/_ping", "/version"})


def route_template(request: web.Request) -> str:
    """``/v1.44/containers/abc/json`` -> ``/containers/{id}/json``; unmatched paths -> ``unmatched``."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    template = resource.canonical
    if template.startswith("/v{version"):
        template = template[template.index("}") + 1:] or "/"
    return "unmatched" if template.startswith("/{tail") else template


async def _handle(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
    """The handler's response, or the error turned into Docker's JSON; common headers set."""
    try:
        response = await _dispatch(request, handler)
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = error_response(exc.status, exc.reason if exc.text is None else _text(exc))
        else:
            raise
    except errors.NarwhalError as exc:
        response = error_response(status_for(exc), exc.message)
    except Exception as exc:  # noqa: BLE001 - a bug: log loudly, answer 500 JSON
        log.exception("%s %s failed", request.method, request.path)
        response = error_response(500, f"internal error: {exc!r}")
    response.headers["Server"] = f"Narwhal/{narwhal_version()} (linux)"
    response.headers.setdefault("Api-Version", versions.API_VERSION)
    response.headers.setdefault("Docker-Experimental", "false")
    response.headers.setdefault("Ostype", "linux")
    response.headers.setdefault("X-Request-Id", rid)
    return response


def _text(exc: web.HTTPException) -> str:
    text = exc.text or exc.reason
    return text.removeprefix(f"{exc.status}: ")


async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("version")
    if version is not None:
        if not versions.supported(version):
            if versions.parse_or_none(version) is not None and versions.parse(version) > versions.parse(
                versions.API_VERSION
            ):
                raise errors.InvalidArgument(
                    f"client version {version} is too new. Maximum supported API version is "
                    f"{versions.API_VERSION}"
                )
            raise errors.InvalidArgument(
                f"client version {version} is too old. Minimum supported API version is "
                f"{versions.MIN_API_VERSION}, please upgrade your client to a newer version"
            )
    request[versions.REQUEST_KEY] = version or versions.API_VERSION
    return await handler(request)
