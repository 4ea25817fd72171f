"""Docker Engine API versions served, and (later) every per-version quirk in one place."""
from __future__ import annotations

MIN_API_VERSION = "1.24"
# docker CLI 28.x negotiates down to what /_ping advertises; docker-py 7 sends
# 1.44+ without negotiating, so advertise a current version.
API_VERSION = "1.50"


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
