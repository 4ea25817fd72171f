"""Cross-cutting concerns of the Docker API: version checks, error -> JSON, headers, metrics."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from dockerapi import versions
from dockerapi.errors import status_for
from pkg import errors
from pkg.metrics import Metrics
from pkg.version import narwhal_version

log = logging.getLogger("narwhal.dockerapi")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MIN_VERSION_KEY = "min_api_version"


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def make_middlewares(metrics: Metrics) -> list[object]:
    @web.middleware
    async def errors_and_versions(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
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
        metrics.docker_requests.labels(route=route, status=str(response.status)).inc()
        return response

    return [errors_and_versions]


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
    request["api_version"] = version or versions.API_VERSION
    return await handler(request)
