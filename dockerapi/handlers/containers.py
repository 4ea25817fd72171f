"""/containers: create, list, inspect, rename, update, remove, prune (lifecycle verbs are in
containers_lifecycle.py, list filters in containers_filters.py)."""
from __future__ import annotations

import time

from aiohttp import web

from dockerapi import filters as docker_filters
from dockerapi import params, versions
from dockerapi.backend import backends, need
from dockerapi.backends import ContainerBackend
from dockerapi.handlers import containers_json as cj
from dockerapi.handlers import containers_ps
from dockerapi.handlers import containers_request as creq
from dockerapi.handlers.containers_filters import LIST_KEYS, PRUNE_KEYS, matcher, prune_keeper
from dockerapi.handlers.networks import refuse_unattachable
from dockerapi.handlers.pods import pod_container
from pkg import errors
from pkg.docker.engine.model import RestartPolicyName, Status


def engine(request: web.Request) -> ContainerBackend:
    return need(backends(request).engine, "the container engine")


async def create(request: web.Request) -> web.Response:
    body = await params.json_object(request)
    platform = request.query.get("platform", "")
    if platform and platform.split("/")[0] != "linux":
        raise errors.InvalidArgument(f"unsupported platform {platform!r}: this daemon runs linux containers")
    spec = creq.container_spec(body)
    host = creq.host_config(body.get("HostConfig") or {})
    refuse_unattachable(request, [host.network_mode, *(e.network for e in spec.endpoints)])
    container_id = await engine(request).create(spec, host, request.query.get("name", ""))
    return web.json_response({"Id": container_id, "Warnings": []}, status=201)


async def list_containers(request: web.Request) -> web.Response:
    eng = engine(request)
    filters = docker_filters.query(request, LIST_KEYS)
    limit = params.query_int(request, "limit")
    show_all = params.query_bool(request, "all") or limit > 0
    views = eng.list()
    pods = backends(request).pods
    if pods is not None:  # docker-shows-pods: kubelet's containers too, newest first with the rest
        views = sorted(views + pods.list(), key=lambda c: c.created, reverse=True)
    keep = matcher(filters, eng)
    shown = (Status.RUNNING, Status.PAUSED, Status.RESTARTING)
    selected = [v for v in views if (show_all or v.status in shown) and keep(v)]
    if limit > 0:
        selected = selected[:limit]
    if not params.query_bool(request, "size"):
        return web.Response(body=containers_ps.list_body(selected, time.time()), content_type="application/json",
                            charset="utf-8")
    out = [cj.summary_json(v) for v in selected]
    for item, v in zip(out, selected, strict=True):
        item["SizeRw"], item["SizeRootFs"] = await eng.sizes(v)
    return web.json_response(out)


async def inspect(request: web.Request) -> web.Response:
    eng = engine(request)
    pod_id = pod_container(request, request.match_info["id"])
    pods = backends(request).pods
    if pod_id is not None and pods is not None:
        view = pods.get(pod_id)
        sandbox_dir, netns = pods.sandbox_paths(view)
    else:
        view = await eng.inspect(request.match_info["id"])
        sandbox_dir, netns = eng.sandbox_paths(view)
    body = cj.inspect_json(view, sandbox_dir, netns, _network_ids(request, [n.name for n in view.networks]),
                           dns_names=versions.at_least(request, "1.44"))
    if params.query_bool(request, "size"):
        body["SizeRw"], body["SizeRootFs"] = await eng.sizes(view)
    return web.json_response(body)


def _network_ids(request: web.Request, names: list[str]) -> dict[str, str]:
    """Docker network IDs of these networks (when the network service knows them)."""
    service = backends(request).networks
    ids: dict[str, str] = {}
    for name in names:
        try:
            ids[name] = service.get(name).id if service is not None else ""
        except errors.NotFound:
            ids[name] = ""
    return ids


async def remove(request: web.Request) -> web.Response:
    if params.query_bool(request, "link"):
        await engine(request).remove_link(request.match_info["id"])
        return web.Response(status=204)
    await engine(request).remove(request.match_info["id"], force=params.query_bool(request, "force"),
                                 volumes=params.query_bool(request, "v"))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    filters = docker_filters.query(request, PRUNE_KEYS)
    sizes = await _stopped_layer_sizes(request)
    removed = await engine(request).prune(prune_keeper(filters))
    # moby reclaims each pruned container's writable layer (daemon/prune.go).
    return web.json_response({"ContainersDeleted": removed or None,
                              "SpaceReclaimed": sum(sizes.get(cid, 0) for cid in removed)})


async def _stopped_layer_sizes(request: web.Request) -> dict[str, int]:
    """Writable-layer bytes of every container that is not running (what a prune may remove)."""
    core = backends(request).io
    if core is None:
        return {}
    return await core.layer_sizes(core.stopped())


async def rename(request: web.Request) -> web.Response:
    await engine(request).rename(request.match_info["id"], request.query.get("name", ""))
    return web.Response(status=204)


async def update(request: web.Request) -> web.Response:
    body = await params.json_object(request)
    policy = creq.restart_policy(body["RestartPolicy"]) if body.get("RestartPolicy") else None
    if policy is not None and policy.name == RestartPolicyName.NO and not body["RestartPolicy"].get("Name"):
        policy = None
    warnings = await engine(request).update(request.match_info["id"], creq.resources(body), policy)
    return web.json_response({"Warnings": warnings})


ROUTES = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_containers),
    ("POST", "/containers/prune", prune),
    ("GET", "/containers/{id}/json", inspect),
    ("DELETE", "/containers/{id}", remove),
    ("DELETE", "/containers/{id:[^/]+/[^/]+}", remove),  # a link name, "<linking>/<alias>" (?link=1)
    ("POST", "/containers/{id}/rename", rename),
    ("POST", "/containers/{id}/update", update),
]
