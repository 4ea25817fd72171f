"""/services and /tasks: create, list, inspect, update, delete, logs (moby's router/swarm)."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dockerapi import filters, hijack, times
from dockerapi.gokeys import canonical
from dockerapi.handlers.attach import containers
from dockerapi.handlers.logs import parse_tail
from dockerapi.handlers.swarm import swarm, version_param
from dockerapi.params import json_object, query_bool
from pkg import errors
from pkg.docker.views.logs import container_logs
from pkg.logs.reader import ReadOptions

SERVICE_FILTERS = ("id", "label", "mode", "name")
# "_up-to-date" is the docker CLI's own (its progress monitor): tasks running the service's current spec.
TASK_FILTERS = ("desired-state", "id", "label", "name", "node", "service", "runtime", "_up-to-date")


async def service_create(request: web.Request) -> web.Response:
    spec = canonical(await json_object(request))
    service_id, warnings = await swarm(request).service_create(spec)
    return web.json_response({"ID": service_id, "Warnings": warnings or None}, status=201)


async def service_list(request: web.Request) -> web.Response:
    wanted = filters.query(request, SERVICE_FILTERS)
    for mode in wanted.get("mode", []):
        if mode not in ("replicated", "global", "replicated-job", "global-job"):
            raise errors.InvalidArgument(f"Invalid filter: 'mode'='{mode}'")
    status = query_bool(request, "status")
    return web.json_response(await swarm(request).service_list(wanted, status))


async def service_inspect(request: web.Request) -> web.Response:
    insert = query_bool(request, "insertDefaults")
    return web.json_response(await swarm(request).service_get(request.match_info["id"], insert))


async def service_update(request: web.Request) -> web.Response:
    version = version_param(request)
    spec = canonical(await json_object(request))
    rollback = request.query.get("rollback", "")
    if rollback not in ("", "previous"):
        raise errors.InvalidArgument(f"unrecognized rollback option {rollback}")
    warnings = await swarm(request).service_update(request.match_info["id"], version, spec, rollback == "previous")
    return web.json_response({"Warnings": warnings or None})


async def service_delete(request: web.Request) -> web.Response:
    await swarm(request).service_remove(request.match_info["id"])
    return web.Response(status=200)


async def task_list(request: web.Request) -> web.Response:
    wanted = filters.query(request, TASK_FILTERS)
    for state in wanted.get("desired-state", []):
        if state not in ("running", "shutdown", "accepted"):
            raise errors.InvalidArgument(f"Invalid task desired state filter: {state}")
    return web.json_response(await swarm(request).task_list(wanted))


async def task_inspect(request: web.Request) -> web.Response:
    return web.json_response(await swarm(request).task_get(request.match_info["id"]))


async def service_logs(request: web.Request) -> web.StreamResponse:
    tasks = await swarm(request).task_list({"service": [request.match_info["id"]]})
    return await _logs(request, tasks)


async def task_logs(request: web.Request) -> web.StreamResponse:
    return await _logs(request, [await swarm(request).task_get(request.match_info["id"])])


async def _logs(request: web.Request, tasks: list[dict[str, Any]]) -> web.StreamResponse:
    """The logs of the tasks' containers on this node, read side by side (``follow`` keeps every one open),
    each line with moby's details when asked (the docker CLI always asks: it prints the task name from them)."""
    stdout, stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
    if not stdout and not stderr:
        raise errors.InvalidArgument("Bad parameters: you must choose at least one stream")
    options = ReadOptions(
        follow=query_bool(request, "follow"), tail=parse_tail(request.query.get("tail", "")),
        since_ns=times.unix_ns(request.query.get("since", ""), "since"), until_ns=None,
        streams=frozenset(name for name, on in (("stdout", stdout), ("stderr", stderr)) if on))
    details, timestamps = query_bool(request, "details"), query_bool(request, "timestamps")
    service = containers(request)
    sources = []
    for task in tasks:
        container_id = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        try:
            if container_id:
                service.get(container_id)
                sources.append((task, str(container_id)))
        except errors.NotFound:
            continue  # removed already (or on another node)
    frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)

    async def read(task: dict[str, Any], container_id: str) -> None:
        prefix = (f"com.docker.swarm.node.id={task['NodeID']},com.docker.swarm.service.id={task['ServiceID']},"
                  f"com.docker.swarm.task.id={task['ID']} ").encode() if details else b""
        try:
            async for entry in container_logs(service, container_id, options):
                data = prefix + entry.content
                if timestamps:
                    data = times.rfc3339_fixed(entry.timestamp_ns).encode() + b" " + data
                await frames.put(hijack.frame(hijack.STDERR if entry.stream == "stderr" else hijack.STDOUT, data))
        except errors.NarwhalError:
            pass  # the container went away while read
        finally:
            await frames.put(None)

    response = web.StreamResponse(status=200, headers={"Content-Type": hijack.content_type(request, False)})
    await response.prepare(request)
    readers = [asyncio.create_task(read(task, cid)) for task, cid in sources]
    try:
        open_readers = len(readers)
        while open_readers:
            frame = await frames.get()
            if frame is None:
                open_readers -= 1
            else:
                await response.write(frame)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (docker service logs -f interrupted)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return response


ROUTES = [
    ("GET", "/services", service_list),
    ("POST", "/services/create", service_create),
    ("GET", "/services/{id}", service_inspect),
    ("POST", "/services/{id}/update", service_update),
    ("DELETE", "/services/{id}", service_delete),
    ("GET", "/services/{id}/logs", service_logs),
    ("GET", "/tasks", task_list),
    ("GET", "/tasks/{id}", task_inspect),
    ("GET", "/tasks/{id}/logs", task_logs),
]
