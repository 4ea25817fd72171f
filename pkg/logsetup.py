"""Structured logging: text or JSON lines, a request id on every line logged while serving a request.

The request id lives in a ContextVar set by the front ends' interceptor and
middleware, so every line logged by the core on behalf of a request carries
it without being passed around (tasks spawned by the request inherit it).
The level can change at runtime (``set_level``: narwhald's SIGHUP reload).
"""
from __future__ import annotations

import itertools
import json
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from pkg import errors

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

request_id: ContextVar[str] = ContextVar("narwhal_request_id", default="")

# Libraries whose debug output drowns ours: never below WARNING unless we log at debug ourselves.
_NOISY = ("aiohttp.access", "pyroute2", "asyncio")
# Attributes every LogRecord has; anything else was passed with ``extra=`` and goes into JSON lines.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}


# A random half per process and a counter: unique ids without an os.urandom call per request (issue 21,
# round three: 1% of narwhald's loop during `docker exec`, five requests each).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits, unique within the process and unlikely to repeat across restarts."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


@contextmanager
def request_scope(rid: str | None = None) -> Iterator[str]:
    """Log lines inside the block carry ``rid`` (a fresh one when None)."""
    rid = rid or new_request_id()
    token = request_id.set(rid)
    try:
        yield rid
    finally:
        try:
            request_id.reset(token)
        except ValueError:  # closed from another context (an abandoned stream finalized by the loop)
            request_id.set("")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``2026-11-28T01:02:03.456Z INFO narwhal.cri [req=ab12cd34ef56ab78]: message``."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", "")
        head = f"{_timestamp(record.created)} {record.levelname} {record.name}"
        if rid:
            head += f" [req={rid}]"
        text = f"{head}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, request_id, extra fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise errors.InvalidArgument(f"log-format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return JSONFormatter() if fmt == "json" else TextFormatter()


_handler: logging.Handler | None = None


def setup(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the root logger once: one stream handler with the request-id filter."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.addFilter(_RequestIdFilter())
    _handler.setFormatter(_formatter(fmt))
    root.addHandler(_handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the daemon's log level now (SIGHUP reload)."""
    if level not in LEVELS:
        raise errors.InvalidArgument(f"log-level: expected one of {', '.join(LEVELS)}, got {level!r}")
    value = getattr(logging, level.upper())
    logging.getLogger().setLevel(value)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, value))


def set_format(fmt: str) -> None:
    if _handler is not None:
        _handler.setFormatter(_formatter(fmt))
