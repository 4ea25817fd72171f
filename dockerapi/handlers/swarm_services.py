"""/services and /tasks: create, list, inspect, update, delete, logs (moby's router/swarm)."""
from __future__ import annotations

from aiohttp import web

from dockerapi import filters
from dockerapi.gokeys import canonical
from dockerapi.handlers.swarm import swarm, version_param
from dockerapi.handlers.swarm_logs import service_logs, task_logs
from dockerapi.params import json_object, query_bool
from pkg import errors

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
