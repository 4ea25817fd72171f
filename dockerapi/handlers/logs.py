"""GET /containers/{id}/logs: the container's log, multiplexed (no TTY) or raw (TTY), optionally followed."""
from __future__ import annotations

import datetime
import re

from aiohttp import web

from dockerapi import hijack
from dockerapi.handlers.attach import container_ref, containers
from dockerapi.params import query_bool
from pkg import errors
from pkg.logs.reader import ReadOptions
from pkg.runtime.docker_logs import container_logs

FLUSH_BYTES = 64 << 10
_TIMESTAMP = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?$")


def parse_timestamp(value: str, name: str) -> int | None:
    """Docker's ``seconds[.nanoseconds]`` (what the CLI sends for --since/--until) → ns; "" or 0 → None."""
    value = value.strip()
    if not value:
        return None
    match = _TIMESTAMP.match(value)
    if match is None:
        raise errors.InvalidArgument(f"invalid value for {name}: {value!r}")
    seconds = int(match.group(1))
    nanos = int((match.group(2) or "").ljust(9, "0"))
    total = seconds * 1_000_000_000 + (nanos if seconds >= 0 else -nanos)
    return total if total > 0 else None


def parse_tail(value: str) -> int | None:
    value = value.strip().lower()
    if value in ("", "all"):
        return None
    try:
        tail = int(value)
    except ValueError:
        raise errors.InvalidArgument(f"invalid value for tail: {value!r}") from None
    return tail if tail >= 0 else None


def rfc3339nano(ns: int) -> str:
    """moby's RFC3339NanoFixed: always nine fractional digits, UTC ``Z``."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


async def logs(request: web.Request) -> web.StreamResponse:
    container_id = await container_ref(request, request.match_info["id"])
    stdout, stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
    if not stdout and not stderr:
        raise errors.InvalidArgument("Bad parameters: you must choose at least one stream")
    since = parse_timestamp(request.query.get("since", ""), "since")
    until = parse_timestamp(request.query.get("until", ""), "until")
    options = ReadOptions(
        follow=query_bool(request, "follow"), tail=parse_tail(request.query.get("tail", "")),
        since_ns=since, until_ns=until,
        streams=frozenset(name for name, on in (("stdout", stdout), ("stderr", stderr)) if on),
    )
    timestamps = query_bool(request, "timestamps")
    tty = containers(request).get(container_id)[0].config.tty
    entries = container_logs(containers(request), container_id, options)
    response = web.StreamResponse(status=200, headers={"Content-Type": hijack.content_type(request, tty)})
    await response.prepare(request)
    # A dump is written in large pieces (a 100k-line log is not 100k writes); followed output line by line.
    flush_at = 1 if options.follow else FLUSH_BYTES
    pending = bytearray()
    try:
        async for entry in entries:
            data = entry.content
            if timestamps:
                data = rfc3339nano(entry.timestamp_ns).encode() + b" " + data
            stream = hijack.STDERR if entry.stream == "stderr" else hijack.STDOUT
            pending += data if tty else hijack.frame(stream, data)
            if len(pending) >= flush_at:
                await response.write(bytes(pending))
                pending.clear()
        if pending:
            await response.write(bytes(pending))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (docker logs -f interrupted)
    return response


ROUTES = [
    ("GET", "/containers/{id}/logs", logs),
]
