"""The value of each config key, checked and converted: what ``pkg.config.CONVERTERS`` maps keys to.

Each converter takes the key (for the error) and the raw value (from YAML or a flag's string) and returns the
typed value, or raises InvalidArgument naming the key."""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pkg.errors import InvalidArgument

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def parse_address(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"{key}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise InvalidArgument(f"{key}: {host!r} is not an IP address") from None
    return host, int(port)


def whole_number(low: int, high: int, what: str = "") -> Callable[[str, Any], int]:
    """A converter for a whole number from ``low`` to ``high`` (``what``: the unit, named in the error)."""

    def convert(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() \
                or not low <= int(value) <= high:
            raise InvalidArgument(f"{key}: expected a whole number from {low} to {high}{what}, got {value!r}")
        return int(value)

    return convert


def abs_path(key: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise InvalidArgument(f"{key}: expected a path, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise InvalidArgument(f"{key}: path must be absolute, got {value!r}")
    return path


def path_list(key: str, value: Any) -> list[Path]:
    if isinstance(value, str):
        value = [v for v in value.split(":") if v]
    if not isinstance(value, list) or not value:
        raise InvalidArgument(f"{key}: expected a list of paths, got {value!r}")
    return [abs_path(key, v) for v in value]


def address(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{key}: expected HOST:PORT, got {value!r}")
    parse_address(value, key)
    return value


def log_level(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise InvalidArgument(f"{key}: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def log_format(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_FORMATS:
        raise InvalidArgument(f"{key}: expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value.lower()


def identifier(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "-_." for c in value):
        raise InvalidArgument(f"{key}: expected a name of letters, digits, '-', '_' or '.', got {value!r}")
    return value


def boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise InvalidArgument(f"{key}: expected true or false, got {value!r}")


def subnets(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key}: expected a CIDR or a list of CIDRs (one per IP family), got {value!r}")
    nets = []
    for v in value:
        try:
            nets.append(ipaddress.ip_network(v, strict=True))
        except ValueError as exc:
            raise InvalidArgument(f"{key}: {exc}") from None
    if len({n.version for n in nets}) != len(nets):
        raise InvalidArgument(f"{key}: at most one subnet per IP family, got {value!r}")
    return [str(n) for n in nets]


def ifname(key: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 15 or not all(c.isalnum() or c in "-_." for c in value):
        raise InvalidArgument(f"{key}: expected an interface name of at most 15 letters, digits, '-', '_' or '.'")
    return value


def seconds(key: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{key}: expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not 0 < seconds <= 3600:
        raise InvalidArgument(f"{key}: expected seconds in (0, 3600], got {value!r}")
    return seconds


def runtime_handlers(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise InvalidArgument(f"{key}: expected a mapping of handler name to a runc-compatible binary")
    handlers = {}
    for name, binary in value.items():
        identifier(f"{key} name", name)
        if not isinstance(binary, str) or not binary:
            raise InvalidArgument(f"{key}.{name}: expected a binary name or path, got {binary!r}")
        if "/" in binary and not binary.startswith("/"):
            raise InvalidArgument(f"{key}.{name}: path must be absolute, got {binary!r}")
        handlers[name] = binary
    handlers.setdefault("runc", "runc")
    return handlers


def endpoints(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key}: expected a list of etcd endpoints (host:port, http:// or https://host:port)")
    out = []
    for v in value:
        parse_address(v.removeprefix("http://").removeprefix("https://").rstrip("/"), key)
        out.append(v)
    return out


def api_version(key: str, value: Any) -> str:
    text = str(value)
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or (int(parts[0]), int(parts[1])) < (1, 24):
        raise InvalidArgument(f"{key}: expected a Docker API version like 1.40 (at least 1.24), got {value!r}")
    return text
