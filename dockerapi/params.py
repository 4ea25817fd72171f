"""What a Docker API request carries: query parameters, the JSON body and the typed pieces inside it.

Every handler reads its parameters through these, so bad input gets the same 400 with the same words
whatever the endpoint, a flag means what moby's BoolValue makes of it, and a missing, blank or ``null``
body means "no options" everywhere.  (``filters`` has its own module, filters.py.)
"""
from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from pkg import errors

_FALSE = {"", "0", "no", "false", "none"}
# Go decodes Docker's numbers into int64/uint64/float64: anything outside is a 400 there, never a 500 here.
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"number {text} overflows")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"number {text} overflows")
    return value


def loads(raw: bytes | str) -> Any:
    """JSON as Go's encoding/json reads it: no NaN/Infinity, no number beyond 64 bits (ValueError)."""
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """moby's httputils.BoolValue: anything but "", "0", "no", "false" and "none" is true; absent is ``default``."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in _FALSE


def query_int(request: web.Request, name: str) -> int:
    """An integer parameter; absent or empty is 0."""
    value = query_opt_int(request, name)
    return 0 if value is None else value


def query_opt_int(request: web.Request, name: str, *aliases: str) -> int | None:
    """An integer parameter, or None when absent or empty; ``aliases`` are older names read when ``name`` is
    absent (stop's ``t`` and ``timeout``)."""
    key = next((k for k in (name, *aliases) if k in request.query), name)
    value = request.query.get(key, "")
    try:
        return int(value) if value else None
    except ValueError:
        raise errors.InvalidArgument(f"invalid value for {name}: {value!r}") from None


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; no body, a blank one or ``null`` is {}."""
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid JSON: {exc}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise errors.InvalidArgument("invalid JSON: the request body must be an object")
    return body


def mapping(value: Any, what: str) -> dict[str, Any]:
    """A nested object (``HostConfig``, ``IPAM``, ...); absent or null is {}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidArgument(f"{what} must be an object")
    return value


def string_map(value: Any, what: str) -> dict[str, str]:
    """``Labels``, ``Options``, ``DriverOpts``: an object of strings; absent or null is {}."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise errors.InvalidArgument(f"{what} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def string_list(value: Any, what: str) -> tuple[str, ...]:
    """``Cmd``, ``Env``, ...: a list of strings, or one string (Docker accepts both); absent or null is ()."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidArgument(f"{what} must be a list of strings")
    return tuple(value)
