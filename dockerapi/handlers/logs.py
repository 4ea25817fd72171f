"""GET /containers/{id}/logs: the container's log, multiplexed (no TTY) or raw (TTY), optionally followed."""
from __future__ import annotations

from aiohttp import web

from dockerapi import hijack, times
from dockerapi.backend import backends
from dockerapi.handlers.attach import containers, lookup
from dockerapi.params import query_bool
from pkg import errors
from pkg.docker.views.logs import container_logs
from pkg.logs.reader import ReadOptions

FLUSH_BYTES = 64 << 10


def parse_tail(value: str) -> int | None:
    value = value.strip().lower()
    if value in ("", "all"):
        return None
    try:
        tail = int(value)
    except ValueError:
        raise errors.InvalidArgument(f"invalid value for tail: {value!r}") from None
    return tail if tail >= 0 else None


async def logs(request: web.Request) -> web.StreamResponse:
    found = lookup(request, request.match_info["id"])
    container_id = found.id
    engine = backends(request).engine
    if engine is not None and not found.pod and engine.get(container_id).host_config.log_config.type == "none":
        raise errors.NotImplementedYet("configured logging driver does not support reading")  # moby's 501
    stdout, stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
    if not stdout and not stderr:
        raise errors.InvalidArgument("Bad parameters: you must choose at least one stream")
    since = times.unix_ns(request.query.get("since", ""), "since")
    until = times.unix_ns(request.query.get("until", ""), "until")
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
                data = times.rfc3339_fixed(entry.timestamp_ns).encode() + b" " + data
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
