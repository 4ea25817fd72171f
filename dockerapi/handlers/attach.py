"""POST /containers/{id}/attach (hijacked) and POST /containers/{id}/resize; the container lookup the
streaming handlers share."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from aiohttp import web

from dockerapi import hijack
from dockerapi.backend import backends, need
from dockerapi.backends import ContainerIOBackend, ExecStreams, ReadOptions
from dockerapi.handlers import pods
from dockerapi.params import query_bool, query_int
from pkg import errors

POD_IO = "narwhal.pod_io"  # request key: set when the request's container is kubelet's (docker-shows-pods)


def containers(request: web.Request) -> ContainerIOBackend:
    """The running side of the request's container's domain: the Docker domain's, or the CRI domain's for a
    pod's (after ``lookup``)."""
    pod_io: ContainerIOBackend | None = request.get(POD_IO)
    return pod_io if pod_io is not None else need(backends(request).io, "containers")


@dataclass(frozen=True)
class ContainerRef:
    id: str  # the Docker container ID, which is the core container's
    name: str
    paused: bool = False
    restarting: bool = False
    pod: bool = False  # kubelet's container (docker-shows-pods): served from the CRI domain


def lookup(request: web.Request, ref: str) -> ContainerRef:
    """A container by ID, unique ID prefix or name (with or without "/")."""
    pod_id = pods.pod_container(request, ref)
    if pod_id is not None:
        view = need(pods.view(request), "pods")
        request[POD_IO] = need(backends(request).pod_io, "kubelet's containers")
        shown = view.get(pod_id)
        return ContainerRef(shown.id, shown.name, pod=True)
    found = need(backends(request).engine, "the container engine").get(ref)
    state = found.record.state
    return ContainerRef(found.id, found.name, paused=state.paused, restarting=state.restarting)


async def container_ref(request: web.Request, ref: str) -> str:
    return lookup(request, ref).id


async def attach(request: web.Request) -> web.StreamResponse:
    found = lookup(request, request.match_info["id"])
    if found.paused:
        raise errors.Conflict(f"container {found.id} is paused, unpause the container before attach.")
    if found.restarting:
        raise errors.Conflict(f"container {found.id} is restarting, wait until the container is running")
    container_id = found.id
    want_stdin = query_bool(request, "stdin")
    want_stdout, want_stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
    logs, stream = query_bool(request, "logs"), query_bool(request, "stream")
    # logs + stream on a running container: one reader from the start of its log, followed, so the replay
    # and the live output cannot part (a logger that lags under load has lines older than any cut still
    # unwritten).  Otherwise the replay ends and the live output (the next run) begins at one instant.
    continuous = logs and stream and containers(request).running(container_id)
    cut = time.time_ns()
    since_ns = 0 if continuous else cut + 1 if logs else None
    stdio = containers(request).attach(container_id, since_ns)
    keys = hijack.parse_detach_keys(request.query.get("detachKeys", ""))
    if stream:
        # Subscribed before the client hears the attach is ready: the start it sends next (docker run) can
        # neither begin nor end before this attach follows it.
        stdio.prepare()

    async def session(conn: hijack.HijackedConnection) -> None:
        stdout = hijack.OutputStream(conn, hijack.STDOUT, stdio.tty) if want_stdout else None
        stderr = hijack.OutputStream(conn, hijack.STDERR, stdio.tty) if want_stderr else None
        try:
            with contextlib.suppress(ConnectionError):
                if logs and not continuous:
                    await _replay(request, container_id, stdout, stderr, stdio.tty, cut)
                containers(request).event("attach", container_id)  # moby: once the log replay is done
                if stream:
                    stdin = hijack.InputStream(conn, keys if stdio.tty else b"") if want_stdin else None
                    streams = ExecStreams(tty=stdio.tty, stdin=stdin, stdout=stdout or _Discard(),
                                          stderr=stderr or _Discard())
                    await stdio.relay_until_lost(streams, conn.lost)
                    if stdin is not None and stdin.detached:
                        containers(request).event("detach", container_id)
        finally:
            stdio.discard_prepared()

    try:
        return await hijack.serve(request, tty=stdio.tty, session=session)
    finally:
        stdio.discard_prepared()  # the hijack failed before the session took it


class _Discard:
    async def write(self, data: bytes) -> None:
        return None


async def _replay(request: web.Request, container_id: str, stdout: hijack.OutputStream | None,
                  stderr: hijack.OutputStream | None, tty: bool, until_ns: int) -> None:
    wanted = frozenset(name for name, sink in (("stdout", stdout), ("stderr", stderr)) if sink is not None)
    if not wanted:
        return
    options = ReadOptions(streams=wanted, until_ns=until_ns)
    async for entry in containers(request).logs(container_id, options):
        sink = stderr if entry.stream == "stderr" and not tty else stdout
        if sink is not None:
            await sink.write(entry.content)


async def resize(request: web.Request) -> web.Response:
    container_id = await container_ref(request, request.match_info["id"])
    height, width = query_int(request, "h"), query_int(request, "w")
    await containers(request).resize(container_id, height, width)
    return web.Response(status=200)


ROUTES = [
    ("POST", "/containers/{id}/attach", attach),
    ("POST", "/containers/{id}/resize", resize),
]
