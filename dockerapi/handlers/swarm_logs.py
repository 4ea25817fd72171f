"""``/services/{id}/logs`` and ``/tasks/{id}/logs`` (moby's ServiceLogs over swarmkit's log broker).

The logs of the tasks' containers on this node are read side by side, each line with moby's
details when asked (the docker CLI always asks: it prints the task name from them) and the
timestamp first when asked.  ``tail`` and ``since`` apply to each task's log, as the broker
applies them to each subscription.  With ``follow`` the stream never ends by itself, like moby's:
tasks of the service that start after the request began are picked up (their whole log, they are
new) until the client goes away.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dockerapi import hijack, times
from dockerapi.backends import ReadOptions
from dockerapi.handlers.attach import containers
from dockerapi.handlers.logs import parse_tail
from dockerapi.handlers.swarm import swarm
from dockerapi.params import query_bool
from pkg import errors

Obj = dict[str, Any]
RESCAN = 1.0  # seconds between looks for new tasks (and for a client gone) while following

# a task whose container has a log to read: started, or past it
_READABLE = frozenset({"running", "complete", "failed", "shutdown", "rejected", "orphaned", "remove"})


async def service_logs(request: web.Request) -> web.StreamResponse:
    api, ref = swarm(request), request.match_info["id"]
    tasks = await api.task_list({"service": [ref]})

    async def current() -> list[Obj]:
        return await api.task_list({"service": [ref]})

    return await _logs(request, tasks, current)


async def task_logs(request: web.Request) -> web.StreamResponse:
    task = await swarm(request).task_get(request.match_info["id"])
    return await _logs(request, [task], None)


def _options(request: web.Request) -> ReadOptions:
    stdout, stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
    if not stdout and not stderr:
        raise errors.InvalidArgument("Bad parameters: you must choose at least one stream")
    return ReadOptions(
        follow=query_bool(request, "follow"), tail=parse_tail(request.query.get("tail", "")),
        since_ns=times.unix_ns(request.query.get("since", ""), "since"), until_ns=None,
        streams=frozenset(name for name, on in (("stdout", stdout), ("stderr", stderr)) if on))


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _logs(request: web.Request, tasks: list[Obj],
                rescan: Callable[[], Awaitable[list[Obj]]] | None) -> web.StreamResponse:
    options = _options(request)
    details, timestamps = query_bool(request, "details"), query_bool(request, "timestamps")
    service = containers(request)
    frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)
    readers: dict[str, asyncio.Task[None]] = {}  # container ID -> its reader

    async def read(task: Obj, container_id: str, opts: ReadOptions) -> None:
        prefix = (f"com.docker.swarm.node.id={task['NodeID']},com.docker.swarm.service.id={task['ServiceID']},"
                  f"com.docker.swarm.task.id={task['ID']} ").encode() if details else b""
        try:
            async for entry in service.logs(container_id, opts):
                data = prefix + entry.content
                if timestamps:
                    data = times.rfc3339_fixed(entry.timestamp_ns).encode() + b" " + data
                await frames.put(hijack.frame(hijack.STDERR if entry.stream == "stderr" else hijack.STDOUT, data))
        except errors.NarwhalError:
            pass  # the container went away while read
        finally:
            await frames.put(None)

    def start(found: list[Obj], opts: ReadOptions, only_readable: bool) -> None:
        for task in found:
            container_id = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            if not container_id or container_id in readers:
                continue
            if only_readable and task["Status"].get("State") not in _READABLE:
                continue  # not started yet: its log begins later (picked up on a later look)
            if not service.exists(str(container_id)):
                continue  # removed already (or on another node)
            readers[str(container_id)] = asyncio.create_task(read(task, str(container_id), opts))

    follow = options.follow and rescan is not None
    start(tasks, options, only_readable=False)
    newcomers = dataclasses.replace(options, tail=None)  # a task started since: all of it
    response = web.StreamResponse(status=200, headers={"Content-Type": hijack.content_type(request, False)})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    next_look = loop.time() + RESCAN
    try:
        open_readers = len(readers)
        while open_readers or follow:
            if follow and loop.time() >= next_look:
                next_look = loop.time() + RESCAN
                if _client_gone(request):
                    break
                assert rescan is not None
                try:
                    before = len(readers)
                    start(await rescan(), newcomers, only_readable=True)
                    open_readers += len(readers) - before
                except errors.NarwhalError:
                    break  # the service is gone (or the node left the swarm): the stream ends
            try:
                wait = max(0.0, next_look - loop.time()) if follow else None
                frame = await asyncio.wait_for(frames.get(), wait)
            except TimeoutError:
                continue
            if frame is None:
                open_readers -= 1
            else:
                await response.write(frame)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (docker service logs -f interrupted)
    finally:
        for reader in readers.values():
            reader.cancel()
        await asyncio.gather(*readers.values(), return_exceptions=True)
    return response
