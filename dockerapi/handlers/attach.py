"""POST /containers/{id}/attach (hijacked) and POST /containers/{id}/resize; the container lookup the
streaming handlers share."""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aiohttp import web

from dockerapi import hijack
from dockerapi.backend import backends, need
from dockerapi.handlers import pods
from dockerapi.params import query_bool, query_int
from pkg import errors
from pkg.docker.views import attach as docker_attach
from pkg.docker.views.logs import container_logs
from pkg.logs.reader import ReadOptions
from pkg.model.state import ContainerState
from pkg.runtime.containers import ContainerService
from pkg.streaming.attach import relay_attach
from pkg.streaming.backend import ExecStreams

POD_CORE = "narwhal.pod_core"  # request key: set when the request's container is kubelet's (docker-shows-pods)


def containers(request: web.Request) -> ContainerService:
    """The core service holding the request's container: the Docker domain's, or the CRI domain's for a pod's."""
    core: ContainerService | None = request.get(POD_CORE)
    return core if core is not None else need(backends(request).containers, "containers")


@dataclass(frozen=True)
class ContainerRef:
    id: str  # the Docker container ID, which is the core container's
    name: str
    paused: bool = False
    restarting: bool = False
    pod: bool = False  # kubelet's container (docker-shows-pods): served from the CRI domain


def lookup(request: web.Request, ref: str) -> ContainerRef:
    """A container by ID, unique ID prefix or name (with or without "/")."""
    engine = backends(request).engine
    pod_id = pods.pod_container(request, ref)
    if pod_id is not None:
        view = need(pods.view(request), "pods")
        request[POD_CORE] = view.containers
        shown = view.get(pod_id)
        return ContainerRef(shown.id, shown.name, pod=True)
    if engine is not None:
        found = engine.get(ref)
        state = found.record.state
        return ContainerRef(found.id, found.name, paused=state.paused, restarting=state.restarting)
    try:  # a daemon without the engine (unit tests): the core's containers
        metadata, _ = containers(request).get(ref.lstrip("/"))
    except errors.NotFound:
        raise errors.NotFound(f"No such container: {ref}") from None
    return ContainerRef(metadata.id, metadata.config.name)


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
    continuous = logs and stream and _running(request, container_id)
    cut = time.time_ns()
    since_ns = 0 if continuous else cut + 1 if logs else None
    stdio = docker_attach.DockerAttach(containers(request), container_id, since_ns=since_ns)
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
                _event(request, "attach", container_id)  # moby: once the log replay is done
                if stream:
                    stdin = hijack.InputStream(conn, keys if stdio.tty else b"") if want_stdin else None
                    streams = ExecStreams(tty=stdio.tty, stdin=stdin, stdout=stdout or _Discard(),
                                          stderr=stderr or _Discard())
                    await relay_until_lost(stdio, streams, conn.lost)
                    if stdin is not None and stdin.detached:
                        _event(request, "detach", container_id)
        finally:
            stdio.discard_prepared()

    try:
        return await hijack.serve(request, tty=stdio.tty, session=session)
    finally:
        stdio.discard_prepared()  # the hijack failed before the session took it


def _running(request: web.Request, container_id: str) -> bool:
    found = containers(request).ctx.containers.find(container_id)
    return found is not None and found[1].state == ContainerState.RUNNING


def _event(request: web.Request, action: str, container_id: str) -> None:
    found = containers(request).ctx.containers.find(container_id)
    if found is not None:
        containers(request).ctx.events.docker_container(action, found[0])


async def relay_until_lost(stdio: docker_attach.DockerAttach, streams: ExecStreams, gone: asyncio.Event) -> None:
    """Relay the container's output (and the client's input) until the run ends or the client is ``gone``
    (hijacked connection or WebSocket)."""
    session = asyncio.ensure_future(relay_attach(stdio, streams))
    lost = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait([session, lost], return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
        if not session.done():
            session.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session


class _Discard:
    async def write(self, data: bytes) -> None:
        return None


async def _replay(request: web.Request, container_id: str, stdout: hijack.OutputStream | None,
                  stderr: hijack.OutputStream | None, tty: bool, until_ns: int) -> None:
    wanted = frozenset(name for name, sink in (("stdout", stdout), ("stderr", stderr)) if sink is not None)
    if not wanted:
        return
    options = ReadOptions(streams=wanted, until_ns=until_ns)
    async for entry in container_logs(containers(request), container_id, options):
        sink = stderr if entry.stream == "stderr" and not tty else stdout
        if sink is not None:
            await sink.write(entry.content)


async def resize(request: web.Request) -> web.Response:
    container_id = await container_ref(request, request.match_info["id"])
    height, width = query_int(request, "h"), query_int(request, "w")
    await docker_attach.resize(containers(request), container_id, height, width)
    return web.Response(status=200)


ROUTES = [
    ("POST", "/containers/{id}/attach", attach),
    ("POST", "/containers/{id}/resize", resize),
]
