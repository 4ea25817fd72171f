"""/containers/{id}/start, stop, kill, restart, pause, unpause, wait."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from dockerapi.backend import backends
from dockerapi.handlers.containers import engine
from dockerapi.handlers.pods import pod_container
from pkg import errors
from pkg.docker.engine.lifecycle import WaitCondition, WaitResult

HANGUP_POLL = 1.0  # seconds between checks that the waiting client is still connected


def _timeout(request: web.Request) -> int | None:
    raw = request.query.get("t", request.query.get("timeout", ""))
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.InvalidArgument(f"invalid value for t: {raw!r}") from None


async def start(request: web.Request) -> web.Response:
    if request.query.get("checkpoint"):
        raise errors.NotImplementedYet("checkpoints are not supported")
    started = await engine(request).start(request.match_info["id"])
    return web.Response(status=204 if started else 304)


async def stop(request: web.Request) -> web.Response:
    stopped = await engine(request).stop(request.match_info["id"], request.query.get("signal") or None,
                                         _timeout(request))
    return web.Response(status=204 if stopped else 304)


async def kill(request: web.Request) -> web.Response:
    await engine(request).kill(request.match_info["id"], request.query.get("signal") or None)
    return web.Response(status=204)


async def restart(request: web.Request) -> web.Response:
    await engine(request).restart(request.match_info["id"], request.query.get("signal") or None, _timeout(request))
    return web.Response(status=204)


async def pause(request: web.Request) -> web.Response:
    await engine(request).pause(request.match_info["id"])
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.Response:
    await engine(request).unpause(request.match_info["id"])
    return web.Response(status=204)


async def wait(request: web.Request) -> web.StreamResponse:
    """Headers go out at once (the docker CLI waits for them before it starts the container); the body
    once the condition is met.  A client that hangs up stops the wait (the CLI does when it detaches)."""
    raw = request.query.get("condition", "") or "not-running"
    try:
        condition = WaitCondition(raw)
    except ValueError:
        raise errors.InvalidArgument(f"invalid condition: \"{raw}\"") from None
    eng = engine(request)
    pod_id = pod_container(request, request.match_info["id"])
    pods = backends(request).pods
    if pod_id is not None and pods is not None:  # docker-shows-pods: a kubelet container's exit
        if condition == WaitCondition.REMOVED:
            raise errors.NotImplementedYet("wait condition removed is not supported for kubelet's containers")
        waiter: Callable[[], Awaitable[WaitResult]] = functools.partial(pods.wait, pod_id, condition)
    else:
        waiter = functools.partial(eng.wait, eng.get(request.match_info["id"]).id, condition)
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    waiting = asyncio.ensure_future(waiter())
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=HANGUP_POLL)
            if not waiting.done() and (request.transport is None or request.transport.is_closing()):
                return response
    finally:
        waiting.cancel()
    if waiting.cancelled():
        body: dict[str, object] = {"StatusCode": -1, "Error": {"Message": "the daemon is shutting down"}}
    elif isinstance(waiting.exception(), errors.NarwhalError):
        body = {"StatusCode": -1, "Error": {"Message": str(waiting.exception())}}
    else:
        result = waiting.result()
        body = {"StatusCode": result.status_code, "Error": {"Message": result.error} if result.error else None}
    with contextlib.suppress(ConnectionError):
        await response.write(json.dumps(body).encode() + b"\n")
        await response.write_eof()
    return response


ROUTES = [
    ("POST", "/containers/{id}/start", start),
    ("POST", "/containers/{id}/stop", stop),
    ("POST", "/containers/{id}/kill", kill),
    ("POST", "/containers/{id}/restart", restart),
    ("POST", "/containers/{id}/pause", pause),
    ("POST", "/containers/{id}/unpause", unpause),
    ("POST", "/containers/{id}/wait", wait),
]
