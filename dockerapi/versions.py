"""Docker Engine API versions served, and every per-version quirk in one place.

Handlers ask ``at_least(request, "1.44")`` rather than comparing strings, so
shape changes between versions are easy to find (grep for ``at_least``).
"""
from __future__ import annotations

from aiohttp import web

# Moby v29.2.1's API.  The docker CLI negotiates down to what /_ping advertises;
# docker-py 7 sends its own default (1.44+) without negotiating.
API_VERSION = "1.53"
DEFAULT_MIN_API_VERSION = "1.40"
MIN_API_VERSION = DEFAULT_MIN_API_VERSION  # overridden at start-up by --docker-min-api-version

REQUEST_KEY = web.RequestKey("api_version", str)


def configure(min_version: str) -> None:
    global MIN_API_VERSION
    MIN_API_VERSION = min_version


def parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def supported(version: str) -> bool:
    parsed = parse_or_none(version)
    return parsed is not None and parse(MIN_API_VERSION) <= parsed <= parse(API_VERSION)


def parse_or_none(version: str) -> tuple[int, ...] | None:
    try:
        return parse(version)
    except ValueError:
        return None


def of(request: web.Request) -> str:
    """The API version of this request (the path's /v1.xx, else the newest)."""
    return str(request.get(REQUEST_KEY, API_VERSION))


def at_least(request: web.Request, version: str) -> bool:
    return parse(of(request)) >= parse(version)
